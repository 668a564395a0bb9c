package batch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// genDir writes users generated data sets of 2–64 KiB into a temp dir.
func genDir(t testing.TB, users int, seed int64, zst bool) string {
	t.Helper()
	dir := t.TempDir()
	_, err := gen.GenerateDir(t.Context(), gen.DirOptions{Dir: dir, Users: users, MinSize: 2 << 10, MaxSize: 64 << 10, Seed: seed, Zstd: zst})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// wantRecords parses an input file into key → canonical value.
func wantRecords(t testing.TB, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, SuffixZstd) {
		d, err := zstd.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	}
	out := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		k, v, err := snapshot.ParseNDJSONLine(sc.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out[k] = string(v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// readHead reads back a user's head version, fully verified.
func readHead(t testing.TB, s snapshot.Store, org, user string) (uint64, map[string]string) {
	t.Helper()
	ctx := context.Background()
	head, err := snapshot.Head(ctx, s, org, user)
	if err != nil {
		t.Fatal(err)
	}
	if head == 0 {
		return 0, nil
	}
	secret, err := snapshot.LoadOrCreateSecret(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.ReadManifest(ctx, s, org, user, head)
	if err != nil {
		t.Fatalf("%s/%s: %v", org, user, err)
	}
	got := map[string]string{}
	err = snapshot.NewReader(s, m, secret).Records(ctx, func(k, v []byte) error {
		got[string(k)] = string(v)
		return nil
	})
	if err != nil {
		t.Fatalf("%s/%s version %d: %v", org, user, head, err)
	}
	return head, got
}

// versions lists the version numbers that exist for a user.
func versions(t testing.TB, s snapshot.Store, org, user string) []uint64 {
	t.Helper()
	var vs []uint64
	err := s.List(context.Background(), snapshot.UserPrefix(org, user)+"versions/", func(oi snapshot.ObjectInfo) error {
		if v, ok := snapshot.ParseManifestKey(oi.Key); ok {
			vs = append(vs, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// inputFiles lists dir/<org>/<file> as org, user, path.
func inputFiles(t testing.TB, dir string) [][3]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*", "*.ndjson*"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][3]string
	for _, p := range paths {
		org := filepath.Base(filepath.Dir(p))
		user := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(p), ".zst"), ".ndjson")
		out = append(out, [3]string{org, user, p})
	}
	return out
}

// checkAll asserts that every input's user has exactly one version whose
// records are exactly the input's.
func checkAll(t testing.TB, s snapshot.Store, dir string) {
	t.Helper()
	files := inputFiles(t, dir)
	if len(files) == 0 {
		t.Fatal("no inputs")
	}
	for _, f := range files {
		org, user, path := f[0], f[1], f[2]
		if vs := versions(t, s, org, user); len(vs) != 1 || vs[0] != 1 {
			t.Errorf("%s/%s: versions %v, want exactly [1]", org, user, vs)
			continue
		}
		head, got := readHead(t, s, org, user)
		want := wantRecords(t, path)
		if head != 1 || !equalMaps(got, want) {
			t.Errorf("%s/%s: head %d with %d records, want version 1 with the input's %d records", org, user, head, len(got), len(want))
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// failingWrites wraps s so that a put of any kind fails with the error
// fail returns for its key (nil lets it through).
func failingWrites(s snapshot.Store, fail func(key string) error) *storetest.Faults {
	f := storetest.Wrap(s)
	f.Before = func(_ context.Context, op storetest.Op, key string) error {
		if op == storetest.OpPut || op == storetest.OpPutIfAbsent || op == storetest.OpPutIfMatch {
			return fail(key)
		}
		return nil
	}
	return f
}

var errInjected = errors.New("injected write failure")

// failAfter makes every write after the first n fail.
func failAfter(n int64) func(string) error {
	var count atomic.Int64
	return func(string) error {
		if count.Add(1) > n {
			return errInjected
		}
		return nil
	}
}
