package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/client"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
)

// The offline-story acceptance of issue 5, against a real `deltasync serve`
// process: a device syncs, goes offline, makes 50 edits while the server's
// copy changes under it (an admin data-set upload and another device's
// patches, some on the same records and fields), comes back online, and
// every edit shows up on the server or as a reported conflict with both
// values; OnStatus sees synced → offline → syncing → synced.
func TestOfflineStoryAgainstServe(t *testing.T) {
	storeDir := t.TempDir()
	url := startServe(t, "file://"+storeDir)
	admin, _ := server.MintToken([]byte(replicaSecret), server.Claims{Admin: true}, time.Hour)
	token, _ := server.MintToken([]byte(replicaSecret), server.Claims{Org: "acme", User: "lee"}, time.Hour)
	if code, b := call(t, "PUT", url+"/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true,"conflict_policy":"client-wins"}`)); code != 200 {
		t.Fatalf("enable org: %d %s", code, b)
	}
	upload := func(recs map[string]string) {
		t.Helper()
		var body []byte
		for _, k := range sortedKeys(recs) {
			body = snapshot.AppendNDJSONLine(body, k, []byte(recs[k]))
		}
		if code, b := call(t, "PUT", url+"/v1/admin/orgs/acme/users/lee/dataset", admin, body); code != 200 {
			t.Fatalf("upload: %d %s", code, b)
		}
	}
	data := map[string]string{}
	for i := 0; i < 40; i++ {
		data[fmt.Sprintf("tasks/%02d", i)] = fmt.Sprintf(`{"n":%d,"state":"open","title":"t%d"}`, i, i)
	}
	for i := 0; i < 5; i++ {
		data[fmt.Sprintf("old/%d", i)] = fmt.Sprintf(`{"x":%d}`, i)
	}
	upload(data)

	open := func() *client.Client {
		t.Helper()
		opts := client.DefaultOptions()
		opts.ServerURL, opts.Token = url, token
		opts.RetryMinMillis, opts.RetryMaxMillis = 5, 50
		opts.LongPollSeconds = 2
		c, err := client.Open(t.TempDir(), opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	phone, tablet := open(), open()
	log := recordStatus(phone)
	ctx := t.Context()
	if err := phone.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer phone.Stop()
	log.waitFor(t, phone, "the first sync", func(s client.Status) bool { return s.State == client.StateSynced && s.LocalVersion == 1 })
	if _, err := tablet.Pull(ctx); err != nil {
		t.Fatal(err)
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(phone.SetOfflineMode(true))
	// 50 edits: two merges into each of tasks 00..09 (the server changes
	// 00..07 meanwhile: 00, 01, 05 and 06 on the same field), 25 new forms,
	// 5 deletes.
	for i := 0; i < 10; i++ {
		must(phone.Merge(fmt.Sprintf("tasks/%02d", i), []byte(`{"state":"done"}`)))
		must(phone.Merge(fmt.Sprintf("tasks/%02d", i), []byte(fmt.Sprintf(`{"note":"offline %d"}`, i))))
	}
	for i := 0; i < 25; i++ {
		must(phone.Put(fmt.Sprintf("forms/%02d", i), []byte(fmt.Sprintf(`{"answer":%d}`, i))))
	}
	for i := 0; i < 5; i++ {
		must(phone.Delete(fmt.Sprintf("old/%d", i)))
	}
	if s := phone.Status(); s.State != client.StateOffline || s.Reason != client.ReasonOfflineMode || s.PendingEdits != 50 {
		t.Fatalf("offline status: %+v", s)
	}

	// Meanwhile the app's backend uploads a new data set...
	data["tasks/00"] = `{"n":0,"state":"archived by admin","title":"t0"}`
	data["tasks/01"] = `{"n":1,"state":"archived by admin","title":"t1"}`
	for i := 2; i < 5; i++ {
		data[fmt.Sprintf("tasks/%02d", i)] = fmt.Sprintf(`{"n":%d,"state":"open","title":"renamed by admin %d"}`, i, i)
	}
	upload(data)
	// ...and another device of the same user pushes its own edits.
	if _, err := tablet.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	must(tablet.Merge("tasks/05", []byte(`{"state":"blocked on the tablet"}`)))
	must(tablet.Merge("tasks/06", []byte(`{"state":"blocked on the tablet"}`)))
	must(tablet.Merge("tasks/07", []byte(`{"owner":"tablet"}`)))
	must(tablet.Put("shared/tablet", []byte(`{"from":"tablet"}`)))
	if res, err := tablet.Sync(ctx); err != nil || res.EditsApplied != 4 {
		t.Fatalf("tablet sync: %+v, %v", res, err)
	}
	store, err := fsstore.New(storeDir)
	must(err)
	before, err := snapshot.Head(ctx, store, "acme", "lee")
	must(err)

	must(phone.SetOfflineMode(false))
	log.waitFor(t, phone, "synced after coming back", func(s client.Status) bool {
		return s.State == client.StateSynced && s.PendingEdits == 0 && s.LocalVersion > before
	})
	states := log.states()
	if !containsInOrder(states, []string{client.StateSynced, client.StateOffline, client.StateSyncing, client.StateSynced}) {
		t.Errorf("states %v do not pass through synced, offline, syncing, synced", states)
	}
	for i := 1; i < len(states); i++ {
		if states[i-1] == client.StateOffline && states[i] != client.StateSyncing {
			t.Errorf("after offline came %s (states %v)", states[i], states)
		}
	}

	// The server's newest version, read from its store.
	head, err := snapshot.Head(ctx, store, "acme", "lee")
	must(err)
	secret, err := snapshot.LoadOrCreateSecret(ctx, store)
	must(err)
	m, err := snapshot.ReadManifest(ctx, store, "acme", "lee", head)
	must(err)
	var ndjson []byte
	final := map[string]map[string]any{}
	must(snapshot.NewReader(store, m, secret).Records(ctx, func(k, v []byte) error {
		ndjson = snapshot.AppendNDJSONLine(ndjson, string(k), v)
		var obj map[string]any
		if err := json.Unmarshal(v, &obj); err != nil {
			return err
		}
		final[string(k)] = obj
		return nil
	}))
	if got := export(t, phone); got != string(ndjson) {
		t.Errorf("the phone's records differ from the server's version %d", head)
	}
	if _, err := tablet.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got := export(t, tablet); got != string(ndjson) {
		t.Errorf("the tablet's records differ from the server's version %d", head)
	}

	conflicts, err := phone.Conflicts()
	must(err)
	conflicted := map[string]client.Conflict{}
	for _, cf := range conflicts {
		conflicted[cf.Key] = cf
		if len(cf.ClientValue) == 0 || len(cf.ServerValue) == 0 {
			t.Errorf("conflict on %s lacks a side: client %s, server %s", cf.Key, cf.ClientValue, cf.ServerValue)
		}
	}
	t.Logf("states %v; %d conflicts reported; server at version %d", states, len(conflicts), head)
	for i := 0; i < 10; i++ {
		k := fmt.Sprintf("tasks/%02d", i)
		v := final[k]
		if v["note"] != fmt.Sprintf("offline %d", i) {
			t.Errorf("%s on the server: %v (the offline note is missing)", k, v)
		}
		sameField := i == 0 || i == 1 || i == 5 || i == 6
		switch _, reported := conflicted[k]; {
		case sameField && !reported:
			t.Errorf("%s changed on both sides (same field) but no conflict reported", k)
		case v["state"] != "done" && !reported:
			t.Errorf("%s: state %v on the server and no conflict reported", k, v["state"])
		case !sameField && reported:
			t.Errorf("%s: conflict reported for changes to different fields: %+v", k, conflicted[k])
		}
	}
	for i := 2; i < 5; i++ {
		if k := fmt.Sprintf("tasks/%02d", i); final[k]["title"] != fmt.Sprintf("renamed by admin %d", i) {
			t.Errorf("%s lost the admin's change: %v", k, final[k])
		}
	}
	if final["tasks/07"]["owner"] != "tablet" || final["shared/tablet"] == nil {
		t.Errorf("the tablet's changes are lost: %v, %v", final["tasks/07"], final["shared/tablet"])
	}
	for i := 0; i < 25; i++ {
		if v := final[fmt.Sprintf("forms/%02d", i)]; v["answer"] != float64(i) {
			t.Errorf("forms/%02d on the server: %v", i, v)
		}
	}
	for i := 0; i < 5; i++ {
		if v, ok := final[fmt.Sprintf("old/%d", i)]; ok {
			t.Errorf("old/%d is still on the server: %v", i, v)
		}
	}

	// Each patch made one version: nothing was applied twice.
	ids := map[string]uint64{}
	for v := uint64(2); v <= head; v++ {
		mh, err := snapshot.ReadManifestHeader(ctx, store, "acme", "lee", v)
		must(err)
		cs, err := diff.ReadChangeSet(ctx, store, mh)
		must(err)
		if cs.Kind != diff.KindPatch {
			continue
		}
		if first, dup := ids[cs.Patch.ID]; dup {
			t.Errorf("patch %s applied twice: versions %d and %d", cs.Patch.ID, first, v)
		}
		ids[cs.Patch.ID] = v
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func export(t *testing.T, c *client.Client) string {
	t.Helper()
	var b strings.Builder
	if err := c.Export(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// statusRecorder keeps every status a client reports through OnStatus.
type statusRecorder struct {
	mu     sync.Mutex
	all    []client.Status
	notify chan struct{}
}

func recordStatus(c *client.Client) *statusRecorder {
	r := &statusRecorder{notify: make(chan struct{}, 1)}
	c.OnStatus(func(s client.Status) {
		r.mu.Lock()
		r.all = append(r.all, s)
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	})
	return r
}

// waitFor blocks until cond holds for c's status. The deadline only guards
// against a hang; nothing asserted depends on timing.
func (r *statusRecorder) waitFor(t *testing.T, c *client.Client, what string, cond func(client.Status) bool) {
	t.Helper()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for !cond(c.Status()) {
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("waiting for %s: status is %+v", what, c.Status())
		}
	}
}

// states returns the states seen, runs of one state collapsed.
func (r *statusRecorder) states() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.all {
		if len(out) == 0 || out[len(out)-1] != s.State {
			out = append(out, s.State)
		}
	}
	return out
}

func containsInOrder(got, want []string) bool {
	i := 0
	for _, s := range got {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}
