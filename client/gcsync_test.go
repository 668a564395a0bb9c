package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

// eachRealStore runs fn on the directory store and on each S3 server
// (skipped without one, failed under CI).
func eachRealStore(t *testing.T, fn func(t *testing.T, st snapshot.Store)) {
	t.Run("fs", func(t *testing.T) {
		st, err := fsstore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		fn(t, st)
	})
	t.Run("s3", func(t *testing.T) {
		s3test.Each(t, func(t *testing.T, srv s3test.Server) { fn(t, srv.Store(t)) })
	})
}

// newTestServerOn starts a server like newTestServer, on st (another
// replica, if st already has one).
func newTestServerOn(t *testing.T, st snapshot.Store) *testServer {
	t.Helper()
	return newTestServerWith(t, func(o *server.Options) { o.Store = st })
}

// editRecord returns recs with record i given a new value.
func editRecord(recs []gen.Record, i, n int) []gen.Record {
	out := slices.Clone(recs)
	out[i].Value = fmt.Appendf(nil, `{"edit":%d}`, n)
	return out
}

// TestPullFromVersionRetiredByGC: devices at a version that gc retired
// while servers run (one replica still has its manifest cached, one never
// saw it) sync to the head with a full sync, first try, no restart.
func TestPullFromVersionRetiredByGC(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) {
		ctx := context.Background()
		ts := newTestServerOn(t, st)
		recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 31})
		i := len(recs) / 2
		ts.upload("ann", recs)
		ts.upload("ann", editRecord(recs, i, 1))
		devs := []*Client{ts.client("ann", nil), ts.client("ann", nil)}
		for _, c := range devs {
			if res, err := c.Pull(ctx); err != nil || res.Version != 2 {
				t.Fatalf("first pull: %+v, %v", res, err)
			}
		}
		ts.upload("ann", editRecord(recs, i, 2))
		ts.upload("ann", editRecord(recs, i, 3))
		rep, err := gc.Run(ctx, st, gc.Options{KeepVersions: 2, Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
		if err != nil || rep.VersionsDeleted != 2 || rep.PacksDeleted == 0 {
			t.Fatalf("gc: %v %+v", err, rep)
		}
		fresh := newTestServerOn(t, st)
		if err := devs[1].SetServer(fresh.url, fresh.token("ann")); err != nil {
			t.Fatal(err)
		}
		for k, c := range devs {
			res, err := c.Pull(ctx)
			if err != nil {
				t.Fatalf("device %d: pull from the retired version: %v (status %+v)", k, err, c.Status())
			}
			if res.Version != 4 || !res.Full || exportOf(t, c) != ts.export("ann") {
				t.Fatalf("device %d: %+v; want a full sync to 4 equal to the server", k, res)
			}
			if st := c.Status(); st.State != StateSynced {
				t.Fatalf("device %d: status %+v", k, st)
			}
		}
	})
}

// corruptChunk flips a byte in the middle of chunk idx of the user's
// version v and returns a function that restores it.
func corruptChunk(t *testing.T, st snapshot.Store, user string, v uint64, idx int) (key string, restore func()) {
	t.Helper()
	ctx := context.Background()
	m, err := snapshot.ReadManifest(ctx, st, testOrg, user, v)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Chunks[idx]
	key = snapshot.PackKey(testOrg, user, m.Packs[c.Pack])
	orig, err := snapshot.GetBytes(ctx, st, key, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(orig)
	bad[int(c.Offset)+int(c.StoredLen)/2] ^= 0x5a
	if _, err := st.Put(ctx, key, bytes.NewReader(bad), int64(len(bad))); err != nil {
		t.Fatal(err)
	}
	return key, func() {
		if _, err := st.Put(ctx, key, bytes.NewReader(orig), int64(len(orig))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCorruptPackIsServerError: a damaged pack on the server shows on the
// device as error (server), never as offline (no_connection), whether the
// server finds the damage before it answers (a 500) or after the 200 (an
// abort frame); in the second case the chunks verified before it are kept
// and the pull after the repair resumes after them.
func TestCorruptPackIsServerError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int64
		resume bool
	}{
		{"found before the answer", 256 << 10, false},
		{"found mid-stream", 6 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st, err := fsstore.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ts := newTestServerOn(t, st)
			ts.upload("ann", gen.Dataset(gen.Options{Size: tc.size, Seed: 32}))
			m, err := snapshot.ReadManifest(ctx, st, testOrg, "ann", 1)
			if err != nil {
				t.Fatal(err)
			}
			_, restore := corruptChunk(t, st, "ann", 1, len(m.Chunks)-1)
			c := ts.client("ann", nil)
			for attempt := range 2 {
				_, err := c.Pull(ctx)
				if !errors.Is(err, ErrServer) || errors.Is(err, ErrNoConnection) {
					t.Fatalf("attempt %d: pull over a corrupt pack: %v; want a server error", attempt, err)
				}
				if s := c.Status(); s.State != StateError || s.Reason != ReasonServer {
					t.Fatalf("attempt %d: status %s (%s) %q; want error (server)", attempt, s.State, s.Reason, s.Message)
				}
			}
			restore()
			res, err := c.Pull(ctx)
			if err != nil || res.Version != 1 || res.Resumed != tc.resume || exportOf(t, c) != ts.export("ann") {
				t.Fatalf("pull after the repair: %+v, %v; want version 1, resumed %v", res, err, tc.resume)
			}
		})
	}
}

// abortingServer answers /v1/sync from a store of its own: the first
// answer is a pack from 0 to version 1 cut short by a 404 abort frame (gc
// retired version 1 while it was being sent), every later one a whole pack
// from 0 to version 2. It records the queries.
type abortingServer struct {
	st      snapshot.Store
	m1, m2  *snapshot.Manifest
	mu      sync.Mutex
	queries []string
}

var abortSecret = []byte("abort-test-secret-0123456789")

func newAbortingServer(t *testing.T) *abortingServer {
	t.Helper()
	st := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 512 << 10, Seed: 33})
	build := func(recs []gen.Record) *snapshot.Manifest {
		o := snapshot.DefaultBuildOptions()
		o.Org, o.User, o.Secret = testOrg, "ann", abortSecret
		res, _, err := diff.BuildVersion(context.Background(), st, o, gen.NewSource(recs))
		if err != nil {
			t.Fatal(err)
		}
		return res.Manifest
	}
	return &abortingServer{st: st, m1: build(recs), m2: build(gen.EditScattered(recs, 3, 1))}
}

func (a *abortingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.queries = append(a.queries, r.URL.RawQuery)
	first := len(a.queries) == 1
	a.mu.Unlock()
	m := a.m2
	if first {
		m = a.m1
	}
	src := wire.DeltaSource{Script: diff.Manifests(nil, m), NewChunks: snapshot.NewReader(a.st, m, abortSecret)}
	src.Header.Org, src.Header.User, src.Header.To = testOrg, "ann", m.Version
	src.Header.IDSeeds = snapshot.NewHasher(abortSecret, testOrg, "ann").Seeds()
	src.Header.Policy = wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyClientWins}
	if first {
		src.NewChunks = failAt{r: src.NewChunks, at: len(m.Chunks) / 2}
		src.Abort = func(error) *wire.AbortError {
			return &wire.AbortError{Status: 404, Code: wire.CodeNotFound, Message: "version 1 was retired while it was being sent"}
		}
	}
	w.Header().Set("Content-Type", wire.ContentTypeDelta)
	wire.WriteDelta(r.Context(), w, src)
}

// failAt fails with ErrNotExist when it reaches chunk at.
type failAt struct {
	r  snapshot.ChunkGetter
	at int
}

func (f failAt) Chunks(ctx context.Context, idx []int, fn func(int, []byte) error) error {
	for k, i := range idx {
		if i == f.at {
			if err := f.r.Chunks(ctx, idx[:k], fn); err != nil {
				return err
			}
			return snapshot.ErrNotExist
		}
	}
	return f.r.Chunks(ctx, idx, fn)
}

// TestPullRestartsOnRetiredAbort: a pack the server ends with a 404 abort
// frame (the version it was sending is gone) makes the client drop that
// download and ask again for the head at once, within the same Pull.
func TestPullRestartsOnRetiredAbort(t *testing.T) {
	a := newAbortingServer(t)
	hs := httptest.NewServer(a)
	defer hs.Close()
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = hs.URL, "any"
	c, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Pull(context.Background())
	if err != nil || res.Version != 2 || !res.Full || res.Resumed {
		t.Fatalf("pull: %+v, %v; want a fresh full sync to 2", res, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.queries) != 2 || strings.Contains(a.queries[1], "to=") {
		t.Fatalf("queries %q; want a second one without to= (not a resume of the retired version)", a.queries)
	}
	// The install verified every chunk and the stream hash of version 2.
	if n := strings.Count(exportOf(t, c), "\n"); n != int(a.m2.Records) {
		t.Fatalf("%d records after the pull, version 2 has %d", n, a.m2.Records)
	}
}
