package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

func buildOpts(org, user string) snapshot.BuildOptions {
	o := snapshot.DefaultBuildOptions()
	o.Org, o.User, o.Secret = org, user, testSecret
	o.Now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	return o
}

// buildCommit builds recs on top of the head and commits the result.
func buildCommit(t testing.TB, s snapshot.Store, opts snapshot.BuildOptions, recs []gen.Record) *snapshot.BuildResult {
	t.Helper()
	ctx := context.Background()
	res, err := snapshot.Build(ctx, s, opts, source(recs))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Unchanged {
		if err := snapshot.Commit(ctx, s, res.Manifest); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

func streamOf(recs []gen.Record) []byte {
	var b []byte
	for _, r := range recs {
		b = snapshot.AppendRecord(b, r.Key, r.Value)
	}
	return b
}

// readAll reads version v back through a Reader and returns its records.
func readAll(t testing.TB, s snapshot.Store, org, user string, v uint64) ([]gen.Record, error) {
	t.Helper()
	ctx := context.Background()
	m, err := snapshot.ReadManifest(ctx, s, org, user, v)
	if err != nil {
		return nil, err
	}
	var out []gen.Record
	err = snapshot.NewReader(s, m, testSecret).Records(ctx, func(k, v []byte) error {
		out = append(out, gen.Record{Key: string(k), Value: bytes.Clone(v)})
		return nil
	})
	return out, err
}

func sameRecords(t testing.TB, got, want []gen.Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Key != want[i].Key || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Fatalf("record %d: got %q, want %q", i, got[i].Key, want[i].Key)
		}
	}
}

func TestBuildReadRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 2})
	opts := buildOpts("acme", "alice")
	opts.PackSize = 64 << 10 // several packs
	res := buildCommit(t, s, opts, recs)
	m := res.Manifest
	if m.Version != 1 || m.Parent != 0 || m.Records != uint64(len(recs)) || len(m.Packs) < 2 {
		t.Fatalf("manifest: version %d parent %d records %d packs %d", m.Version, m.Parent, m.Records, len(m.Packs))
	}
	var pieces [][]byte
	stream := streamOf(recs)
	for _, c := range m.Chunks {
		pieces = append(pieces, stream[:c.Size])
		stream = stream[c.Size:]
	}
	if got, want := m.StreamHash, snapshot.StreamHashOf(pieces); got != want {
		t.Fatalf("manifest stream hash %x, want %x", got, want)
	}
	if head, err := snapshot.Head(ctx, s, "acme", "alice"); err != nil || head != 1 {
		t.Fatalf("Head = %d, %v; want 1", head, err)
	}
	got, err := readAll(t, s, "acme", "alice", 1)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, recs)

	var out bytes.Buffer
	if err := snapshot.NewReader(s, m, testSecret).WriteStream(ctx, &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), streamOf(recs)) {
		t.Fatal("WriteStream differs from the canonical stream")
	}
	bad := *m
	bad.StreamHash[0] ^= 1
	if err := snapshot.NewReader(s, &bad, testSecret).WriteStream(ctx, io.Discard); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("wrong stream hash: err = %v, want ErrCorrupt", err)
	}
}

func TestRebuildWrites(t *testing.T) {
	s := snapshot.NewCountingStore(memstore.New())
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 4})
	opts := buildOpts("acme", "bob")
	buildCommit(t, s, opts, recs)

	before := s.Counts()
	res := buildCommit(t, s, opts, recs)
	if d := s.Counts().Writes() - before.Writes(); !res.Unchanged || d != 0 {
		t.Fatalf("unchanged rebuild: Unchanged=%v, %d writes; want true, 0", res.Unchanged, d)
	}

	edited := gen.EditOneField(recs, 9)
	before = s.Counts()
	res = buildCommit(t, s, opts, edited)
	writes := s.Counts().Writes() - before.Writes()
	if res.Unchanged || res.Manifest.Version != 2 || res.Manifest.Parent != 1 {
		t.Fatalf("edit: unchanged=%v version %d parent %d", res.Unchanged, res.Manifest.Version, res.Manifest.Parent)
	}
	if writes > 4 || res.ChunksNew > 3 {
		t.Fatalf("1-record edit: %d writes, %d new chunks; want <= 4 writes, <= 3 chunks", writes, res.ChunksNew)
	}
	got, err := readAll(t, s, "acme", "bob", 2)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, edited)
	if old, err := readAll(t, s, "acme", "bob", 1); err != nil {
		t.Fatal(err)
	} else {
		sameRecords(t, old, recs)
	}
}

func TestBuildScopedIDs(t *testing.T) {
	recs := gen.Dataset(gen.Options{Size: 64 << 10, Seed: 5})
	a := snapshot.NewHasher(testSecret, "acme", "alice")
	b := snapshot.NewHasher(testSecret, "acme", "bob")
	c := snapshot.NewHasher([]byte("another deployment"), "acme", "alice")
	data := streamOf(recs)
	if a.Sum(data) == b.Sum(data) || a.Sum(data) == c.Sum(data) {
		t.Fatal("chunk IDs must differ across users and deployments")
	}
	if a.Sum(data) != snapshot.NewHasher(testSecret, "acme", "alice").Sum(data) {
		t.Fatal("chunk IDs must be deterministic")
	}
}

func TestBuildRejectsUnsorted(t *testing.T) {
	s := snapshot.NewCountingStore(memstore.New())
	recs := []gen.Record{{Key: "b", Value: []byte("1")}, {Key: "a", Value: []byte("2")}}
	_, err := snapshot.Build(context.Background(), s, buildOpts("o", "u"), source(recs))
	if !errors.Is(err, snapshot.ErrInvalid) {
		t.Fatalf("unsorted input: err = %v, want ErrInvalid", err)
	}
	if n := s.Counts().Writes(); n != 0 {
		t.Fatalf("%d writes after a failed build", n)
	}
}

// TestCorruptionNamesObject flips bytes of stored packs and manifests: every
// read must fail with an error that names the object, and never panic.
func TestCorruptionNamesObject(t *testing.T) {
	ctx := context.Background()
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 6})
	base := memstore.New()
	buildCommit(t, base, buildOpts("o", "u"), recs)
	var keys []string
	base.List(ctx, "o/u/", func(oi snapshot.ObjectInfo) error {
		if strings.HasSuffix(oi.Key, ".pack") || strings.HasSuffix(oi.Key, ".manifest") {
			keys = append(keys, oi.Key)
		}
		return nil
	})
	if len(keys) < 2 {
		t.Fatalf("objects: %v", keys)
	}
	for _, key := range keys {
		orig, err := snapshot.GetBytes(ctx, base, key, 0)
		if err != nil {
			t.Fatal(err)
		}
		step := max(1, len(orig)/400) // every byte of small objects, a spread of big ones
		for i := 0; i < len(orig); i += step {
			bad := bytes.Clone(orig)
			bad[i] ^= 0x5a
			s := memstore.New()
			copyStore(t, base, s)
			s.Put(ctx, key, bytes.NewReader(bad), int64(len(bad)))
			_, err := readAll(t, s, "o", "u", 1)
			if err == nil {
				t.Fatalf("%s: flipping byte %d went unnoticed", key, i)
			}
			if !strings.Contains(err.Error(), key) {
				t.Fatalf("%s byte %d: error %q does not name the object", key, i, err)
			}
		}
	}
}

func copyStore(t testing.TB, from, to snapshot.Store) {
	ctx := context.Background()
	err := from.List(ctx, "", func(oi snapshot.ObjectInfo) error {
		b, err := snapshot.GetBytes(ctx, from, oi.Key, 0)
		if err != nil {
			return err
		}
		_, err = to.Put(ctx, oi.Key, bytes.NewReader(b), int64(len(b)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestHeadProbesPastStaleHint(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	opts := buildOpts("o", "u")
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 7})
	for i := range 3 {
		buildCommit(t, s, opts, gen.EditScattered(recs, 1, int64(i)))
	}
	s.Put(ctx, snapshot.HeadKey("o", "u"), strings.NewReader("1"), 1)
	if h, err := snapshot.Head(ctx, s, "o", "u"); err != nil || h != 3 {
		t.Fatalf("Head with stale hint = %d, %v; want 3", h, err)
	}
	s.Delete(ctx, snapshot.HeadKey("o", "u"))
	if h, err := snapshot.Head(ctx, s, "o", "u"); err != nil || h != 3 {
		t.Fatalf("Head without hint = %d, %v; want 3", h, err)
	}
}

func TestCommitRace(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	opts := buildOpts("o", "u")
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 8})
	a, err := snapshot.Build(ctx, s, opts, source(recs))
	if err != nil {
		t.Fatal(err)
	}
	b, err := snapshot.Build(ctx, s, opts, source(gen.EditOneField(recs, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := snapshot.Commit(ctx, s, a.Manifest); err != nil {
		t.Fatal(err)
	}
	if err := snapshot.Commit(ctx, s, b.Manifest); !errors.Is(err, snapshot.ErrExist) {
		t.Fatalf("second claim of version 1: %v, want ErrExist", err)
	}
	got, err := readAll(t, s, "o", "u", 1)
	if err != nil {
		t.Fatal(err)
	}
	sameRecords(t, got, recs)
}

func TestSecretCreatedOnce(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	secrets := make(chan string, 8)
	for range 8 {
		go func() {
			b, err := snapshot.LoadOrCreateSecret(ctx, s)
			if err != nil {
				secrets <- "error: " + err.Error()
				return
			}
			secrets <- fmt.Sprintf("%x", b)
		}()
	}
	first := <-secrets
	for range 7 {
		if got := <-secrets; got != first {
			t.Fatalf("secrets differ: %s vs %s", got, first)
		}
	}
}
