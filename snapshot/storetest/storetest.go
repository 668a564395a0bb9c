// Package storetest is the conformance suite every snapshot.Store backend
// must pass (after restic's internal/backend/test). Each backend's test calls
// Run with a constructor that returns a fresh, empty store for every subtest.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// BigSize is the size of the large objects the suite writes: above the
// 16 MiB part size at which minio-go switches to multipart uploads, so a
// backend that silently drops conditional headers on multipart shows up.
const BigSize = 20<<20 + 12345

// ListCount is the number of keys of the listing test: more than one page
// (1,000) of an S3 listing.
const ListCount = 1050

// Run runs the conformance suite. newStore must return an empty store that
// no other subtest uses; it is called once per subtest.
func Run(t *testing.T, newStore func(t *testing.T) snapshot.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s snapshot.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"EmptyObject", testEmptyObject},
		{"Overwrite", testOverwrite},
		{"GetRange", testGetRange},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"InvalidKeys", testInvalidKeys},
		{"ShortReader", testShortReader},
		{"PutIfAbsent", testPutIfAbsent},
		{"PutIfAbsentRace", testPutIfAbsentRace},
		{"PutIfMatch", testPutIfMatch},
		{"PutIfMatchRace", testPutIfMatchRace},
		{"CommitRace", testCommitRace},
		{"ConditionalWriteProbe", testConditionalWriteProbe},
		{"BigObjects", testBigObjects},
		{"List", testList},
		{"ListStop", testListStop},
		{"ListAfter", testListAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

func put(t *testing.T, s snapshot.Store, key, data string) snapshot.ObjectInfo {
	t.Helper()
	info, err := s.Put(t.Context(), key, strings.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if info.Key != key || info.Size != int64(len(data)) || info.ETag == "" {
		t.Fatalf("Put(%q) = %+v, want key %q, size %d and an ETag", key, info, key, len(data))
	}
	return info
}

func get(t *testing.T, s snapshot.Store, key string) (string, snapshot.ObjectInfo) {
	t.Helper()
	rc, info, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", key, err)
	}
	if info.Key != key || info.Size != int64(len(b)) {
		t.Fatalf("Get(%q) info %+v, read %d bytes", key, info, len(b))
	}
	return string(b), info
}

func wantContent(t *testing.T, s snapshot.Store, key, want string) snapshot.ObjectInfo {
	t.Helper()
	got, info := get(t, s, key)
	if got != want {
		t.Fatalf("Get(%q) = %.40q (%d bytes), want %.40q (%d bytes)", key, got, len(got), want, len(want))
	}
	return info
}

func wantMissing(t *testing.T, s snapshot.Store, key string) {
	t.Helper()
	if info, err := s.Stat(t.Context(), key); !errors.Is(err, snapshot.ErrNotExist) {
		t.Fatalf("Stat(%q) = %+v, %v; want ErrNotExist", key, info, err)
	}
}

func testRoundTrip(t *testing.T, s snapshot.Store) {
	before := time.Now().Add(-time.Hour) // generous: server clocks may differ a little
	const key, data = "org/user/versions/00000000000000000001.manifest", "hello, deltasync"
	pi := put(t, s, key, data)
	gi := wantContent(t, s, key, data)
	si, err := s.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if si.Key != key || si.Size != int64(len(data)) {
		t.Errorf("Stat = %+v, want key %q size %d", si, key, len(data))
	}
	if si.ETag != pi.ETag || gi.ETag != pi.ETag {
		t.Errorf("ETags differ: Put %q, Get %q, Stat %q", pi.ETag, gi.ETag, si.ETag)
	}
	if strings.Contains(si.ETag, `"`) {
		t.Errorf("ETag %q is quoted; ETags must be normalised", si.ETag)
	}
	if si.ModTime.Before(before) || si.ModTime.After(time.Now().Add(time.Hour)) {
		t.Errorf("Stat ModTime = %v, want about now", si.ModTime)
	}
	// Neighbouring keys are separate objects.
	put(t, s, "org/user/versions/00000000000000000002.manifest", "two")
	wantContent(t, s, key, data)
}

func testEmptyObject(t *testing.T, s snapshot.Store) {
	put(t, s, "empty", "")
	wantContent(t, s, "empty", "")
	rc, err := s.GetRange(t.Context(), "empty", 0, 0)
	if err != nil {
		t.Fatalf("GetRange(empty, 0, 0): %v", err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || len(b) != 0 {
		t.Fatalf("GetRange(empty, 0, 0) read %q, %v", b, err)
	}
}

func testOverwrite(t *testing.T, s snapshot.Store) {
	first := put(t, s, "a/b", "first version")
	second := put(t, s, "a/b", "second")
	if first.ETag == second.ETag {
		t.Errorf("ETag did not change on overwrite: %q", first.ETag)
	}
	info := wantContent(t, s, "a/b", "second")
	if info.ETag != second.ETag {
		t.Errorf("Get ETag %q, want %q from the second Put", info.ETag, second.ETag)
	}
}

func testGetRange(t *testing.T, s snapshot.Store) {
	const data = "0123456789abcdefghij"
	put(t, s, "packs/p1.pack", data)
	for _, tt := range []struct{ off, n int64 }{
		{0, 20}, {0, 1}, {5, 10}, {19, 1}, {20, 0}, {7, 0}, {10, 10},
	} {
		rc, err := s.GetRange(t.Context(), "packs/p1.pack", tt.off, tt.n)
		if err != nil {
			t.Errorf("GetRange(%d, %d): %v", tt.off, tt.n, err)
			continue
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if got, want := string(b), data[tt.off:tt.off+tt.n]; err != nil || got != want {
			t.Errorf("GetRange(%d, %d) = %q, %v; want %q", tt.off, tt.n, got, err, want)
		}
	}
	for _, tt := range []struct{ off, n int64 }{
		{0, 21}, {19, 2}, {20, 1}, {21, 0}, {100, 5}, {-1, 3}, {0, -1},
	} {
		rc, err := s.GetRange(t.Context(), "packs/p1.pack", tt.off, tt.n)
		if err == nil {
			b, rerr := io.ReadAll(rc)
			rc.Close()
			t.Errorf("GetRange(%d, %d) past the end = %q, %v; want an error", tt.off, tt.n, b, rerr)
			continue
		}
		if !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("GetRange(%d, %d) error %v, want ErrInvalid", tt.off, tt.n, err)
		}
	}
}

func testMissing(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	put(t, s, "present", "x")
	const key = "nope/missing"
	if _, _, err := s.Get(ctx, key); !errors.Is(err, snapshot.ErrNotExist) {
		t.Errorf("Get missing: %v, want ErrNotExist", err)
	}
	if _, err := s.GetRange(ctx, key, 0, 1); !errors.Is(err, snapshot.ErrNotExist) {
		t.Errorf("GetRange missing: %v, want ErrNotExist", err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, snapshot.ErrNotExist) {
		t.Errorf("Stat missing: %v, want ErrNotExist", err)
	}
	if _, err := s.Stat(ctx, "present/below"); err == nil {
		t.Errorf("Stat of a key below an object succeeded")
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Errorf("Delete missing: %v, want nil", err)
	}
	if _, err := s.PutIfMatch(ctx, key, strings.NewReader("x"), 1, "whatever"); !errors.Is(err, snapshot.ErrNotExist) {
		t.Errorf("PutIfMatch missing: %v, want ErrNotExist", err)
	}
	wantMissing(t, s, key)
}

func testDelete(t *testing.T, s snapshot.Store) {
	put(t, s, "d/one", "1")
	put(t, s, "d/two", "2")
	if err := s.Delete(t.Context(), "d/one"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, "d/one")
	wantContent(t, s, "d/two", "2")
	if got := listKeys(t, s, "d/"); fmt.Sprint(got) != "[d/two]" {
		t.Errorf("List after Delete = %v, want [d/two]", got)
	}
	if err := s.Delete(t.Context(), "d/one"); err != nil {
		t.Errorf("second Delete: %v, want nil", err)
	}
	// A deleted key can be created again, also create-only.
	if _, err := s.PutIfAbsent(t.Context(), "d/one", strings.NewReader("again"), 5); err != nil {
		t.Fatalf("PutIfAbsent after Delete: %v", err)
	}
	wantContent(t, s, "d/one", "again")
}

func testInvalidKeys(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	for _, key := range []string{
		"", "/abs", "a//b", "a/", "../x", "a/../b", "a/./b", ".", "..", `a\b`, "a\x00b", ".tmp/x",
	} {
		if _, err := s.Put(ctx, key, strings.NewReader("x"), 1); !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("Put(%q) = %v, want ErrInvalid", key, err)
		}
		if _, err := s.PutIfAbsent(ctx, key, strings.NewReader("x"), 1); !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("PutIfAbsent(%q) = %v, want ErrInvalid", key, err)
		}
		if _, _, err := s.Get(ctx, key); !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("Get(%q) = %v, want ErrInvalid", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("Stat(%q) = %v, want ErrInvalid", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("Delete(%q) = %v, want ErrInvalid", key, err)
		}
	}
	if got := listKeys(t, s, ""); len(got) != 0 {
		t.Errorf("invalid keys left objects behind: %v", got)
	}
}

// shortReader says it has more than it does: a client that dies mid-upload.
func testShortReader(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	put(t, s, "short/old", "old content")
	for _, op := range []struct {
		name string
		key  string
		do   func(key string, r io.Reader, size int64) error
	}{
		{"Put", "short/old", func(k string, r io.Reader, n int64) error { _, err := s.Put(ctx, k, r, n); return err }},
		{"Put", "short/new", func(k string, r io.Reader, n int64) error { _, err := s.Put(ctx, k, r, n); return err }},
		{"PutIfAbsent", "short/new2", func(k string, r io.Reader, n int64) error { _, err := s.PutIfAbsent(ctx, k, r, n); return err }},
	} {
		if err := op.do(op.key, strings.NewReader("only 15 bytes!!"), 100); err == nil {
			t.Errorf("%s(%q) with a 15-byte reader and size 100 succeeded", op.name, op.key)
		}
	}
	wantContent(t, s, "short/old", "old content")
	wantMissing(t, s, "short/new")
	wantMissing(t, s, "short/new2")
	info, err := s.Stat(ctx, "short/old")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutIfMatch(ctx, "short/old", strings.NewReader("tiny"), 100, info.ETag); err == nil {
		t.Errorf("PutIfMatch with a short reader succeeded")
	}
	wantContent(t, s, "short/old", "old content")
	if got := listKeys(t, s, ""); fmt.Sprint(got) != "[short/old]" {
		t.Errorf("List after failed writes = %v, want [short/old]", got)
	}
}

func testPutIfAbsent(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	info, err := s.PutIfAbsent(ctx, "v/1", strings.NewReader("first"), 5)
	if err != nil {
		t.Fatalf("PutIfAbsent on a new key: %v", err)
	}
	if info.Key != "v/1" || info.Size != 5 || info.ETag == "" {
		t.Errorf("PutIfAbsent info = %+v", info)
	}
	_, err = s.PutIfAbsent(ctx, "v/1", strings.NewReader("second"), 6)
	if !errors.Is(err, snapshot.ErrExist) {
		t.Fatalf("PutIfAbsent on an existing key: %v, want ErrExist", err)
	}
	got := wantContent(t, s, "v/1", "first")
	if got.ETag != info.ETag {
		t.Errorf("ETag changed from %q to %q after a lost create", info.ETag, got.ETag)
	}
	// An object written by plain Put counts as existing too.
	put(t, s, "v/2", "plain")
	if _, err := s.PutIfAbsent(ctx, "v/2", strings.NewReader("x"), 1); !errors.Is(err, snapshot.ErrExist) {
		t.Errorf("PutIfAbsent over Put: %v, want ErrExist", err)
	}
	wantContent(t, s, "v/2", "plain")
}

func testPutIfAbsentRace(t *testing.T, s snapshot.Store) {
	const n = 8
	ctx := t.Context()
	var wg sync.WaitGroup
	errs := make([]error, n)
	infos := make([]snapshot.ObjectInfo, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			// Different lengths as well as contents, so a mix-up shows.
			data := strings.Repeat(fmt.Sprintf("writer %d;", i), 100*(i+1))
			<-start
			infos[i], errs[i] = s.PutIfAbsent(ctx, "race/head", strings.NewReader(data), int64(len(data)))
		})
	}
	close(start)
	wg.Wait()
	winner := oneWinner(t, errs, snapshot.ErrExist, "won")
	want := strings.Repeat(fmt.Sprintf("writer %d;", winner), 100*(winner+1))
	info := wantContent(t, s, "race/head", want)
	if info.ETag != infos[winner].ETag {
		t.Errorf("stored ETag %q, winner was told %q", info.ETag, infos[winner].ETag)
	}
}

func testPutIfMatch(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	v1 := put(t, s, "cas", "version one")
	v2 := put(t, s, "cas", "version two")
	_, err := s.PutIfMatch(ctx, "cas", strings.NewReader("stale write"), 11, v1.ETag)
	if !errors.Is(err, snapshot.ErrPrecondition) {
		t.Fatalf("PutIfMatch with a stale ETag: %v, want ErrPrecondition", err)
	}
	if got := wantContent(t, s, "cas", "version two"); got.ETag != v2.ETag {
		t.Errorf("failed PutIfMatch changed the ETag from %q to %q", v2.ETag, got.ETag)
	}
	if _, err := s.PutIfMatch(ctx, "cas", strings.NewReader("garbage"), 7, "not-an-etag"); !errors.Is(err, snapshot.ErrPrecondition) {
		t.Errorf("PutIfMatch with a made-up ETag: %v, want ErrPrecondition", err)
	}
	v3, err := s.PutIfMatch(ctx, "cas", strings.NewReader("version three"), 13, v2.ETag)
	if err != nil {
		t.Fatalf("PutIfMatch with the current ETag: %v", err)
	}
	if v3.ETag == "" || v3.ETag == v2.ETag || v3.Size != 13 {
		t.Errorf("PutIfMatch info = %+v, want a new ETag (old %q) and size 13", v3, v2.ETag)
	}
	if got := wantContent(t, s, "cas", "version three"); got.ETag != v3.ETag {
		t.Errorf("stored ETag %q, PutIfMatch returned %q", got.ETag, v3.ETag)
	}
	// The tag just used is now stale.
	if _, err := s.PutIfMatch(ctx, "cas", strings.NewReader("again"), 5, v2.ETag); !errors.Is(err, snapshot.ErrPrecondition) {
		t.Errorf("reusing a consumed ETag: %v, want ErrPrecondition", err)
	}
	wantContent(t, s, "cas", "version three")
}

func testPutIfMatchRace(t *testing.T, s snapshot.Store) {
	const n = 8
	ctx := t.Context()
	base := put(t, s, "casrace", "base")
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			data := fmt.Sprintf("writer %d", i)
			<-start
			_, errs[i] = s.PutIfMatch(ctx, "casrace", strings.NewReader(data), int64(len(data)), base.ETag)
		})
	}
	close(start)
	wg.Wait()
	winner := oneWinner(t, errs, snapshot.ErrPrecondition, "swapped the same ETag")
	wantContent(t, s, "casrace", fmt.Sprintf("writer %d", winner))
}

// testCommitRace is the race the conditional writes exist for: two writers
// (server replicas, builders) claim the same version number at once. Exactly
// one wins, the other is told ErrExist, and the stored manifest is the
// winner's; the loser re-reads the head and claims the next number, where
// the same holds. Several rounds, so one lucky ordering does not pass it.
func testCommitRace(t *testing.T, s snapshot.Store) {
	const rounds, writers = 8, 2
	ctx := t.Context()
	for v := uint64(1); v <= rounds; v++ {
		mans := make([]*snapshot.Manifest, writers)
		errs := make([]error, writers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range writers {
			mans[i] = &snapshot.Manifest{Org: "acme", User: "alice", Version: v, Parent: v - 1,
				ChunkerName: "storetest", Records: uint64(100*v) + uint64(i), CreatedUnix: time.Now().Unix(),
				Changes: fmt.Sprintf("writer-%d", i)}
			mans[i].SetStreamHash()
			wg.Go(func() {
				<-start
				errs[i] = snapshot.Commit(ctx, s, mans[i])
			})
		}
		close(start)
		wg.Wait()
		winner := oneWinner(t, errs, snapshot.ErrExist, fmt.Sprintf("claimed version %d", v))
		got, err := snapshot.ReadManifest(ctx, s, "acme", "alice", v)
		if err != nil {
			t.Fatalf("read version %d: %v", v, err)
		}
		if got.Changes != mans[winner].Changes || got.Records != mans[winner].Records {
			t.Fatalf("version %d holds %s's manifest (records %d), but writer %d won: a claim was overwritten",
				v, got.Changes, got.Records, winner)
		}
		if head, err := snapshot.Head(ctx, s, "acme", "alice"); err != nil || head != v {
			t.Fatalf("Head after round %d = %d, %v", v, head, err)
		}
	}
}

// testConditionalWriteProbe: the start-up probe passes on a conforming store
// and leaves nothing behind.
func testConditionalWriteProbe(t *testing.T, s snapshot.Store) {
	put(t, s, "other/object", "x")
	for range 2 { // a second run finds no left-overs of the first
		if err := snapshot.ProbeConditionalWrites(t.Context(), s); err != nil {
			t.Fatalf("ProbeConditionalWrites: %v", err)
		}
	}
	if got := listKeys(t, s, ""); fmt.Sprint(got) != "[other/object]" {
		t.Errorf("objects after the probe: %v, want only [other/object]", got)
	}
}

// pattern is a deterministic pseudo-random byte stream, so big objects are
// checked without holding a second copy in memory.
func pattern(seed uint64, n int64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(key), n)
}

func digest(t *testing.T, r io.Reader) ([sha256.Size]byte, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return [sha256.Size]byte(h.Sum(nil)), n
}

func testBigObjects(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	for i, op := range []struct {
		name string
		do   func(key string, r io.Reader, size int64) (snapshot.ObjectInfo, error)
	}{
		{"Put", func(k string, r io.Reader, n int64) (snapshot.ObjectInfo, error) { return s.Put(ctx, k, r, n) }},
		{"PutIfAbsent", func(k string, r io.Reader, n int64) (snapshot.ObjectInfo, error) { return s.PutIfAbsent(ctx, k, r, n) }},
	} {
		key := "big/" + op.name
		seed := uint64(i + 1)
		info, err := op.do(key, pattern(seed, BigSize), BigSize)
		if err != nil {
			t.Fatalf("%s of %d bytes: %v", op.name, BigSize, err)
		}
		if info.Size != BigSize {
			t.Errorf("%s info size %d, want %d", op.name, info.Size, BigSize)
		}
		want, _ := digest(t, pattern(seed, BigSize))
		rc, ginfo, err := s.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get %s: %v", key, err)
		}
		got, n := digest(t, rc)
		rc.Close()
		if got != want || n != BigSize || ginfo.Size != BigSize {
			t.Errorf("%s: read back %d bytes (info %d) with a different digest", op.name, n, ginfo.Size)
		}
		if op.name == "PutIfAbsent" {
			// The condition must have travelled with the big upload.
			_, err := op.do(key, pattern(9, BigSize), BigSize)
			if !errors.Is(err, snapshot.ErrExist) {
				t.Errorf("second PutIfAbsent of a big object: %v, want ErrExist", err)
			}
			// Ranged read across the 16 MiB mark.
			off, length := int64(16<<20-100), int64(200)
			rc, err := s.GetRange(ctx, key, off, length)
			if err != nil {
				t.Fatalf("GetRange: %v", err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			full, _ := io.ReadAll(io.LimitReader(pattern(seed, BigSize), off+length))
			if err != nil || !bytes.Equal(b, full[off:]) {
				t.Errorf("GetRange(%d, %d) of a big object differs (%d bytes, %v)", off, length, len(b), err)
			}
		}
	}
}

func listKeys(t *testing.T, s snapshot.Store, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.List(t.Context(), prefix, func(info snapshot.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}

func testList(t *testing.T, s snapshot.Store) {
	ctx := t.Context()
	// Keys chosen so that lexical order differs from a directory walk:
	// '-' < '.' < '/' < '0', so "l/k-x" < "l/k.x" < "l/k/0000" < "l/k0".
	var want []string
	want = append(want, "l/k-x", "l/k.x")
	for i := range ListCount {
		want = append(want, fmt.Sprintf("l/k/%04d", i))
	}
	want = append(want, "l/k0", "l/kz/deep/er")
	others := []string{"a", "l-", "lz/x", "m/k/0001"}

	var wg sync.WaitGroup
	work := make(chan string)
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for key := range work {
				if _, err := s.Put(ctx, key, strings.NewReader(key), int64(len(key))); err != nil {
					errs <- fmt.Errorf("Put(%q): %w", key, err)
					return
				}
			}
		})
	}
	for _, key := range append(append([]string{}, want...), others...) {
		work <- key
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var infos []snapshot.ObjectInfo
	if err := s.List(ctx, "l/", func(info snapshot.ObjectInfo) error {
		infos = append(infos, info)
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(infos) != len(want) {
		t.Fatalf("List(l/) returned %d keys, want %d", len(infos), len(want))
	}
	for i, info := range infos {
		if info.Key != want[i] {
			t.Fatalf("List(l/)[%d] = %q, want %q (lexical order)", i, info.Key, want[i])
		}
		if info.Size != int64(len(info.Key)) || info.ETag == "" {
			t.Fatalf("List info %+v: want size %d and an ETag", info, len(info.Key))
		}
	}
	for _, tt := range []struct {
		prefix string
		n      int
		first  string
		last   string
	}{
		{"l/k/00", 100, "l/k/0000", "l/k/0099"},
		{"l/k/", ListCount, "l/k/0000", fmt.Sprintf("l/k/%04d", ListCount-1)},
		{"l/k/1049", 1, "l/k/1049", "l/k/1049"},
		{"l/k", ListCount + 4, "l/k-x", "l/kz/deep/er"},
		{"l/kz/", 1, "l/kz/deep/er", "l/kz/deep/er"},
		{"l", ListCount + 6, "l-", "lz/x"},
		{"", ListCount + 8, "a", "m/k/0001"},
		{"l/nothing", 0, "", ""},
		{"zz", 0, "", ""},
	} {
		got := listKeys(t, s, tt.prefix)
		if len(got) != tt.n {
			t.Errorf("List(%q) returned %d keys, want %d", tt.prefix, len(got), tt.n)
			continue
		}
		if tt.n > 0 && (got[0] != tt.first || got[len(got)-1] != tt.last) {
			t.Errorf("List(%q) = %q..%q, want %q..%q", tt.prefix, got[0], got[len(got)-1], tt.first, tt.last)
		}
	}
	checkListAfterPages(t, s)
}

// checkListAfterPages runs ListAfter over testList's keys, across S3's
// page boundary.
func checkListAfterPages(t *testing.T, s snapshot.Store) {
	for _, tt := range []struct {
		prefix, after string
		n             int
		first, last   string
	}{
		{"l/", "l/k/0020", ListCount - 21 + 2, "l/k/0021", "l/kz/deep/er"},
		{"l/k/", "l/k/0998", ListCount - 999, "l/k/0999", fmt.Sprintf("l/k/%04d", ListCount-1)},
		{"l/", "l/k", ListCount + 4, "l/k-x", "l/kz/deep/er"},
		{"", "l/k/1049", 4, "l/k0", "m/k/0001"},
		{"l/", "", ListCount + 4, "l/k-x", "l/kz/deep/er"},
	} {
		got := listAfterKeys(t, s, tt.prefix, tt.after)
		if len(got) != tt.n {
			t.Errorf("ListAfter(%q, %q) returned %d keys, want %d", tt.prefix, tt.after, len(got), tt.n)
			continue
		}
		if got[0] != tt.first || got[len(got)-1] != tt.last {
			t.Errorf("ListAfter(%q, %q) = %q..%q, want %q..%q", tt.prefix, tt.after, got[0], got[len(got)-1], tt.first, tt.last)
		}
	}
}

func listAfterKeys(t *testing.T, s snapshot.Store, prefix, after string) []string {
	t.Helper()
	var keys []string
	err := s.ListAfter(t.Context(), prefix, after, func(info snapshot.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("ListAfter(%q, %q): %v", prefix, after, err)
	}
	return keys
}

// testListAfter: the keys after a position, in lexical order, the position
// itself excluded; the shape the change feed is listed in (hour buckets,
// then names), and positions that are no key, lie in another directory or
// outside the prefix.
func testListAfter(t *testing.T, s snapshot.Store) {
	keys := []string{
		"f/2026111423/1763161199000~a", "f/2026111500/1763164800000~a", "f/2026111500/1763164800000~b",
		"f/2026111500/1763164801000~a", "f/2026111501/1763168400000~a", "f/20261115010/x", "f/2026111502/y/deep",
		"f-other", "g/1",
	}
	for _, k := range keys {
		put(t, s, k, k)
	}
	for _, tt := range []struct {
		prefix, after string
		want          []string
	}{
		{"f/", "", keys[:7]},
		{"f/", "a", keys[:7]},
		{"f/", "f/", keys[:7]},
		{"f/", "f/2026111500/", keys[1:7]},
		{"f/", "f/2026111500/1763164800000", keys[1:7]},
		{"f/", "f/2026111500/1763164800000~a", keys[2:7]},
		{"f/", "f/2026111500/1763164800000~a0", keys[2:7]},
		{"f/", "f/2026111500/1763164801000~a", keys[4:7]},
		{"f/", "f/2026111500/9", keys[4:7]},
		{"f/", "f/2026111501", keys[4:7]},
		{"f/", "f/2026111501/1763168400000~a", keys[5:7]},
		{"f/", "f/2026111502/y", keys[6:7]},
		{"f/", "f/2026111502/y/deep", nil},
		{"f/", "f/3", nil},
		{"f/", "g", nil},
		{"f/2026111500/", "f/2026111423/z", keys[1:4]},
		{"f/2026111500/", "f/2026111500/1763164800000~b", keys[3:4]},
		// '-' sorts before '/': "f-other" comes before every "f/" key.
		{"", "f/2026111502/y/deep", keys[8:]},
		{"f", "f/2026111502/y/deep", nil},
		{"f", "f-", append(keys[7:8:8], keys[:7]...)},
		{"f", "f-other", keys[:7]},
		{"", "f-other", append(keys[:7:7], keys[8])},
	} {
		got := listAfterKeys(t, s, tt.prefix, tt.after)
		if fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("ListAfter(%q, %q) = %q, want %q", tt.prefix, tt.after, got, tt.want)
		}
	}
	stop := errors.New("stop here")
	var seen []string
	err := s.ListAfter(t.Context(), "f/", keys[0], func(info snapshot.ObjectInfo) error {
		seen = append(seen, info.Key)
		if info.Size != int64(len(info.Key)) || info.ETag == "" {
			t.Errorf("ListAfter info %+v: want size %d and an ETag", info, len(info.Key))
		}
		return stop
	})
	if !errors.Is(err, stop) || fmt.Sprint(seen) != fmt.Sprint(keys[1:2]) {
		t.Errorf("ListAfter with a failing callback: %v after %q, want the callback's error after %q", err, seen, keys[1:2])
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.ListAfter(ctx, "f/", "", func(snapshot.ObjectInfo) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("ListAfter with a cancelled context: %v, want context.Canceled", err)
	}
}

func testListStop(t *testing.T, s snapshot.Store) {
	for _, k := range []string{"s/1", "s/2", "s/3"} {
		put(t, s, k, k)
	}
	stop := errors.New("stop here")
	var seen []string
	err := s.List(t.Context(), "s/", func(info snapshot.ObjectInfo) error {
		seen = append(seen, info.Key)
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Errorf("List returned %v, want the callback's error", err)
	}
	if fmt.Sprint(seen) != "[s/1 s/2]" {
		t.Errorf("List called fn for %v after it failed, want [s/1 s/2]", seen)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.List(ctx, "s/", func(snapshot.ObjectInfo) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("List with a cancelled context: %v, want context.Canceled", err)
	}
}

// oneWinner checks the outcome of racing conditional writers: exactly one
// succeeded and every other failed with loser; it returns the winner.
func oneWinner(t *testing.T, errs []error, loser error, what string) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Errorf("writers %d and %d both %s", winner, i, what)
			}
			winner = i
		case !errors.Is(err, loser):
			t.Errorf("writer %d: %v, want nil or %v", i, err, loser)
		}
	}
	if winner < 0 {
		t.Fatalf("no writer won: %v", errs)
	}
	return winner
}
