package client

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

// cachedChunkCount counts the chunks stored, after checking the whole
// state (state.Store.Verify).
func cachedChunkCount(t *testing.T, c *Client) int {
	t.Helper()
	r, err := c.store.Verify(state.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Stored
}

// distinctChunks is the number of distinct chunks of the local version.
func distinctChunks(t *testing.T, c *Client) int {
	t.Helper()
	_, m, err := c.store.Manifest()
	mustDo(t, err)
	ids := map[snapshot.ChunkID]bool{}
	for _, ch := range m.Chunks {
		ids[ch.ID] = true
	}
	return len(ids)
}

func TestPullFullThenDeltas(t *testing.T) {
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 2 << 20, Seed: 11})
	v1 := ts.upload("ann", recs)
	c := ts.client("ann", nil)
	ctx := context.Background()

	res, err := c.Pull(ctx)
	mustDo(t, err)
	if !res.Full || res.Version != v1 || res.ChunksFetched == 0 || res.ChunksReused != 0 || res.BytesDown == 0 || res.State != StateSynced {
		t.Fatalf("full pull: %+v", res)
	}
	if got, want := exportOf(t, c), ts.export("ann"); got != want {
		t.Fatalf("records after full sync differ from the server's version %d (%d vs %d bytes)", v1, len(got), len(want))
	}
	if n, want := cachedChunkCount(t, c), distinctChunks(t, c); n != want {
		t.Errorf("chunk cache holds %d chunks, the version has %d", n, want)
	}
	fullBytes := res.BytesDown

	steps := []struct {
		name string
		next func([]gen.Record) []gen.Record
	}{
		{"scattered edits", func(r []gen.Record) []gen.Record { return gen.EditScattered(r, 5, 1) }},
		{"deletes and inserts", func(r []gen.Record) []gen.Record {
			return gen.InsertInterleaved(gen.DeleteRandom(r, 20, 2), 15, 3)
		}},
		{"one field", func(r []gen.Record) []gen.Record { return gen.EditOneField(r, 4) }},
	}
	for _, step := range steps {
		recs = step.next(recs)
		v := ts.upload("ann", recs)
		res, err := c.Pull(ctx)
		mustDo(t, err)
		if res.Full || res.Version != v || res.ChunksFetched == 0 || res.ChunksReused == 0 || res.RecordsChanged == 0 {
			t.Fatalf("%s: delta pull %+v", step.name, res)
		}
		if res.BytesDown*10 > fullBytes {
			t.Errorf("%s: delta cost %d bytes, the full sync %d", step.name, res.BytesDown, fullBytes)
		}
		if got, want := exportOf(t, c), ts.export("ann"); got != want {
			t.Fatalf("%s: records differ from the server's version %d", step.name, v)
		}
		// Chunks the new version does not use are gone.
		if n, want := cachedChunkCount(t, c), distinctChunks(t, c); n != want {
			t.Errorf("%s: chunk cache holds %d chunks, the version has %d", step.name, n, want)
		}
	}
	res, err = c.Pull(ctx)
	mustDo(t, err)
	if !res.UpToDate || res.ChunksFetched != 0 {
		t.Errorf("pull at head: %+v", res)
	}
	// The stored manifest verifies on reopen.
	mustDo(t, c.Close())
	c2 := ts.client("ann", nil, c.Dir())
	if _, m, err := c2.localBase(); err != nil || m == nil || m.Version() != ts.head("ann") {
		t.Fatalf("local base after reopen: %v, %v", m, err)
	}
}

func TestPullKeepsPendingEditsOnTop(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`{"x":1}`)}, {Key: "b", Value: []byte(`1`)}})
	c := ts.client("ann", nil)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Merge("a", []byte(`{"mine":true}`)))
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`{"x":2}`)}, {Key: "c", Value: []byte(`3`)}})
	_, err = c.Pull(ctx)
	mustDo(t, err)
	if got, want := exportOf(t, c), `{"key":"a","value":{"mine":true,"x":2}}`+"\n"+`{"key":"c","value":3}`+"\n"; got != want {
		t.Errorf("merged view after pull:\n%s\nwant\n%s", got, want)
	}
	if s := c.Status(); s.PendingEdits != 1 {
		t.Errorf("pending edits after pull: %d", s.PendingEdits)
	}
}

func TestPushAppearsOnServerAndOtherClient(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"state":"open","title":"a"}`)}, {Key: "tasks/2", Value: []byte(`{"state":"open"}`)}})
	a, b := ts.client("ann", nil), ts.client("ann", nil)
	ctx := context.Background()
	_, err := a.Pull(ctx)
	mustDo(t, err)

	mustDo(t, a.Merge("tasks/1", []byte(`{"state":"done"}`)))
	mustDo(t, a.Merge("tasks/1", []byte(`{"by":"ann"}`)))
	mustDo(t, a.Delete("tasks/2"))
	mustDo(t, a.Put("forms/9", []byte(`{"photo":"aGVsbG8="}`)))
	res, err := a.Sync(ctx)
	mustDo(t, err)
	if res.EditsSent != 4 || res.EditsApplied != 4 || res.Pending != 0 || res.BytesUp == 0 || res.Patches != 1 || res.State != StateSynced {
		t.Fatalf("sync: %+v", res)
	}
	want := `{"key":"forms/9","value":{"photo":"aGVsbG8="}}` + "\n" + `{"key":"tasks/1","value":{"by":"ann","state":"done","title":"a"}}` + "\n"
	if got := ts.export("ann"); got != want {
		t.Fatalf("server after push:\n%s\nwant\n%s", got, want)
	}
	if got := exportOf(t, a); got != want {
		t.Errorf("pushing client after sync:\n%s", got)
	}
	if res.Version != ts.head("ann") {
		t.Errorf("pushing client at version %d, server head %d", res.Version, ts.head("ann"))
	}
	_, err = b.Pull(ctx)
	mustDo(t, err)
	if got := exportOf(t, b); got != want {
		t.Errorf("second client:\n%s", got)
	}
}

func TestPushRetryAfterLostAnswerAppliesOnce(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "n", Value: []byte(`{"v":0}`)}})
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	head := ts.head("ann")

	mustDo(t, c.Merge("n", []byte(`{"v":1}`)))
	mustDo(t, c.Put("m", []byte(`[1]`)))
	ft.loseAnswer.Store(true)
	_, err = c.Push(ctx)
	if !errors.Is(err, ErrNoConnection) {
		t.Fatalf("push with a lost answer: %v, want ErrNoConnection", err)
	}
	if s := c.Status(); s.PendingEdits != 2 || s.State != StateOffline || s.Reason != ReasonNoConnection {
		t.Errorf("status after lost answer: %+v", s)
	}
	if ts.head("ann") != head+1 {
		t.Fatalf("server head %d, want %d: the lost patch did reach it", ts.head("ann"), head+1)
	}
	// Survives a restart: the patch in flight is on disk.
	mustDo(t, c.Close())
	c = ts.client("ann", ft, c.Dir())
	mustDo(t, c.Put("later", []byte(`2`))) // not part of the patch in flight

	res, err := c.Sync(ctx)
	mustDo(t, err)
	if res.Patches != 2 || res.Pending != 0 {
		t.Errorf("resync: %+v", res)
	}
	ft.mu.Lock()
	posts := slices.Clone(ft.posts)
	ft.mu.Unlock()
	if len(posts) != 3 {
		t.Fatalf("%d patches posted, want 3 (lost, resent, next)", len(posts))
	}
	var p0, p1, p2 struct {
		ID   string `json:"id"`
		Base uint64 `json:"base"`
	}
	mustDo(t, json.Unmarshal([]byte(posts[0]), &p0))
	mustDo(t, json.Unmarshal([]byte(posts[1]), &p1))
	mustDo(t, json.Unmarshal([]byte(posts[2]), &p2))
	if p0 != p1 || p2.ID == p0.ID {
		t.Errorf("patch ids: lost %v, resent %v, next %v; want the resend to repeat the lost one exactly", p0, p1, p2)
	}
	// Applied once: one version for the lost+resent patch, one for the next.
	if got := ts.head("ann"); got != head+2 {
		t.Errorf("server head %d, want %d", got, head+2)
	}
	want := `{"key":"later","value":2}` + "\n" + `{"key":"m","value":[1]}` + "\n" + `{"key":"n","value":{"v":1}}` + "\n"
	if got := ts.export("ann"); got != want {
		t.Errorf("server records:\n%s", got)
	}
}

// The acceptance case is a 64 MB initial sync (8 MB under -short or -race;
// scripts/test runs the 64 MB case once without -race, by the Big prefix).
func TestBigResumeInterruptedDownload(t *testing.T) {
	ts := newTestServer(t)
	size := int64(64 << 20)
	if testing.Short() || raceEnabled {
		size = 8 << 20
	}
	var buf strings.Builder
	if _, err := gen.Generate(&buf, gen.Options{Size: size, Seed: 21}); err != nil {
		t.Fatal(err)
	}
	ts.do(http.MethodPut, "/v1/admin/orgs/"+testOrg+"/users/ann/dataset", []byte(buf.String()))
	buf.Reset()
	v := ts.head("ann")
	ctx := context.Background()

	// The size of a whole full sync, measured by a first client.
	ref := newFaultTransport()
	_, err := ts.client("ann", ref).Pull(ctx)
	mustDo(t, err)
	full := ref.down.Load()

	ft := newFaultTransport()
	c := ts.client("ann", ft)
	ft.cutAfter.Store(full / 2)
	_, err = c.Pull(ctx)
	if !errors.Is(err, ErrNoConnection) {
		t.Fatalf("cut download: %v, want ErrNoConnection", err)
	}
	if s := c.Status(); s.LocalVersion != 0 {
		t.Fatalf("a half download was installed: %+v", s)
	}
	mk, err := c.store.Marker()
	mustDo(t, err)
	if mk == nil || mk.To != v || mk.Received == 0 {
		t.Fatalf("download marker after the cut: %+v", mk)
	}
	first := ft.down.Load()
	// Reopen: the marker and chunks are on disk.
	mustDo(t, c.Close())
	c = ts.client("ann", ft, c.Dir())
	r := watch(c)
	res, err := c.Pull(ctx)
	mustDo(t, err)
	second := ft.down.Load() - first
	t.Logf("full sync %d bytes; cut at %d, resume %d (%.1f%%), %d chunks kept", full, first, second, 100*float64(second)/float64(full), mk.Received)
	if !res.Resumed || res.Version != v || res.ChunksFetched+mk.Received != distinctChunks(t, c) {
		t.Errorf("resumed pull: %+v (marker had %d chunks)", res, mk.Received)
	}
	if float64(second) > 0.55*float64(full) {
		t.Errorf("resume transferred %d bytes, more than 55%% of the full %d", second, full)
	}
	if got, want := exportOf(t, c), ts.export("ann"); got != want {
		t.Fatal("records after resumed download differ from the server's")
	}
	if mk, _ := c.store.Marker(); mk != nil {
		t.Errorf("marker left after install: %+v", mk)
	}
	// Progress was exact: chunks counted up to the announced total.
	r.mu.Lock()
	defer r.mu.Unlock()
	var last, firstProgress Status
	for _, s := range r.all {
		if s.ProgressChunksTotal > 0 {
			if firstProgress.ProgressChunksTotal == 0 {
				firstProgress = s
			}
			last = s
		}
	}
	if firstProgress.ProgressChunksDone != mk.Received || firstProgress.ProgressBytesDone != mk.Bytes {
		t.Errorf("resumed progress starts at %d chunks, %d bytes; the marker had %d, %d",
			firstProgress.ProgressChunksDone, firstProgress.ProgressBytesDone, mk.Received, mk.Bytes)
	}
	if last.ProgressChunksDone != last.ProgressChunksTotal || last.ProgressBytesDone != last.ProgressBytesTotal || last.ProgressBytesTotal == 0 {
		t.Errorf("last progress %d/%d chunks, %d/%d bytes", last.ProgressChunksDone, last.ProgressChunksTotal, last.ProgressBytesDone, last.ProgressBytesTotal)
	}
}

func TestResumeAbandonedWhenBaseChanges(t *testing.T) {
	// A download of a delta is cut; meanwhile the local base is replaced
	// (here: forced full sync). The stale marker must not be used.
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 5})
	ts.upload("ann", recs)
	ft, ref := newFaultTransport(), newFaultTransport()
	c, measure := ts.client("ann", ft), ts.client("ann", ref)
	ctx := context.Background()
	for _, cl := range []*Client{c, measure} {
		_, err := cl.Pull(ctx)
		mustDo(t, err)
	}
	ts.upload("ann", gen.Dataset(gen.Options{Size: 1 << 20, Seed: 55}))
	before := ref.down.Load()
	_, err := measure.Pull(ctx)
	mustDo(t, err)
	ft.cutAfter.Store((ref.down.Load() - before) * 3 / 4)
	before = ft.down.Load()
	if _, err := c.Pull(ctx); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("cut: %v", err)
	} else {
		t.Logf("cut after %d bytes: %v", ft.down.Load()-before, err)
	}
	mk, _ := c.store.Marker()
	if mk == nil || mk.From == 0 {
		t.Fatalf("the cut came before any chunk of the delta (marker %+v)", mk)
	}
	mustDo(t, c.store.SetNeedFull())
	res, err := c.Pull(ctx)
	mustDo(t, err)
	if !res.Full || res.Resumed {
		t.Errorf("pull after base change: %+v", res)
	}
	if got, want := exportOf(t, c), ts.export("ann"); got != want {
		t.Fatal("records differ")
	}
	if n, want := cachedChunkCount(t, c), distinctChunks(t, c); n != want {
		t.Errorf("chunk cache holds %d chunks after the sweep, the version has %d", n, want)
	}
}

func TestDamagedChunkCacheIsRepairedByRefetching(t *testing.T) {
	damageIsRepaired(t, "chunk cache", func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("chunks")) // every stored chunk
		var keys [][]byte
		b.ForEach(func(k, _ []byte) error { keys = append(keys, slices.Clone(k)); return nil })
		for _, k := range keys {
			if err := b.Put(k, []byte("garbage")); err != nil {
				return err
			}
		}
		return nil
	}, func(recs []gen.Record) []gen.Record { return gen.EditScattered(recs, 3, 9) })
}

// damageIsRepaired syncs a 1 MB data set, damages the device's state with
// damage (data.db closed, opened by bbolt), changes the data set to
// edit(records) and checks that the next pull is a full sync that leaves
// the device with the server's records.
func damageIsRepaired(t *testing.T, what string, damage func(*bolt.Tx) error, edit func([]gen.Record) []gen.Record) {
	t.Helper()
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 6})
	ts.upload("ann", recs)
	c := ts.client("ann", nil)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Close())
	db, err := bolt.Open(filepath.Join(c.Dir(), DataFile), 0o600, nil)
	mustDo(t, err)
	mustDo(t, db.Update(damage))
	mustDo(t, db.Close())
	c = ts.client("ann", nil, c.Dir())
	ts.upload("ann", edit(recs))
	res, err := c.Pull(ctx)
	mustDo(t, err)
	if !res.Full {
		t.Errorf("pull over a damaged %s: %+v, want a full resync", what, res)
	}
	if got, want := exportOf(t, c), ts.export("ann"); got != want {
		t.Fatal("records differ after repair")
	}
}

func TestTwoClientsConverge(t *testing.T) {
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 7})
	ts.upload("ann", recs)
	a, b := ts.client("ann", nil), ts.client("ann", nil)
	ctx := context.Background()
	for _, c := range []*Client{a, b} {
		_, err := c.Pull(ctx)
		mustDo(t, err)
	}
	k1, k2 := recs[10].Key, recs[20].Key
	mustDo(t, a.Merge("tasks/x", []byte(`{"from":"a"}`)))
	mustDo(t, b.Merge("tasks/x", []byte(`{"also":"b"}`)))
	mustDo(t, a.Put(k1, []byte(`"a was here"`)))
	mustDo(t, b.Put(k1, []byte(`"b was here"`))) // same key: the later push wins (client-wins)
	mustDo(t, b.Delete(k2))
	_, err := a.Sync(ctx)
	mustDo(t, err)
	_, err = b.Sync(ctx)
	mustDo(t, err)
	_, err = a.Sync(ctx)
	mustDo(t, err)
	ea, eb, es := exportOf(t, a), exportOf(t, b), ts.export("ann")
	if ea != es || eb != es {
		t.Fatalf("clients did not converge: a %d bytes, b %d bytes, server %d bytes", len(ea), len(eb), len(es))
	}
	for _, want := range []string{`{"key":"tasks/x","value":{"also":"b","from":"a"}}`, fmt.Sprintf(`{"key":%q,"value":"b was here"}`, k1)} {
		if !strings.Contains(es, want+"\n") {
			t.Errorf("server lacks %s", want)
		}
	}
	if strings.Contains(es, fmt.Sprintf(`{"key":%q,`, k2)) {
		t.Errorf("deleted %s still on the server", k2)
	}
	if a.Status().LocalVersion != b.Status().LocalVersion {
		t.Errorf("versions %d and %d", a.Status().LocalVersion, b.Status().LocalVersion)
	}
}

func TestAuthAndPolicyErrors(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	c := ts.client("ann", nil)
	ctx := context.Background()

	mustDo(t, c.SetServer(ts.url, "not-a-token"))
	if _, err := c.Pull(ctx); !errors.Is(err, ErrAuth) {
		t.Errorf("bad token: %v, want ErrAuth", err)
	}
	if s := c.Status(); s.State != StateError || s.Reason != ReasonAuth {
		t.Errorf("status with a bad token: %s/%s %q", s.State, s.Reason, s.Message)
	}
	mustDo(t, c.SetServer(ts.url, ts.token("ann")))
	ts.setPolicy(`{"offline_mode":false,"conflict_policy":"client-wins"}`)
	if _, err := c.Pull(ctx); !errors.Is(err, ErrPolicy) {
		t.Errorf("org without offline mode: %v, want ErrPolicy", err)
	}
	if s := c.Status(); s.State != StateError || s.Reason != ReasonPolicy || !strings.Contains(s.Message, "offline mode is not enabled") {
		t.Errorf("status when the org has offline mode off: %s/%s %q", s.State, s.Reason, s.Message)
	}
	ts.setPolicy(`{"offline_mode":true,"conflict_policy":"client-wins","max_pending_bytes":100}`)
	_, err := c.Pull(ctx)
	mustDo(t, err)
	if p := c.Policy(); p.MaxPendingBytes != 100 {
		t.Errorf("policy not stored: %+v", p)
	}
	mustDo(t, c.SetOfflineMode(true))
	for i := 0; i < 5; i++ {
		mustDo(t, c.Put(fmt.Sprintf("k/%d", i), []byte(`"some value to queue"`)))
	}
	if s := c.Status(); s.State != StateError || s.Reason != ReasonPolicy || !strings.Contains(s.Message, "more than the 100") {
		t.Errorf("status over the pending-bytes limit: %s/%s %q", s.State, s.Reason, s.Message)
	}
	if _, err := c.Pull(ctx); !errors.Is(err, ErrOfflineMode) {
		t.Errorf("pull in offline mode: %v", err)
	}
}

func TestRejectPolicyKeepsEditsUntilRebase(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"conflict_policy":"reject"}`)
	ts.upload("ann", []gen.Record{{Key: "t", Value: []byte(`{"state":"open"}`)}, {Key: "u", Value: []byte(`1`)}})
	c := ts.client("ann", nil)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Merge("t", []byte(`{"state":"done"}`)))
	mustDo(t, c.Put("u", []byte(`2`)))
	ts.upload("ann", []gen.Record{{Key: "t", Value: []byte(`{"state":"blocked"}`)}, {Key: "u", Value: []byte(`1`)}})

	_, err = c.Sync(ctx)
	if !errors.Is(err, ErrRebaseNeeded) {
		t.Fatalf("sync under reject with a conflict: %v, want ErrRebaseNeeded", err)
	}
	s := c.Status()
	if s.State != StateError || s.Reason != ReasonPolicy || s.PendingEdits != 2 || s.Conflicts != 1 || !c.RebaseNeeded() {
		t.Fatalf("status: %+v", s)
	}
	cs, err := c.Conflicts()
	mustDo(t, err)
	if len(cs) != 1 || cs[0].Key != "t" || !cs[0].Pending || string(cs[0].ServerValue) != `{"state":"blocked"}` || len(cs[0].ClientValue) == 0 {
		t.Fatalf("conflicts: %+v", cs)
	}
	// Blocked: another sync sends nothing.
	if _, err := c.Sync(ctx); !errors.Is(err, ErrRebaseNeeded) {
		t.Errorf("second sync: %v", err)
	}
	// The user keeps their edit: rebase applies it over the server's data.
	res, err := c.Rebase(ctx)
	mustDo(t, err)
	if res.Pending != 0 || c.RebaseNeeded() {
		t.Errorf("rebase: %+v", res)
	}
	want := `{"key":"t","value":{"state":"done"}}` + "\n" + `{"key":"u","value":2}` + "\n"
	if got := ts.export("ann"); got != want {
		t.Errorf("server after rebase:\n%s", got)
	}
}

func TestDiscardEdits(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "t", Value: []byte(`1`)}})
	c := ts.client("ann", nil)
	mustDo(t, c.Put("t", []byte(`2`)))
	mustDo(t, c.Put("t", []byte(`3`)))
	mustDo(t, c.Put("v", []byte(`3`)))
	n, err := c.DiscardEdits("t")
	mustDo(t, err)
	if n != 2 || c.Status().PendingEdits != 1 {
		t.Errorf("discarded %d, %d pending", n, c.Status().PendingEdits)
	}
	_, err = c.Sync(context.Background())
	mustDo(t, err)
	if got, want := ts.export("ann"), `{"key":"t","value":1}`+"\n"+`{"key":"v","value":3}`+"\n"; got != want {
		t.Errorf("server:\n%s", got)
	}
}

func TestRejectedEditBecomesConflict(t *testing.T) {
	// The server's replay rejects an op it can never apply (a merge onto
	// a value that became an array, say). Such an edit leaves the queue and
	// is kept as a conflict with status rejected and the server's reason.
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`{"x":1}`)}})
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Put("ok", []byte(`1`)))
	mustDo(t, c.Merge("a", []byte(`{"y":2}`)))
	ft.answer = func(body []byte) string {
		return `{"version":1,"created":false,"receipts":[` +
			`{"index":0,"op":"put","key":"ok","status":"applied"},` +
			`{"index":1,"op":"merge","key":"a","status":"rejected","reason":"merge on a non-object value (array)"}],"conflicts":[]}`
	}
	res, err := c.Push(ctx)
	mustDo(t, err)
	if res.Pending != 0 || res.EditsRejected != 1 || res.EditsApplied != 1 {
		t.Errorf("push: %+v", res)
	}
	cs, err := c.Conflicts()
	mustDo(t, err)
	if len(cs) != 1 || cs[0].Key != "a" || cs[0].Status != "rejected" || cs[0].Reason != "merge on a non-object value (array)" || string(cs[0].ClientValue) != `{"y":2}` {
		t.Fatalf("conflicts: %+v", cs)
	}
	// The rejected edit left the view at once; the applied one stays until
	// its version is pulled.
	if got := get(t, c, "a"); got != `{"x":1}` {
		t.Errorf("Get(a) = %s", got)
	}
}

// TestDamagedChunkListIsRepairedByRefetching: a delta reads the synced
// chunk list page by page, where it changes (issue 13), and checks the
// whole by the stream hash. A page that does not decode, or one whose
// SHA-256s were changed (it decodes, the hash does not match), makes the
// pull a full sync that repairs it; nothing is installed from it.
func TestDamagedChunkListIsRepairedByRefetching(t *testing.T) {
	for _, damage := range []string{"garbage", "sums"} {
		t.Run(damage, func(t *testing.T) {
			damageIsRepaired(t, "chunk list", func(tx *bolt.Tx) error {
				damaged := 0
				for _, slot := range []string{"slot.a", "slot.b"} {
					pages := tx.Bucket([]byte(slot)).Bucket([]byte("pages"))
					if pages == nil {
						continue
					}
					k, v := pages.Cursor().Last() // far from the edit below
					v = slices.Clone(v)
					if damage == "garbage" {
						v = []byte("garbage")
					} else {
						_, n := binary.Uvarint(v)
						v[n+16] ^= 1 // the first entry's SHA-256 (after the count and the ID)
					}
					damaged++
					if err := pages.Put(slices.Clone(k), v); err != nil {
						return err
					}
				}
				if damaged != 1 {
					return fmt.Errorf("damaged %d chunk lists, want the live one", damaged)
				}
				return nil
			}, func(recs []gen.Record) []gen.Record { return editRecord(recs, 10, 1) })
		})
	}
}

// TestEveryConflictingEditOfAKeyKeepsBothSides: the server sends the two
// sides of a key's conflict once, on the key's last conflict receipt; each
// edit's conflict still shows both (issue 16 red-team).
func TestEveryConflictingEditOfAKeyKeepsBothSides(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"conflict_policy":"client-wins"}`)
	ts.upload("ann", []gen.Record{{Key: "t", Value: []byte(`{"state":"open"}`)}})
	c := ts.client("ann", nil)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Merge("t", []byte(`{"state":"started"}`)))
	mustDo(t, c.Merge("t", []byte(`{"state":"done"}`)))
	ts.upload("ann", []gen.Record{{Key: "t", Value: []byte(`{"state":"blocked"}`)}})
	_, err = c.Sync(ctx)
	mustDo(t, err)
	cs, err := c.Conflicts()
	mustDo(t, err)
	if len(cs) != 2 {
		t.Fatalf("%d conflicts, want one per edit: %+v", len(cs), cs)
	}
	for i, cf := range cs {
		if string(cf.ServerValue) != `{"state":"blocked"}` || string(cf.ClientValue) != `{"state":"done"}` {
			t.Errorf("conflict %d: client %s server %s, want both sides", i, cf.ClientValue, cf.ServerValue)
		}
	}
}
