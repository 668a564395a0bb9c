package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// queuePuts queues n small puts keys q/00000.. and returns the NDJSON the
// server must hold once they are all applied.
func queuePuts(t *testing.T, c *Client, n int) string {
	t.Helper()
	// Queueing is not what is tested: skip the fsync of every edit.
	c.store.SetEditsNoSync(true)
	defer c.store.SetEditsNoSync(false)
	var want strings.Builder
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("q/%05d", i)
		v := fmt.Sprintf(`{"i":%d}`, i)
		mustDo(t, c.Put(k, []byte(v)))
		fmt.Fprintf(&want, `{"key":%q,"value":%s}`+"\n", k, v)
	}
	return want.String()
}

// TestBigQueueOverServerOpsLimitSyncsCompletely protects issue 9 item 1:
// more edits than the server's built-in 10,000 ops per patch were sent as
// one patch, answered 400 and all turned into rejections. 25,000 queued
// puts must all reach the server, none rejected.
func TestBigQueueOverServerOpsLimitSyncsCompletely(t *testing.T) {
	if raceEnabled {
		// scripts/test runs Big tests once without -race;
		// TestQueueSplitsByThePolicysLimits covers the splitting under it.
		t.Skip("25,000 edits: runs without -race")
	}
	n := 25_000
	if testing.Short() {
		n = 10_001
	}
	ts := newTestServer(t)
	c := ts.client("ann", nil)
	start := time.Now()
	want := queuePuts(t, c, n)
	t.Logf("queued %d puts in %v", n, time.Since(start))
	start = time.Now()
	res, err := c.Sync(context.Background())
	mustDo(t, err)
	t.Logf("synced in %v: %+v", time.Since(start), res)
	if res.EditsApplied != n || res.EditsRejected != 0 || res.Pending != 0 {
		t.Fatalf("sync: %+v, want all %d edits applied", res, n)
	}
	if got := ts.export("ann"); got != want {
		t.Fatalf("server holds %d lines, want %d", strings.Count(got, "\n"), n)
	}
	if cs, err := c.Conflicts(); err != nil || len(cs) != 0 {
		t.Fatalf("conflicts: %d, %v", len(cs), err)
	}
}

// bigForm is a JSON object of about n bytes: an offline form with a photo.
func bigForm(n int) []byte {
	return []byte(`{"photo":"` + strings.Repeat("A", n-len(`{"photo":""}`)) + `"}`)
}

// photoForm is a form of n bytes carrying a photo as base64 of random
// bytes: like a real one, it does not shrink much under zstd.
func photoForm(n int, seed uint64) []byte {
	raw := make([]byte, (n-len(`{"photo":""}`))*3/4+3)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	b64 := base64.StdEncoding.EncodeToString(raw)[:n-len(`{"photo":""}`)]
	return []byte(`{"photo":"` + b64 + `"}`)
}

// TestOfflineFormOverPatchLimitSyncs protects issue 9 item 2: a 9.8 MB form
// (the client accepts up to 16 MiB) met the server's 8 MiB patch limit,
// became a rejection and vanished from the view. A value the server
// accepts as a record must get through as a patch of its own, also when it
// is over 8 MiB on the wire (the 14 MB form, compressed).
func TestOfflineFormOverPatchLimitSyncs(t *testing.T) {
	ts := newTestServer(t)
	c := ts.client("ann", nil)
	form, big := photoForm(9_800_000, 1), photoForm(14_000_000, 2)
	mustDo(t, c.Put("forms/1", form))
	mustDo(t, c.Put("forms/2", big))
	mustDo(t, c.Put("tasks/1", []byte(`{"state":"done"}`)))
	res, err := c.Sync(context.Background())
	mustDo(t, err)
	if res.EditsApplied != 3 || res.EditsRejected != 0 || res.Pending != 0 || res.State != StateSynced {
		t.Fatalf("sync: %+v", res)
	}
	if res.BytesUp < 8<<20+14_000_000*3/4 {
		t.Fatalf("%d bytes up: the forms did not go over the wire as big as they are", res.BytesUp)
	}
	want := `{"key":"forms/1","value":` + string(form) + "}\n" + `{"key":"forms/2","value":` + string(big) + "}\n" +
		`{"key":"tasks/1","value":{"state":"done"}}` + "\n"
	if got := ts.export("ann"); got != want {
		t.Fatalf("server holds %d bytes, want %d", len(got), len(want))
	}
	if got := exportOf(t, c); got != want {
		t.Fatalf("client view holds %d bytes, want %d", len(got), len(want))
	}
}

// TestQueueSplitsByThePolicysLimits: the client forms patches by the limits
// the policy carries (here the server's own, lowered), so none is refused:
// one round trip per patch, every edit applied. Runs under -race; the Big
// test above covers the server's built-in 10,000 once.
func TestQueueSplitsByThePolicysLimits(t *testing.T) {
	ts := newTestServerWith(t, func(o *server.Options) { o.MaxPatchOps, o.MaxPatchBytes = 40, 2000 })
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	ctx := context.Background()
	_, err := c.Pull(ctx) // learns the policy
	mustDo(t, err)
	if p := c.Policy(); p.MaxPatchOps != 40 || p.MaxPatchBytes != 2000 || p.MaxRecordBytes != snapshot.MaxValueLen {
		t.Fatalf("policy %+v lacks the server's limits", p)
	}
	want := queuePuts(t, c, 300)
	mustDo(t, c.Put("q/big", bigForm(5000))) // over MaxPatchBytes: a patch of its own
	want += `{"key":"q/big","value":` + string(bigForm(5000)) + "}\n"
	res, err := c.Sync(ctx)
	mustDo(t, err)
	if res.EditsApplied != 301 || res.EditsRejected != 0 || res.Pending != 0 {
		t.Fatalf("sync: %+v", res)
	}
	if got := ts.export("ann"); got != want {
		t.Fatalf("server:\n%.500s\nwant\n%.500s", got, want)
	}
	ft.mu.Lock()
	posts := ft.posts
	ft.mu.Unlock()
	if len(posts) != res.Patches {
		t.Errorf("%d patches sent for %d answered: some were refused", len(posts), res.Patches)
	}
	for _, b := range posts {
		var p diff.Patch
		mustDo(t, json.Unmarshal(decodeBody(t, b), &p))
		body, err := diff.EncodePatch(&p)
		mustDo(t, err)
		if len(p.Ops) > 40 || (len(p.Ops) > 1 && len(body) > 2000) {
			t.Errorf("patch of %d ops, %d bytes: over the policy", len(p.Ops), len(body))
		}
	}
}

// decodeBody undoes the zstd a patch body may be sent with.
func decodeBody(t *testing.T, b string) []byte {
	t.Helper()
	if !strings.HasPrefix(b, "\x28\xb5\x2f\xfd") {
		return []byte(b)
	}
	d, err := zstd.NewReader(nil)
	mustDo(t, err)
	defer d.Close()
	out, err := d.DecodeAll([]byte(b), nil)
	mustDo(t, err)
	return out
}

// TestPutRefusesWhatTheServerNeverAccepts protects issue 9 item 2: a value
// over the largest record the server accepts is refused at edit time, with
// an error naming the limit, and nothing is queued. Before any policy the
// built-in 16 MiB applies; after, the org's limit.
func TestPutRefusesWhatTheServerNeverAccepts(t *testing.T) {
	ts := newTestServer(t)
	c := ts.client("ann", nil)
	err := c.Put("forms/1", bigForm(snapshot.MaxValueLen+1))
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "limit of 16777216 bytes per record") {
		t.Fatalf("16 MiB + 1 before any policy: %v", err)
	}
	ts.setPolicy(`{"max_record_bytes":1000}`)
	_, err = c.Pull(context.Background())
	mustDo(t, err)
	mustDo(t, c.Put("forms/2", []byte(`{"a":"x"}`)))
	tests := []struct {
		name string
		edit func() error
		want string
	}{
		{"put", func() error { return c.Put("forms/1", bigForm(1001)) }, "value of 1001 bytes is over the limit of 1000 bytes per record (max_record_bytes"},
		{"merge patch", func() error { return c.Merge("forms/1", bigForm(1001)) }, "merge patch of 1001 bytes"},
		{"merged value", func() error { return c.Merge("forms/2", bigForm(995)) }, "merged value of 1003 bytes"},
	}
	for _, tc := range tests {
		err := tc.edit()
		if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrTooLarge saying %q", tc.name, err, tc.want)
		}
	}
	if s := c.Status(); s.PendingEdits != 1 {
		t.Errorf("%d edits pending, want only the one that fits", s.PendingEdits)
	}
	mustDo(t, c.Put("forms/1", bigForm(1000)))
}

// TestStricterPolicyBlocksQueuedEdit: an edit queued under one record limit
// and over the next (the org lowered it while the device was offline) is
// never dropped: it stays queued and visible, with the later edits of its
// record behind it; the other records' edits are sent; the status says
// error/blocked with the reason, across a restart, until the app discards
// it. (The client learns the new limit from the 413 itself.)
func TestStricterPolicyBlocksQueuedEdit(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"state":"open"}`)}})
	dir := t.TempDir()
	c := ts.client("ann", nil, dir)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	form := bigForm(200_000)
	var blockedOnly func(*Client)
	mustDo(t, c.Put("forms/1", form))
	mustDo(t, c.Merge("forms/1", []byte(`{"signed":true}`)))
	mustDo(t, c.Merge("tasks/1", []byte(`{"state":"done"}`)))
	ts.setPolicy(`{"max_record_bytes":100000}`)

	res, err := c.Sync(ctx)
	mustDo(t, err)
	if res.EditsApplied != 1 || res.EditsRejected != 0 || res.EditsBlocked != 2 || res.Pending != 2 || res.State != StateError {
		t.Fatalf("sync: %+v", res)
	}
	if got, want := ts.export("ann"), `{"key":"tasks/1","value":{"state":"done"}}`+"\n"; got != want {
		t.Fatalf("server:\n%s", got)
	}
	check := func(c *Client) {
		t.Helper()
		s := c.Status()
		if s.State != StateError || s.Reason != ReasonBlocked || s.BlockedEdits != 2 ||
			!strings.Contains(s.Message, `"forms/1"`) || !strings.Contains(s.Message, "over the limit of 100000 bytes per record") {
			t.Fatalf("status %+v", s)
		}
		blockedOnly(c)
	}
	blockedOnly = func(c *Client) {
		t.Helper()
		if b := c.Blocked(); len(b) != 1 || b[0].Key != "forms/1" || b[0].Op != OpPut || b[0].Waiting != 1 || b[0].Bytes != int64(len(form)) {
			t.Fatalf("blocked %+v", b)
		}
		if got := get(t, c, "forms/1"); !strings.Contains(got, `"signed":true`) {
			t.Fatalf("the blocked edit left the view: %.80s", got)
		}
	}
	check(c)
	mustDo(t, c.Close())
	c = ts.client("ann", nil, dir)
	blockedOnly(c) // offline until it syncs: that state wins
	if s := c.Status(); s.BlockedEdits != 2 {
		t.Fatalf("after a restart: %+v", s)
	}
	_, err = c.Sync(ctx)
	mustDo(t, err)
	check(c)
	// A merge would make the record too large now; a delete of it waits
	// behind the blocked edit.
	if err := c.Merge("forms/1", []byte(`{"page":2}`)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("merge onto the blocked record: %v, want ErrTooLarge", err)
	}
	mustDo(t, c.Delete("forms/1"))
	if s := c.Status(); s.BlockedEdits != 3 {
		t.Fatalf("blocked edits %d after another edit of the record, want 3", s.BlockedEdits)
	}
	// The app lets the user give it up.
	n, err := c.DiscardEdits("forms/1")
	mustDo(t, err)
	if n != 3 {
		t.Fatalf("discarded %d, want 3", n)
	}
	if s := c.Status(); s.BlockedEdits != 0 || s.PendingEdits != 0 || s.Reason == ReasonBlocked {
		t.Fatalf("status after discarding: %+v", s)
	}
	res, err = c.Sync(ctx)
	mustDo(t, err)
	if res.State != StateSynced {
		t.Fatalf("sync after discarding: %+v", res)
	}
}

// TestRaisedLimitSendsBlockedEdit: a blocked edit goes out as soon as a
// policy allows it.
func TestRaisedLimitSendsBlockedEdit(t *testing.T) {
	ts := newTestServer(t)
	c := ts.client("ann", nil)
	ctx := context.Background()
	form := bigForm(5000)
	mustDo(t, c.Put("forms/1", form))
	ts.setPolicy(`{"max_record_bytes":4000}`)
	res, err := c.Sync(ctx)
	mustDo(t, err)
	if res.EditsBlocked != 1 || res.Pending != 1 {
		t.Fatalf("sync under the lower limit: %+v", res)
	}
	ts.setPolicy(`{"max_record_bytes":0}`) // back to the server's own
	_, err = c.Sync(ctx)                   // the pull learns the policy
	mustDo(t, err)
	res, err = c.Sync(ctx)
	mustDo(t, err)
	if res.EditsApplied != 1 || res.Pending != 0 || res.EditsBlocked != 0 || res.State != StateSynced {
		t.Fatalf("sync after the limit was raised: %+v", res)
	}
	if got := ts.export("ann"); got != `{"key":"forms/1","value":`+string(form)+"}\n" {
		t.Fatalf("server: %.100s", got)
	}
}

// olderServer makes a real server's 413 answers look like an older
// server's: no policy in them, so the client must split (or, for a single
// edit, block) on the status alone.
type olderServer struct {
	base http.RoundTripper
	n413 atomic.Int64
}

func (o *olderServer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		return resp, err
	}
	o.n413.Add(1)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var lb wire.LimitErrorBody
	if json.Unmarshal(raw, &lb) == nil {
		raw, _ = json.Marshal(wire.ErrorBody{Error: lb.Error})
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	resp.ContentLength = int64(len(raw))
	return resp, nil
}

// TestPlain413SplitsNeverRejects protects the rule behind issue 9 item 1
// for a server that says only 413: a patch of several edits is split until
// it fits, a single edit refused is kept and blocked, and no edit is ever
// turned into a rejection.
func TestPlain413SplitsNeverRejects(t *testing.T) {
	ts := newTestServer(t)
	old := &olderServer{base: http.DefaultTransport.(*http.Transport).Clone()}
	c := ts.client("ann", old)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	want := queuePuts(t, c, 50)
	mustDo(t, c.Put("forms/1", bigForm(3000)))
	ts.setPolicy(`{"max_patch_ops":7,"max_record_bytes":2000}`) // the client does not know yet

	res, err := c.Push(ctx)
	mustDo(t, err)
	if res.EditsApplied != 50 || res.EditsRejected != 0 || res.Pending != 1 || res.EditsBlocked != 1 {
		t.Fatalf("push: %+v", res)
	}
	if old.n413.Load() == 0 {
		t.Fatal("the server never answered 413: the test tests nothing")
	}
	if got := ts.export("ann"); got != want {
		t.Fatalf("server holds %d lines, want 50", strings.Count(got, "\n"))
	}
	b := c.Blocked()
	if len(b) != 1 || b[0].Key != "forms/1" || !strings.Contains(b[0].Reason, "the server refused it as too large") {
		t.Fatalf("blocked %+v", b)
	}
	// The pull brings the policy that explains it; the edit stays blocked.
	_, err = c.Pull(ctx)
	mustDo(t, err)
	if b := c.Blocked(); len(b) != 1 || !strings.Contains(b[0].Reason, "over the limit of 2000 bytes per record") {
		t.Fatalf("blocked after the policy arrived %+v", b)
	}
}

// TestDeviceLimitsNeverCostAnEdit pins issue 9 item 14's decision: the
// org's max_pending_bytes and max_offline_seconds are the device's to show
// (status error/policy with the limit), and the server does not refuse
// the edits: everything made offline beyond them reaches the server.
func TestDeviceLimitsNeverCostAnEdit(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"max_pending_bytes":500,"max_offline_seconds":60}`)
	c := ts.client("ann", nil)
	clock := useClock(c)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.SetOfflineMode(true))
	mustDo(t, c.Put("first", []byte(`1`)))
	clock.add(time.Hour) // an hour offline
	if s := c.Status(); s.State != StateError || s.Reason != ReasonPolicy || !strings.Contains(s.Message, "longer than the 1m0s your organization allows") {
		t.Fatalf("over max_offline_seconds: %+v", s)
	}
	want := `{"key":"first","value":1}` + "\n" + queuePuts(t, c, 20)
	if s := c.Status(); s.State != StateError || s.Reason != ReasonPolicy || !strings.Contains(s.Message, "more than the 500 your organization allows") {
		t.Fatalf("over max_pending_bytes: %+v", s)
	}
	mustDo(t, c.SetOfflineMode(false))
	res, err := c.Sync(ctx)
	mustDo(t, err)
	if res.EditsApplied != 21 || res.EditsRejected != 0 || res.Pending != 0 || res.State != StateSynced {
		t.Fatalf("sync: %+v", res)
	}
	if got := ts.export("ann"); got != want {
		t.Fatalf("server:\n%s", got)
	}
}

// proxyLimit stands for a reverse proxy in front of the server with a body
// limit of its own (nginx's client_max_body_size): it answers 413 with an
// HTML page to any request body over max, without asking the server.
type proxyLimit struct {
	base    http.RoundTripper
	max     int64
	refused atomic.Int64
}

func (p *proxyLimit) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.ContentLength > p.max {
		p.refused.Add(1)
		if req.Body != nil {
			req.Body.Close()
		}
		body := "<html><body><h1>413 Request Entity Too Large</h1></body></html>"
		return &http.Response{StatusCode: http.StatusRequestEntityTooLarge, Header: http.Header{"Content-Type": {"text/html"}},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req}, nil
	}
	return p.base.RoundTrip(req)
}

// TestProxy413BlocksTheEditItRefuses: a 413 that no limit of the policy
// explains (a proxy's body limit) keeps the refused edit queued and
// blocked, across the policy the next pull brings (its limits are the
// same), while every other edit is sent, not one per patch; the big edit
// goes up twice at most (halving by bytes isolates it at once). A change of
// the limits gives it another try.
func TestProxy413BlocksTheEditItRefuses(t *testing.T) {
	ts := newTestServer(t)
	px := &proxyLimit{base: http.DefaultTransport.(*http.Transport).Clone(), max: 1 << 20}
	c := ts.client("ann", px)
	ctx := context.Background()
	form := photoForm(2_000_000, 3) // fits every limit of the policy, not the proxy's
	mustDo(t, c.Put("forms/1", form))
	want := queuePuts(t, c, 30)
	for i := 0; i < 2; i++ { // the second sync must not lose it either
		res, err := c.Sync(ctx)
		mustDo(t, err)
		if res.EditsRejected != 0 || res.Pending != 1 || res.EditsBlocked != 1 || res.State != StateError {
			t.Fatalf("sync %d: %+v", i, res)
		}
		if i == 0 && res.Patches != 1 {
			t.Errorf("the 30 small edits took %d patches, want 1", res.Patches)
		}
	}
	if n := px.refused.Load(); n > 2 {
		t.Errorf("the big form went up %d times, want at most 2", n)
	}
	if got := ts.export("ann"); got != want {
		t.Fatalf("server holds %d lines, want the 30 small edits", strings.Count(got, "\n"))
	}
	s := c.Status()
	if s.Reason != ReasonBlocked || !strings.Contains(s.Message, `"forms/1"`) || !strings.Contains(s.Message, "413") {
		t.Fatalf("status %+v", s)
	}
	if got := get(t, c, "forms/1"); got != string(form) {
		t.Fatal("the blocked form left the view")
	}
	// A change of the limits gives it another try: through a bigger proxy
	// it goes.
	px.max = 64 << 20
	ts.setPolicy(`{"max_patch_ops":9999}`)
	_, err := c.Pull(ctx)
	mustDo(t, err)
	res, err := c.Sync(ctx)
	mustDo(t, err)
	if res.EditsApplied != 1 || res.Pending != 0 || res.EditsBlocked != 0 || res.State != StateSynced {
		t.Fatalf("sync after the limits changed: %+v", res)
	}
}
