package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/wire"
)

// realStores are the backends the gc and corruption tests run on: the
// directory store and the real S3 server (skipped without one, failed
// under CI).
var realStores = []struct {
	name string
	open func(t *testing.T) snapshot.Store
}{
	{"fs", func(t *testing.T) snapshot.Store {
		s, err := fsstore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

// eachRealStore runs fn on realStores and on each S3 server (s3test.Each).
func eachRealStore(t *testing.T, fn func(t *testing.T, st snapshot.Store)) {
	for _, sc := range realStores {
		t.Run(sc.name, func(t *testing.T) { fn(t, sc.open(t)) })
	}
	t.Run("s3", func(t *testing.T) {
		s3test.Each(t, func(t *testing.T, srv s3test.Server) { fn(t, srv.Store(t)) })
	})
}

// editRecord returns recs with record i given a new value (n makes it
// differ from every other edit).
func editRecord(recs []gen.Record, i, n int) []gen.Record {
	out := slices.Clone(recs)
	out[i].Value = fmt.Appendf(nil, `{"edit":%d,"note":"edited %d times"}`, n, n)
	return out
}

// syncPack fetches path and decodes the delta pack like a client holding
// lc. It returns the pack's header, or the error that ended the pack (the
// transport's or the reader's), or a *response for a non-delta answer.
func (e *testEnv) syncPack(tok, path string, lc *localCopy) (wire.SyncHeader, *response, error) {
	e.t.Helper()
	resp, err := e.get(path, tok)
	if err != nil {
		return wire.SyncHeader{}, nil, err
	}
	if resp.status != 200 || resp.header["Content-Type"] != wire.ContentTypeDelta {
		return wire.SyncHeader{}, &resp, nil
	}
	h, list, got, err := lc.decodePack(resp.body)
	if err != nil {
		return h, nil, err
	}
	if h.Skip == 0 {
		lc.install(h, list, got)
	}
	return h, nil, nil
}

// String shows an answer in a failure message.
func (r *response) String() string {
	if r == nil {
		return "(no answer)"
	}
	return fmt.Sprintf("answer %d %s %q", r.status, r.header["Content-Type"], r.body)
}

// get sends a GET and returns the whole answer, or the transport error (a
// stream cut after the 200 shows here).
func (e *testEnv) get(path, tok string) (response, error) {
	e.t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://deltasync.test" + path)
	withToken(tok)(req)
	if err := e.client.DoTimeout(req, resp, 30*time.Second); err != nil {
		return response{}, err
	}
	r := response{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...), header: map[string]string{}}
	for k, v := range resp.Header.All() {
		r.header[string(k)] = string(v)
	}
	return r, nil
}

// editVersions uploads n versions of one user after the current one, each
// editing record i again, so that every version's changed chunk sits in a
// pack of its own that the next version no longer references.
func (e *testEnv) editVersions(org, user string, recs []gen.Record, i, n int) []gen.Record {
	e.t.Helper()
	cur := recs
	for k := 1; k <= n; k++ {
		cur = editRecord(cur, i, k)
		e.upload(org, user, cur)
	}
	return cur
}

func agedClock() func() time.Time {
	now := time.Now().Add(2 * time.Hour)
	return func() time.Time { return now }
}

// packsOf returns the pack keys a version references.
func packsOf(t *testing.T, st snapshot.Store, org, user string, v uint64) []string {
	t.Helper()
	m, err := snapshot.ReadManifest(t.Context(), st, org, user, v)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range m.Packs {
		out = append(out, snapshot.PackKey(org, user, p))
	}
	return out
}

// TestSyncFromVersionRetiredByGC: a device at a version that gc retired
// while the server had its manifest cached gets a full sync, the same one
// a replica without the cache gives, and never a truncated 200.
func TestSyncFromVersionRetiredByGC(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) {
		e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
		e.client.MaxResponseBodySize = 16 << 20
		e.enableOrg("acme")
		recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 11})
		i := len(recs) / 2
		e.upload("acme", "alice", recs)
		e.editVersions("acme", "alice", recs, i, 1) // v2
		tok := userToken(t, "acme", "alice")
		dev := &localCopy{chunks: map[snapshot.ChunkID][]byte{}}
		e.pull(tok, dev) // the device is at v2; the server has v2's manifest cached
		if dev.version != 2 {
			t.Fatalf("device at %d, want 2", dev.version)
		}
		v2packs := packsOf(t, st, "acme", "alice", 2)
		final := editRecordsAgain(e, recs, i)

		rep, err := gc.Run(t.Context(), st, gc.Options{KeepVersions: 2, Now: agedClock()})
		if err != nil || rep.VersionsDeleted != 2 {
			t.Fatalf("gc: %v, %+v", err, rep)
		}
		gone := 0
		for _, k := range v2packs {
			if _, err := st.Stat(t.Context(), k); errors.Is(err, snapshot.ErrNotExist) {
				gone++
			}
		}
		if gone == 0 {
			t.Fatal("setup: gc left every pack of version 2 (the test needs one gone)")
		}

		other := newTestEnv(t, envConfig{store: st, opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
		other.client.MaxResponseBodySize = 16 << 20
		for name, env := range map[string]*testEnv{"replica with the manifest cached": e, "fresh replica": other} {
			for attempt := range 2 {
				lc := &localCopy{version: dev.version, list: dev.list, chunks: maps.Clone(dev.chunks)}
				h, r, err := env.syncPack(tok, "/v1/sync?from=2", lc)
				if err != nil || r != nil {
					t.Fatalf("%s, attempt %d: sync from the retired version: %v %s", name, attempt, err, r)
				}
				if h.From != 0 || h.To != 4 || lc.version != 4 || !bytes.Equal(lc.stream(), streamOf(final)) {
					t.Fatalf("%s, attempt %d: pack %d→%d, device at %d, stream equal %v; want a full sync to 4",
						name, attempt, h.From, h.To, lc.version, bytes.Equal(lc.stream(), streamOf(final)))
				}
			}
		}
	})
}

func editRecordsAgain(e *testEnv, recs []gen.Record, i int) []gen.Record {
	e.t.Helper()
	v3 := editRecord(editRecord(recs, i, 1), i, 2)
	e.upload("acme", "alice", v3)
	v4 := editRecord(v3, i, 3)
	e.upload("acme", "alice", v4)
	return v4
}

// TestResumeOfVersionRetiredByGC: resuming the download of a version that
// gc retired answers 404 (the client starts again), not a pack cut short
// where the deleted pack's chunks should be.
func TestResumeOfVersionRetiredByGC(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) {
		e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
		e.client.MaxResponseBodySize = 16 << 20
		e.enableOrg("acme")
		recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 12})
		i := len(recs) / 2
		e.upload("acme", "alice", recs)
		e.editVersions("acme", "alice", recs, i, 1) // v2
		tok := userToken(t, "acme", "alice")
		e.pull(tok, &localCopy{chunks: map[snapshot.ChunkID][]byte{}}) // caches v2
		editRecordsAgain(e, recs, i)
		if _, err := gc.Run(t.Context(), st, gc.Options{KeepVersions: 2, Now: agedClock()}); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/v1/sync?from=0&to=2&skip=1", "/v1/sync?from=2&to=4&skip=0", "/v1/sync?from=1&to=4&skip=1"} {
			r, err := e.get(path, tok)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			if r.status != 404 {
				t.Fatalf("GET %s: %d %q, want 404", path, r.status, r.header["Content-Type"])
			}
			if d := r.errBody(t); d.Code != wire.CodeNotFound {
				t.Errorf("GET %s: code %q", path, d.Code)
			}
		}
	})
}

// corruptObject flips one byte of key at offset off.
func corruptObject(t *testing.T, st snapshot.Store, key string, off int) {
	t.Helper()
	b, err := snapshot.GetBytes(t.Context(), st, key, 0)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x5a
	if _, err := st.Put(t.Context(), key, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

// corruptChunk flips a byte in the middle of chunk idx of version v's
// stored frame and returns the pack's key.
func corruptChunk(t *testing.T, st snapshot.Store, org, user string, v uint64, idx int) string {
	t.Helper()
	m, err := snapshot.ReadManifest(t.Context(), st, org, user, v)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Chunks[idx]
	key := snapshot.PackKey(org, user, m.Packs[c.Pack])
	corruptObject(t, st, key, int(c.Offset)+int(c.StoredLen)/2)
	return key
}

var corruptMetric = regexp.MustCompile(`(?m)^deltasync_corrupt_objects_total\{kind="(\w+)"\} (\d+)$`)

// corruptCount scrapes /metrics for the corruption counter of kind.
func (e *testEnv) corruptCount(kind string) int {
	e.t.Helper()
	r := e.do("GET", "/metrics", nil)
	for _, m := range corruptMetric.FindAllStringSubmatch(string(r.body), -1) {
		if m[1] == kind {
			n, _ := strconv.Atoi(m[2])
			return n
		}
	}
	return 0
}

// TestSyncCorruptPackIs500 checks that a flipped byte in a pack makes the
// sync answer a JSON 500 before anything is streamed, logs the pack's name
// at ERROR and counts it in /metrics.
func TestSyncCorruptPackIs500(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) {
		e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
		e.client.MaxResponseBodySize = 16 << 20
		e.enableOrg("acme")
		recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 13})
		e.upload("acme", "alice", recs)
		m, err := snapshot.ReadManifest(t.Context(), st, "acme", "alice", 1)
		if err != nil {
			t.Fatal(err)
		}
		key := corruptChunk(t, st, "acme", "alice", 1, len(m.Chunks)-1)
		tok := userToken(t, "acme", "alice")
		for attempt := 1; attempt <= 2; attempt++ {
			r, err := e.get("/v1/sync?from=0", tok)
			if err != nil {
				t.Fatalf("attempt %d: sync over a corrupt pack: %v (want a 500 answer, not a cut stream)", attempt, err)
			}
			if r.status != 500 {
				t.Fatalf("attempt %d: status %d %q, want 500", attempt, r.status, r.header["Content-Type"])
			}
			if d := r.errBody(t); d.Code != wire.CodeInternal {
				t.Errorf("code %q", d.Code)
			}
			if n := e.corruptCount("pack"); n != attempt {
				t.Errorf("after %d syncs deltasync_corrupt_objects_total{kind=\"pack\"} = %d", attempt, n)
			}
		}
		if !logHas(e.logs.String(), "ERROR", key) {
			t.Errorf("no ERROR log line names %s:\n%s", key, e.logs.String())
		}
	})
}

// logHas reports whether a JSON log line has level and mentions s.
func logHas(logs, level, s string) bool {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"level":"`+level+`"`) && strings.Contains(line, s) {
			return true
		}
	}
	return false
}

// TestSyncCorruptBaseManifestFallsBackToFullSync: when the manifest of the
// client's version is damaged, the client gets a full sync of the head
// (and the damage is logged and counted), not a 500 on every retry.
func TestSyncCorruptBaseManifestFallsBackToFullSync(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) {
		e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
		e.client.MaxResponseBodySize = 16 << 20
		e.enableOrg("acme")
		recs := gen.Dataset(gen.Options{Size: 128 << 10, Seed: 14})
		e.upload("acme", "alice", recs)
		final := e.editVersions("acme", "alice", recs, 3, 1)
		key := snapshot.ManifestKey("acme", "alice", 1)
		b, err := snapshot.GetBytes(t.Context(), st, key, 0)
		if err != nil {
			t.Fatal(err)
		}
		corruptObject(t, st, key, len(b)-8)
		tok := userToken(t, "acme", "alice")
		lc := &localCopy{version: 1, chunks: map[snapshot.ChunkID][]byte{}}
		h, r, err := e.syncPack(tok, "/v1/sync?from=1", lc)
		if err != nil || r != nil {
			t.Fatalf("sync from a version with a corrupt manifest: %v %s", err, r)
		}
		if h.From != 0 || lc.version != 2 || !bytes.Equal(lc.stream(), streamOf(final)) {
			t.Fatalf("pack %d→%d: want a full sync to 2", h.From, h.To)
		}
		if n := e.corruptCount("manifest"); n != 1 {
			t.Errorf("corrupt manifests counted: %d, want 1", n)
		}
		if !logHas(e.logs.String(), "ERROR", key) {
			t.Errorf("no ERROR log line names %s", key)
		}
	})
}

// statLiesOnce makes the first Stat of key report that it exists, as a
// Stat that ran just before gc deleted it would.
func statLiesOnce(e *testEnv, key string) {
	var once sync.Once
	e.store.StatFunc = func(ctx context.Context, k string) (snapshot.ObjectInfo, error) {
		lie := false
		if k == key {
			once.Do(func() { lie = true })
		}
		if lie {
			return snapshot.ObjectInfo{Key: k}, nil
		}
		return e.store.Store.Stat(ctx, k)
	}
}

// gcScenario builds v1..v4 of acme/alice (record i edited in each of v2..v4),
// brings a device to v2 (so the server has v2's manifest cached), and
// retires v1 and v2 with a real gc run. It returns the device and v4.
func gcScenario(t *testing.T, e *testEnv, st snapshot.Store, tok string) (*localCopy, []gen.Record) {
	t.Helper()
	e.enableOrg("acme")
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 15})
	i := len(recs) / 2
	e.upload("acme", "alice", recs)
	e.editVersions("acme", "alice", recs, i, 1)
	dev := &localCopy{chunks: map[snapshot.ChunkID][]byte{}}
	e.pull(tok, dev)
	final := editRecordsAgain(e, recs, i)
	if _, err := gc.Run(t.Context(), st, gc.Options{KeepVersions: 2, Now: agedClock()}); err != nil {
		t.Fatal(err)
	}
	return dev, final
}

// TestSyncSurvivesGCDuringDelta: when gc deletes the client's version
// between the server's check and the pack (its old chunks, read only as
// dictionaries, are gone), the pack is still complete: those chunks go
// whole. The version is then forgotten, so the next sync is a full one.
func TestSyncSurvivesGCDuringDelta(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) {
		e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
		e.client.MaxResponseBodySize = 16 << 20
		tok := userToken(t, "acme", "alice")
		dev, final := gcScenario(t, e, st, tok)
		statLiesOnce(e, snapshot.ManifestKey("acme", "alice", 2))
		for _, wantFrom := range []uint64{2, 0} {
			lc := &localCopy{version: dev.version, list: dev.list, chunks: maps.Clone(dev.chunks)}
			h, r, err := e.syncPack(tok, "/v1/sync?from=2", lc)
			if err != nil || r != nil {
				t.Fatalf("sync from 2 (want a pack from %d): %v %s", wantFrom, err, r)
			}
			if h.From != wantFrom || lc.version != 4 || !bytes.Equal(lc.stream(), streamOf(final)) {
				t.Fatalf("pack %d→%d, stream equal %v; want a complete pack from %d", h.From, h.To, bytes.Equal(lc.stream(), streamOf(final)), wantFrom)
			}
		}
		if !logHas(e.logs.String(), "WARN", "without dictionaries") {
			t.Error("the old version's chunks were never found missing: the test did not race gc")
		}
	})
}

// TestResumeRetiredWhileSending: a version gc retires between the server's
// check and the reading of its chunks answers 404 before anything is sent,
// or, once the pack has begun, ends it with a 404 abort frame.
func TestResumeRetiredWhileSending(t *testing.T) {
	for _, window := range []int64{2 << 20, 1} {
		t.Run(fmt.Sprintf("window %d", window), func(t *testing.T) {
			st, err := fsstore.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) {
				o.ChunkSecret = []byte("chunk-secret")
				o.SyncVerifyBytes = window
			}})
			e.client.MaxResponseBodySize = 16 << 20
			tok := userToken(t, "acme", "alice")
			gcScenario(t, e, st, tok)
			statLiesOnce(e, snapshot.ManifestKey("acme", "alice", 2))
			lc := &localCopy{chunks: map[snapshot.ChunkID][]byte{}}
			_, r, err := e.syncPack(tok, "/v1/sync?from=0&to=2&skip=0", lc)
			var ae *wire.AbortError
			switch {
			case window > 1 && r != nil && r.status == 404:
				r.errBody(t)
			case window == 1 && errors.As(err, &ae) && ae.Status == 404 && ae.Code == wire.CodeNotFound:
			default:
				t.Fatalf("resume of a version retired while sending: %v %s", err, r)
			}
			if n := e.corruptCount("pack"); n != 0 {
				t.Errorf("a retired version counted as %d corrupt packs", n)
			}
		})
	}
}

// TestSyncCorruptionMidStream: damage found after the 200 (past the
// verified window) ends the pack with a 500 abort frame, after the chunks
// before it; it is logged at ERROR with the pack's name and counted.
func TestSyncCorruptionMidStream(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) {
		e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) {
			o.ChunkSecret = []byte("chunk-secret")
			o.SyncVerifyBytes = 64 << 10
		}})
		e.client.MaxResponseBodySize = 16 << 20
		e.enableOrg("acme")
		e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 512 << 10, Seed: 16}))
		m, err := snapshot.ReadManifest(t.Context(), st, "acme", "alice", 1)
		if err != nil {
			t.Fatal(err)
		}
		key := corruptChunk(t, st, "acme", "alice", 1, len(m.Chunks)-1)
		_, r, err := e.syncPack(userToken(t, "acme", "alice"), "/v1/sync?from=0", &localCopy{chunks: map[snapshot.ChunkID][]byte{}})
		var ae *wire.AbortError
		if r != nil || !errors.As(err, &ae) || ae.Status != 500 || ae.Code != wire.CodeInternal {
			t.Fatalf("sync over a pack damaged past the window: %v %s, want a 500 abort frame", err, r)
		}
		if n := e.corruptCount("pack"); n != 1 {
			t.Errorf("corrupt packs counted: %d, want 1", n)
		}
		if !logHas(e.logs.String(), "ERROR", key) {
			t.Errorf("no ERROR log line names %s", key)
		}
	})
}

// TestSyncMissingPackOfLiveVersion: a pack that a version still in the
// store references is gone (an operator's mistake, a broken bucket): that
// is damage, a 500 counted and logged, not a 404 that would send the
// client off to discard its data.
func TestSyncMissingPackOfLiveVersion(t *testing.T) {
	st, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
	e.enableOrg("acme")
	e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 64 << 10, Seed: 17}))
	pk := packsOf(t, st, "acme", "alice", 1)[0]
	if err := st.Delete(t.Context(), pk); err != nil {
		t.Fatal(err)
	}
	r, err := e.get("/v1/sync?from=0", userToken(t, "acme", "alice"))
	if err != nil || r.status != 500 {
		t.Fatalf("sync with a pack missing: %v %d %s", err, r.status, r.body)
	}
	if d := r.errBody(t); d.Code != wire.CodeInternal {
		t.Errorf("code %q", d.Code)
	}
	if n := e.corruptCount("pack"); n != 1 {
		t.Errorf("missing packs counted: %d, want 1", n)
	}
	if !logHas(e.logs.String(), "ERROR", pk) {
		t.Errorf("no ERROR log line names %s", pk)
	}
}
