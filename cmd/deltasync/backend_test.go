package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/admin"
	"github.com/deltasync/deltasync/client"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/wire"
)

// The acceptance of issue 11 (the app's backend, live in both directions),
// against real `deltasync serve` processes on one directory store.

func replicaToken(t *testing.T, c server.Claims) string {
	t.Helper()
	tok, err := server.MintToken([]byte(replicaSecret), c, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dirBytes sums the sizes of the files under dir whose size or time
// differs from before (nil: all), outside fsstore's temp directory: the
// bytes a process wrote into a directory store.
func dirBytes(t *testing.T, dir string, before map[string]fs.FileInfo) (int64, map[string]fs.FileInfo) {
	t.Helper()
	now := map[string]fs.FileInfo{}
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.Contains(p, string(filepath.Separator)+".tmp") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		now[p] = fi
		if b, ok := before[p]; !ok || b.Size() != fi.Size() || !b.ModTime().Equal(fi.ModTime()) {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, now
}

// buildMembers builds version 1 of each member's data set directly in the
// store (faster than uploading 200 through the server).
func buildMembers(t *testing.T, dir, org string, users []string) {
	t.Helper()
	ctx := context.Background()
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := snapshot.LoadOrCreateSecret(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	g := new(errgroup.Group)
	g.SetLimit(4)
	for i, u := range users {
		g.Go(func() error {
			o := snapshot.DefaultBuildOptions()
			o.Org, o.User, o.Secret = org, u, secret
			recs := gen.Dataset(gen.Options{Size: 48 << 10, Seed: int64(i)})
			_, _, err := diff.BuildVersion(ctx, s, o, gen.NewSource(recs))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestFanoutToTwoHundredMembers: a fan-out admin patch adding one message
// to 200 users' data sets writes O(change) per user (store bytes within
// twice a one-record device patch), and every member's device receives it
// as a delta of about the size of the message.
func TestFanoutToTwoHundredMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("200 data sets and a server process")
	}
	dir := t.TempDir()
	const members = 200
	users := make([]string, members+1)
	for i := range users {
		users[i] = fmt.Sprintf("m%03d", i)
	}
	device, users := users[members], users[:members]
	buildMembers(t, dir, "acme", append(users, device))
	url := startServe(t, "file://"+dir)
	adm := &admin.Client{URL: url, Token: replicaToken(t, server.Claims{Admin: true, Org: "acme"})}
	ctx := context.Background()
	on := true
	if _, err := adm.SetOrg(ctx, "acme", &admin.SettingsUpdate{OfflineMode: &on}); err != nil {
		t.Fatal(err)
	}
	msg := `{"author":"ops","channel":"general","text":"The quarterly review moves to Thursday 10:00, room 4. Bring the figures."}`
	key := "channels/general/messages/000123"

	_, before := dirBytes(t, dir, nil)
	code, body := call(t, "POST", url+"/v1/patches", replicaToken(t, server.Claims{Org: "acme", User: device}),
		[]byte(`{"id":"one","base":1,"ops":[{"op":"put","key":"`+key+`","value":`+msg+`}]}`))
	if code != 200 {
		t.Fatalf("device patch: %d %s", code, body)
	}
	devBytes, before := dirBytes(t, dir, before)
	polls := holdMemberPolls(t, url, users)

	var results int
	err := adm.Fanout(ctx, "acme", &wire.FanoutRequest{ID: "msg-123", Users: users,
		Ops: []diff.Op{{Op: diff.OpPut, Key: key, Value: json.RawMessage(msg)}}}, func(r wire.FanoutResult) error {
		if r.Error != nil || r.PatchResponse == nil || !r.Created || r.Version != 2 {
			t.Errorf("%s: %+v %+v", r.User, r.PatchResponse, r.Error)
		}
		results++
		return nil
	})
	if err != nil || results != members {
		t.Fatalf("fan-out: %d results, %v", results, err)
	}
	fanBytes, _ := dirBytes(t, dir, before)
	perUser := float64(fanBytes) / members
	t.Logf("store bytes written: device patch %d, fan-out %d for %d users = %.0f per user (message %d bytes)",
		devBytes, fanBytes, members, perUser, len(msg))
	if perUser > 2*float64(devBytes) {
		t.Errorf("fan-out wrote %.0f bytes per user, over twice a one-record device patch (%d)", perUser, devBytes)
	}
	checkPollsWoken(t, polls, len(msg))
	checkMembersReceive(t, url, users, key, len(msg))
}

// holdMemberPolls starts a long poll from version 1 for each member, as
// their idle devices hold, and waits until all of them wait in the
// server's hub. Each poll's answer arrives on its channel (status, the
// version it names, the body's length).
func holdMemberPolls(t *testing.T, url string, users []string) map[string]chan [3]int {
	t.Helper()
	polls := map[string]chan [3]int{}
	for _, u := range users {
		ch := make(chan [3]int, 1)
		polls[u] = ch
		req, _ := http.NewRequest("GET", url+"/v1/sync?from=1&wait=60s", nil)
		req.Header.Set("Authorization", "Bearer "+replicaToken(t, server.Claims{Org: "acme", User: u}))
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				ch <- [3]int{-1, 0, 0}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var v int
			fmt.Sscan(resp.Header.Get("X-Deltasync-Version"), &v)
			ch <- [3]int{resp.StatusCode, v, len(b)}
		}()
	}
	waitFor(t, "every member's poll waits", func() bool { return metric(t, url, "deltasync_hub_waiters") == float64(len(users)) })
	return polls
}

// checkPollsWoken: the fan-out woke every member's held poll with version
// 2, as a delta about the message's size.
func checkPollsWoken(t *testing.T, polls map[string]chan [3]int, msgLen int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	var largest int
	for u, ch := range polls {
		select {
		case r := <-ch:
			if r[0] != 200 || r[1] != 2 {
				t.Errorf("%s's held poll answered %d version %d, want 200 version 2", u, r[0], r[1])
			}
			largest = max(largest, r[2])
		case <-deadline:
			t.Fatalf("%s's held poll was not woken by the fan-out", u)
		}
	}
	t.Logf("the fan-out woke all %d held polls; largest delta %d bytes (message %d bytes)", len(polls), largest, msgLen)
	if largest > msgLen+1024 {
		t.Errorf("a held poll's delta is %d bytes for a %d-byte message", largest, msgLen)
	}
}

// checkMembersReceive: every member's device gets the new version as a
// delta about the message's size (raw syncs from version 1), and real
// clients of a few members hold the message after a pull.
func checkMembersReceive(t *testing.T, url string, users []string, key string, msgLen int) {
	t.Helper()
	var largest int
	for _, u := range users {
		req, _ := http.NewRequest("GET", url+"/v1/sync?from=1", nil)
		req.Header.Set("Authorization", "Bearer "+replicaToken(t, server.Claims{Org: "acme", User: u}))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Deltasync-Version") != "2" {
			t.Fatalf("%s: sync %d %s", u, resp.StatusCode, b)
		}
		largest = max(largest, len(b))
	}
	t.Logf("largest delta of the %d members: %d bytes (message %d bytes)", len(users), largest, msgLen)
	if largest > msgLen+1024 {
		t.Errorf("a member's delta is %d bytes for a %d-byte message", largest, msgLen)
	}
	for _, u := range users[:3] {
		opts := client.DefaultOptions()
		opts.ServerURL, opts.Token = url, replicaToken(t, server.Claims{Org: "acme", User: u})
		c, err := client.Open(filepath.Join(t.TempDir(), u), opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Pull(context.Background()); err != nil {
			t.Fatal(err)
		}
		v, err := c.Get(key)
		if err != nil || !strings.Contains(string(v), "Thursday") {
			t.Errorf("%s: the message is not on the device: %s %v", u, v, err)
		}
		c.Close()
	}
}

// TestOrgAdminAgainstServe: an org admin of org A gets 403 on every route
// of org B, the deployment admin reaches both.
func TestOrgAdminAgainstServe(t *testing.T) {
	url := startServe(t, "file://"+t.TempDir())
	tokA := replicaToken(t, server.Claims{Admin: true, Org: "orga"})
	deploy := replicaToken(t, server.Claims{Admin: true})
	routes := func(org string) [][3]string {
		p := "/v1/admin/orgs/" + org
		return [][3]string{
			{"GET", p, ""}, {"PUT", p, `{"offline_mode":true}`},
			{"PUT", p + "/users/u/dataset", `{"key":"k","value":1}` + "\n"},
			{"POST", p + "/users/u/patches", `{"id":"x","ops":[{"op":"put","key":"k","value":2}]}`},
			{"POST", p + "/patches", `{"id":"y","users":["u"],"ops":[{"op":"put","key":"k","value":3}]}`},
			{"GET", p + "/changes", ""}, {"GET", p + "/consumers", ""},
			{"PUT", p + "/consumers/c", `{"cursor":""}`}, {"GET", p + "/consumers/c", ""},
			{"DELETE", p + "/consumers/c", ""},
		}
	}
	for _, r := range routes("orgb") {
		if code, b := call(t, r[0], url+r[1], tokA, []byte(r[2])); code != 403 {
			t.Errorf("org admin of orga: %s %s: %d %s", r[0], r[1], code, b)
		}
	}
	if code, _ := call(t, "GET", url+"/v1/admin/changes", tokA, nil); code != 403 {
		t.Errorf("org admin on the deployment's feed: %d", code)
	}
	for _, org := range []string{"orga", "orgb"} {
		for _, r := range routes(org) {
			tok := deploy
			if code, b := call(t, r[0], url+r[1], tok, []byte(r[2])); code/100 != 2 {
				t.Errorf("deployment admin: %s %s: %d %s", r[0], r[1], code, b)
			}
			if org == "orga" {
				if code, b := call(t, r[0], url+r[1], tokA, []byte(r[2])); code == 403 || code == 401 {
					t.Errorf("org admin of orga on its own: %s %s: %d %s", r[0], r[1], code, b)
				}
			}
		}
	}
}

// TestConsumerKeepsEntriesThroughGC: a consumer that has not acknowledged
// keeps its entries through gc --keep-versions 1; after acknowledging, gc
// removes them.
func TestConsumerKeepsEntriesThroughGC(t *testing.T) {
	dir := t.TempDir()
	store := "file://" + dir
	url := startServe(t, store, "--feed-settle", "1ms")
	ctx := context.Background()
	adm := &admin.Client{URL: url, Token: replicaToken(t, server.Claims{Admin: true, Org: "acme"})}
	on := true
	if _, err := adm.SetOrg(ctx, "acme", &admin.SettingsUpdate{OfflineMode: &on}); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.Ack(ctx, "acme", "backend", ""); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		p := &diff.Patch{ID: fmt.Sprint("p", i), Ops: []diff.Op{{Op: diff.OpPut, Key: "tasks/1", Value: json.RawMessage(fmt.Sprint(i))}}}
		if _, err := adm.Patch(ctx, "acme", "alice", p, true); err != nil {
			t.Fatal(err)
		}
	}
	page := readAllChanges(t, adm, "")
	if len(page) != 4 {
		t.Fatalf("%d entries before gc", len(page))
	}
	time.Sleep(20 * time.Millisecond) // past gc's grace below
	gcRun := func() map[string]any {
		stdout, stderr, code := runIn(t, nil, "gc", "--store", store, "--keep-versions", "1", "--grace", "10ms", "--json")
		if code != 0 {
			t.Fatalf("gc: %d %s", code, stderr)
		}
		var rep map[string]any
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("gc output %q: %v", stdout, err)
		}
		return rep
	}
	rep := gcRun()
	if rep["versions_deleted"].(float64) != 0 || rep["versions_held"].(float64) != 3 {
		t.Errorf("gc with an unacknowledged consumer: %v", rep)
	}
	if again := readAllChanges(t, adm, ""); len(again) != 4 {
		t.Fatalf("%d entries after gc, want all 4 kept", len(again))
	}
	if _, err := adm.Ack(ctx, "acme", "backend", page[3].Cursor); err != nil {
		t.Fatal(err)
	}
	rep = gcRun()
	if rep["versions_deleted"].(float64) != 3 || rep["change_sets_deleted"].(float64) != 3 {
		t.Errorf("gc after the acknowledgement: %v", rep)
	}
	if rest := readAllChanges(t, adm, ""); len(rest) != 1 || rest[0].Version != 4 {
		t.Errorf("after gc: %d entries", len(rest))
	}
	if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(page[0].Cursor))); !os.IsNotExist(err) {
		t.Errorf("entry %s outlived the acknowledgement and gc", page[0].Cursor)
	}
}

// readAllChanges reads an org's feed from after to its end.
func readAllChanges(t *testing.T, adm *admin.Client, after string) []diff.Event {
	t.Helper()
	var out []diff.Event
	for range 100 {
		p, err := adm.Changes(context.Background(), "acme", after, 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p.Entries...)
		if p.Next == after {
			return out
		}
		after = p.Next
	}
	t.Fatal("the feed did not end")
	return nil
}

// webhookReceiver fails its first `fail` requests, then answers 200, and
// records each request.
type webhookReceiver struct {
	mu   sync.Mutex
	fail int
	n    int
	got  []webhookDelivery
}

type webhookDelivery struct {
	cursor, attempt string
	ok, signed      bool
	event           diff.Event
}

func (h *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	d := webhookDelivery{cursor: r.Header.Get(wire.HeaderDelivery), attempt: r.Header.Get(wire.HeaderAttempt)}
	d.signed = wire.Verify([]byte(webhookSecret), r.Header.Get(wire.HeaderTimestamp), r.Header.Get(wire.HeaderSignature), body, time.Now(), time.Minute) == nil
	d.signed = d.signed && json.Unmarshal(body, &d.event) == nil && d.event.Cursor == d.cursor
	h.mu.Lock()
	h.n++
	d.ok = h.n > h.fail
	h.got = append(h.got, d)
	h.mu.Unlock()
	if !d.ok {
		w.WriteHeader(503)
	}
}

func (h *webhookReceiver) deliveries() []webhookDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]webhookDelivery(nil), h.got...)
}

const webhookSecret = "acceptance-webhook-secret-0123"

// TestWebhookThreeReplicas: a webhook receiver that fails the first 5
// deliveries and then recovers receives every entry, in per-user order, at
// least once, with valid signatures; with three replicas running, each
// entry is delivered once per attempt, not three times.
func TestWebhookThreeReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three server processes")
	}
	h := &webhookReceiver{fail: 5}
	recv := httptest.NewServer(h)
	defer recv.Close()
	store := "file://" + t.TempDir()
	flags := []string{"--feed-settle", "50ms", "--feed-worker-interval", "200ms",
		"--webhook-backoff-min", "50ms", "--webhook-backoff-max", "400ms", "--hooks-allow-private"}
	urls := []string{startServe(t, store, flags...), startServe(t, store, flags...), startServe(t, store, flags...)}
	ctx := context.Background()
	deploy := replicaToken(t, server.Claims{Admin: true})
	on, hook, secret := true, recv.URL, webhookSecret
	adm := &admin.Client{URL: urls[0], Token: deploy}
	if _, err := adm.SetOrg(ctx, "acme", &admin.SettingsUpdate{OfflineMode: &on, WebhookURL: &hook, WebhookSecret: &secret}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		for j, u := range []string{"u1", "u2", "u3"} {
			c := &admin.Client{URL: urls[(i+j)%3], Token: deploy}
			p := &diff.Patch{ID: fmt.Sprintf("p%d", i), Ops: []diff.Op{{Op: diff.OpPut, Key: "k", Value: json.RawMessage(fmt.Sprint(i))}}}
			if _, err := c.Patch(ctx, "acme", u, p, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond) // past the feed's settle time
	want := readAllChanges(t, adm, "")
	if len(want) != 9 {
		t.Fatalf("%d entries in the feed", len(want))
	}
	deadline := time.Now().Add(60 * time.Second)
	for acked(h.deliveries()) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("after 60s %d of %d entries delivered: %+v", acked(h.deliveries()), len(want), h.deliveries())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // room for a duplicate to show, were there one
	checkThreeReplicaDeliveries(t, h.deliveries(), want)
	leaders := 0.0
	for _, u := range urls {
		leaders += metricValue(t, u, "deltasync_feed_worker_leader")
	}
	if leaders != 1 {
		t.Errorf("%v replicas say they hold the feed-worker lease, want 1", leaders)
	}
}

func acked(ds []webhookDelivery) int {
	n := 0
	for _, d := range ds {
		if d.ok {
			n++
		}
	}
	return n
}

func checkThreeReplicaDeliveries(t *testing.T, ds []webhookDelivery, want []diff.Event) {
	t.Helper()
	perAttempt := map[string]int{}
	okCount := map[string]int{}
	last := map[string]uint64{}
	for i, d := range ds {
		if !d.signed {
			t.Errorf("delivery %d of %s: bad signature", i, d.cursor)
		}
		perAttempt[d.cursor+"#"+d.attempt]++
		if i < 5 {
			if d.ok || d.cursor != want[0].Cursor || d.attempt != fmt.Sprint(i+1) {
				t.Errorf("delivery %d: %+v, want failed attempt %d at the first entry", i, d, i+1)
			}
			continue
		}
		if !d.ok {
			continue
		}
		okCount[d.cursor]++
		if d.event.Version <= last[d.event.User] {
			t.Errorf("%s: version %d after %d", d.event.User, d.event.Version, last[d.event.User])
		}
		last[d.event.User] = d.event.Version
	}
	for k, n := range perAttempt {
		if n != 1 {
			t.Errorf("delivery %s sent %d times: replicas multiply deliveries", k, n)
		}
	}
	for _, e := range want {
		if okCount[e.Cursor] != 1 {
			t.Errorf("entry %s (%s v%d) acknowledged %d times", e.Cursor, e.User, e.Version, okCount[e.Cursor])
		}
	}
}

// metricValue reads one unlabelled metric from a server's /metrics.
func metricValue(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	t.Fatalf("%s has no %s", url, name)
	return 0
}

// TestValidatorAgainstServe: a validator that refuses ops whose key
// matches a rule turns exactly those ops into rejected receipts; the rest
// apply.
func TestValidatorAgainstServe(t *testing.T) {
	validator := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if wire.Verify([]byte(webhookSecret), r.Header.Get(wire.HeaderTimestamp), r.Header.Get(wire.HeaderSignature), body, time.Now(), time.Minute) != nil {
			w.WriteHeader(401)
			return
		}
		var vr wire.ValidationRequest
		json.Unmarshal(body, &vr)
		var out wire.ValidationResponse
		for i, op := range vr.Patch.Ops {
			if strings.HasPrefix(op.Key, "workflows/") {
				out.Rejected = append(out.Rejected, wire.ValidationRejection{Index: i, Reason: "workflows start online only"})
			}
		}
		json.NewEncoder(w).Encode(out)
	}))
	defer validator.Close()
	url := startServe(t, "file://"+t.TempDir(), "--hooks-allow-private")
	ctx := context.Background()
	on, v, secret := true, validator.URL, webhookSecret
	adm := &admin.Client{URL: url, Token: replicaToken(t, server.Claims{Admin: true, Org: "acme"})}
	if _, err := adm.SetOrg(ctx, "acme", &admin.SettingsUpdate{OfflineMode: &on, ValidationURL: &v, WebhookSecret: &secret}); err != nil {
		t.Fatal(err)
	}
	code, b := call(t, "POST", url+"/v1/patches", replicaToken(t, server.Claims{Org: "acme", User: "alice"}), []byte(`{"id":"p","base":0,"ops":[
		{"op":"put","key":"forms/1","value":{"a":1}},{"op":"put","key":"workflows/1","value":{"go":true}},
		{"op":"put","key":"tasks/1","value":"done"},{"op":"delete","key":"workflows/2"}]}`))
	var pr wire.PatchResponse
	if code != 200 || json.Unmarshal(b, &pr) != nil {
		t.Fatalf("patch: %d %s", code, b)
	}
	want := []string{diff.StatusApplied, diff.StatusRejected, diff.StatusApplied, diff.StatusRejected}
	for i, rc := range pr.Receipts {
		if rc.Status != want[i] || (rc.Status == diff.StatusRejected) != (rc.Reason == "workflows start online only") {
			t.Errorf("op %d: %+v, want %s", i, rc, want[i])
		}
	}
}
