package gc_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// storeCases is the one table every gc test runs against; the S3 servers
// (versitygw, MinIO) are added by eachStore, one subtest each.
var storeCases = []struct {
	name string
	open func(t *testing.T) snapshot.Store
}{
	{"mem", func(t *testing.T) snapshot.Store { return memstore.New() }},
	{"fs", func(t *testing.T) snapshot.Store {
		s, err := fsstore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}},
}

// eachStore runs fn once per backend; open gives a fresh, empty store.
func eachStore(t *testing.T, fn func(t *testing.T, open func(*testing.T) snapshot.Store)) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) { fn(t, sc.open) })
	}
	t.Run("s3", func(t *testing.T) {
		s3test.Each(t, func(t *testing.T, srv s3test.Server) {
			fn(t, func(t *testing.T) snapshot.Store { return srv.Store(t) })
		})
	})
}

// aged returns a clock two hours ahead, so that with the default grace of
// an hour every object written so far counts as old.
func aged() func() time.Time {
	now := time.Now().Add(2 * time.Hour)
	return func() time.Time { return now }
}

// fixture builds versions and remembers what each should read back as.
type fixture struct {
	t      *testing.T
	s      snapshot.Store
	secret []byte
	recs   map[string]map[uint64][]gen.Record       // "org/user" → version → records
	mans   map[string]map[uint64]*snapshot.Manifest // as committed
}

func newFixture(t *testing.T, s snapshot.Store) *fixture {
	t.Helper()
	secret, err := snapshot.LoadOrCreateSecret(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, s: s, secret: secret,
		recs: map[string]map[uint64][]gen.Record{}, mans: map[string]map[uint64]*snapshot.Manifest{}}
}

func (f *fixture) buildOpts(org, user string, created time.Time) snapshot.BuildOptions {
	o := snapshot.DefaultBuildOptions()
	o.Org, o.User, o.Secret = org, user, f.secret
	o.PackSize = 24 << 10 // several packs per version, so packs are shared across versions
	o.Workers = 2
	o.Now = func() time.Time { return created }
	return o
}

// build commits recs as the next version of org/user, created at created.
func (f *fixture) build(org, user string, recs []gen.Record, created time.Time) *snapshot.Manifest {
	f.t.Helper()
	res, _, err := diff.BuildVersion(context.Background(), f.s, f.buildOpts(org, user, created), gen.NewSource(recs))
	if err != nil {
		f.t.Fatal(err)
	}
	if res.Unchanged {
		f.t.Fatalf("build %s/%s: unchanged", org, user)
	}
	f.remember(res.Manifest, recs)
	return res.Manifest
}

func (f *fixture) remember(m *snapshot.Manifest, recs []gen.Record) {
	u := m.Org + "/" + m.User
	if f.recs[u] == nil {
		f.recs[u] = map[uint64][]gen.Record{}
		f.mans[u] = map[uint64]*snapshot.Manifest{}
	}
	f.recs[u][m.Version] = recs
	f.mans[u][m.Version] = m
}

// history builds n versions of org/user from one data set, each an edit
// of the one before, and returns the manifests.
func (f *fixture) history(org, user string, seed int64, created []time.Time) []*snapshot.Manifest {
	f.t.Helper()
	recs := gen.Dataset(gen.Options{Size: 300 << 10, Seed: seed})
	var out []*snapshot.Manifest
	for i, c := range created {
		switch i % 4 {
		case 1:
			recs = gen.EditScattered(recs, 5, seed+int64(i))
		case 2:
			recs = gen.ChangeFraction(recs, 0.3, seed+int64(i))
		case 3:
			recs = gen.DeleteRandom(recs, 20, seed+int64(i))
		}
		if i > 0 && i%4 == 0 {
			recs = gen.InsertInterleaved(recs, 30, seed+int64(i))
		}
		out = append(out, f.build(org, user, recs, c))
	}
	return out
}

// verify reads version v back through a verifying Reader and compares it
// with what was built, and reads its change set.
func (f *fixture) verify(org, user string, v uint64) {
	f.t.Helper()
	ctx := context.Background()
	m, err := snapshot.ReadManifest(ctx, f.s, org, user, v)
	if err != nil {
		f.t.Fatalf("version %d of %s/%s: %v", v, org, user, err)
	}
	var got []gen.Record
	err = snapshot.NewReader(f.s, m, f.secret).Records(ctx, func(k, val []byte) error {
		got = append(got, gen.Record{Key: string(k), Value: bytes.Clone(val)})
		return nil
	})
	if err != nil {
		f.t.Fatalf("read version %d of %s/%s: %v", v, org, user, err)
	}
	want := f.recs[org+"/"+user][v]
	if len(got) != len(want) {
		f.t.Fatalf("version %d of %s/%s: got %d records, want %d", v, org, user, len(got), len(want))
	}
	for i := range got {
		if got[i].Key != want[i].Key || !bytes.Equal(got[i].Value, want[i].Value) {
			f.t.Fatalf("version %d of %s/%s: record %d is %q, want %q", v, org, user, i, got[i].Key, want[i].Key)
		}
	}
	if _, err := diff.ReadChangeSet(ctx, f.s, m); err != nil {
		f.t.Fatalf("change set of version %d of %s/%s: %v", v, org, user, err)
	}
}

// listing returns every object of the store by key.
func listing(t *testing.T, s snapshot.Store) map[string]snapshot.ObjectInfo {
	t.Helper()
	out := map[string]snapshot.ObjectInfo{}
	err := s.List(context.Background(), "", func(oi snapshot.ObjectInfo) error {
		out[oi.Key] = oi
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// gone returns the objects of before that after lacks, sorted by key.
func gone(before, after map[string]snapshot.ObjectInfo) []snapshot.ObjectInfo {
	var out []snapshot.ObjectInfo
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			out = append(out, before[k])
		}
	}
	return out
}

// putObject writes a small object directly.
func putObject(t *testing.T, s snapshot.Store, key, body string) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

func mustNotExist(t *testing.T, s snapshot.Store, key string) {
	t.Helper()
	if _, err := s.Stat(context.Background(), key); !errors.Is(err, snapshot.ErrNotExist) {
		t.Fatalf("%s: got err %v, want it deleted", key, err)
	}
}

func mustExist(t *testing.T, s snapshot.Store, key string) {
	t.Helper()
	if _, err := s.Stat(context.Background(), key); err != nil {
		t.Fatalf("%s: %v, want it kept", key, err)
	}
}

// packKeys returns the pack objects of org/user (not the other objects the
// tests put below packs/).
func packKeys(t *testing.T, s snapshot.Store, org, user string) []string {
	t.Helper()
	var out []string
	prefix := snapshot.UserPrefix(org, user) + "packs/"
	err := s.List(context.Background(), prefix, func(oi snapshot.ObjectInfo) error {
		if name, ok := strings.CutSuffix(strings.TrimPrefix(oi.Key, prefix), ".pack"); ok && !strings.Contains(name, "/") {
			out = append(out, oi.Key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// livePacks returns the pack keys the given manifests reference, sorted.
func livePacks(ms ...*snapshot.Manifest) []string {
	set := map[string]bool{}
	for _, m := range ms {
		for _, p := range m.Packs {
			set[snapshot.PackKey(m.Org, m.User, p)] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// hooked wraps s so that hook runs before every call of op, with its key;
// then the call goes on to s.
func hooked(s snapshot.Store, op storetest.Op, hook func(key string)) *storetest.Faults {
	f := storetest.Wrap(s)
	f.Before = func(_ context.Context, o storetest.Op, key string) error {
		if o == op {
			hook(key)
		}
		return nil
	}
	return f
}
