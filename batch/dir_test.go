package batch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// The acceptance of the batch builder, run against the in-memory store and
// against each S3 server (scripts/test sets DELTASYNC_TEST_S3).
func TestBatchMemstore(t *testing.T) {
	batchSuite(t, func(t *testing.T) snapshot.Store { return memstore.New() })
}

func TestBatchS3(t *testing.T) {
	s3test.Each(t, func(t *testing.T, srv s3test.Server) {
		batchSuite(t, func(t *testing.T) snapshot.Store { return srv.Store(t) })
	})
}

func batchSuite(t *testing.T, newStore func(*testing.T) snapshot.Store) {
	// 200 users of 2–64 KiB (about 4 MB in all), shared by the subtests.
	dir := genDir(t, 200, 1, false)

	t.Run("AllThenNothing", func(t *testing.T) {
		s := newStore(t)
		res, err := BuildDir(t.Context(), s, DirOptions{Dir: dir, TempDir: t.TempDir()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Total != 200 || res.Created != 200 || res.Failed != 0 || res.Err() != nil || len(res.Users) != 200 {
			t.Fatalf("first run: total %d created %d failed %d (%v)", res.Total, res.Created, res.Failed, res.Err())
		}
		checkAll(t, s, dir)

		cs := snapshot.NewCountingStore(s)
		again, err := BuildDir(t.Context(), cs, DirOptions{Dir: dir, TempDir: t.TempDir()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if again.Created != 0 || again.Unchanged != 200 || again.Failed != 0 || again.Puts != 0 {
			t.Fatalf("second run: created %d unchanged %d failed %d puts %d, want 0/200/0/0", again.Created, again.Unchanged, again.Failed, again.Puts)
		}
		if c := cs.Counts(); c.Writes() != 0 {
			t.Fatalf("second run wrote to the store: %+v", c)
		}
		for _, u := range again.Users {
			if u.Created || u.Version != 1 || u.Puts != 0 || u.Records == 0 {
				t.Fatalf("second run, %s/%s: %+v", u.Org, u.User, u)
			}
		}
	})

	t.Run("InterruptedByWriteFailures", func(t *testing.T) {
		s := newStore(t)
		// Enough writes for roughly a third of the users, then the store
		// fails every write: users die at every stage of a build.
		fs := failingWrites(s, failAfter(250))
		res, err := BuildDir(t.Context(), fs, DirOptions{Dir: dir, TempDir: t.TempDir()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Failed == 0 || res.Created == 0 || !errors.Is(res.Err(), ErrUsersFailed) {
			t.Fatalf("interrupted run: created %d failed %d, want some of each", res.Created, res.Failed)
		}
		t.Logf("interrupted run: %d created, %d failed", res.Created, res.Failed)
		assertNoHalfVersions(t, s, dir)
		rerun(t, s, dir, res.Created, 0)
	})

	t.Run("InterruptedByCancel", func(t *testing.T) {
		s := newStore(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		res, err := BuildDir(ctx, s, DirOptions{Dir: dir, TempDir: t.TempDir(), ProgressInterval: -1}, func(p Progress) {
			if p.UsersDone >= 60 {
				cancel()
			}
		})
		if !errors.Is(err, context.Canceled) || res.NotStarted == 0 {
			t.Fatalf("cancelled run: err %v, %d not started", err, res.NotStarted)
		}
		t.Logf("cancelled run: %d created, %d failed, %d not started", res.Created, res.Failed, res.NotStarted)
		assertNoHalfVersions(t, s, dir)
		// A user cancelled during its claim may have landed: an S3 server
		// can complete a PUT whose client has already given up (seen on
		// versitygw and MinIO under load). Its re-run finds it unchanged.
		rerun(t, s, dir, res.Created, res.Failed)
	})
}

// assertNoHalfVersions checks that every version a reader can see after an
// interrupted run is complete and is the user's input.
func assertNoHalfVersions(t *testing.T, s snapshot.Store, dir string) {
	t.Helper()
	for _, f := range inputFiles(t, dir) {
		head, got := readHead(t, s, f[0], f[1])
		if head > 1 || head == 1 && !equalMaps(got, wantRecords(t, f[2])) {
			t.Fatalf("%s/%s after interruption: head %d does not read back as the input", f[0], f[1], head)
		}
	}
}

// rerun builds the directory again and checks it finishes the rest with
// exactly one version per user.
//
// Of the users the interrupted run reported failed, up to mayHaveLanded
// may have been created all the same (their claim reached the store after
// the run gave up on it); those come out unchanged too.
func rerun(t *testing.T, s snapshot.Store, dir string, createdBefore, mayHaveLanded int) {
	t.Helper()
	res, err := BuildDir(t.Context(), s, DirOptions{Dir: dir, TempDir: t.TempDir()}, nil)
	if err != nil || res.Err() != nil {
		t.Fatalf("re-run: %v %v", err, res.Err())
	}
	if res.Created+res.Unchanged != 200 || res.Unchanged < createdBefore || res.Unchanged > createdBefore+mayHaveLanded {
		t.Fatalf("re-run: created %d unchanged %d; want 200 in all, %d..%d unchanged", res.Created, res.Unchanged,
			createdBefore, createdBefore+mayHaveLanded)
	}
	checkAll(t, s, dir)
}

func TestBuildDirBadFileFailsOnlyItsUser(t *testing.T) {
	dir := genDir(t, 12, 3, false)
	// Break line 5 of one user's file, give another an invalid name, and
	// compress a third.
	files := inputFiles(t, dir)
	var bad string
	var lines []string
	for _, f := range files {
		data, err := os.ReadFile(f[2])
		if err != nil {
			t.Fatal(err)
		}
		if lines = strings.SplitAfter(string(data), "\n"); len(lines) > 8 {
			bad = f[2]
			break
		}
	}
	lines[4] = "{\"key\":\"tasks/x\",\"value\":{oops}}\n"
	if err := os.WriteFile(bad, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	badName := filepath.Join(filepath.Dir(files[0][2]), "-nope.ndjson")
	if err := os.WriteFile(badName, []byte(`{"key":"a","value":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	zdir := genDir(t, 3, 4, true)
	if err := os.Rename(filepath.Join(zdir, "org-001"), filepath.Join(dir, "zorg")); err != nil {
		t.Fatal(err)
	}

	s := memstore.New()
	res, err := BuildDir(t.Context(), s, DirOptions{Dir: dir, Jobs: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Total != 16 || res.Failed != 2 || res.Created != 14 {
		t.Fatalf("total %d failed %d created %d, want 16/2/14", res.Total, res.Failed, res.Created)
	}
	if !errors.Is(res.Err(), ErrUsersFailed) {
		t.Fatalf("Err() = %v", res.Err())
	}
	for _, u := range res.Users {
		switch u.File {
		case bad:
			if !strings.Contains(u.Error, bad) || !strings.Contains(u.Error, "line 5") {
				t.Errorf("bad file's error %q does not name the file and line 5", u.Error)
			}
			if head, _ := readHead(t, s, u.Org, u.User); head != 0 {
				t.Errorf("bad file's user has version %d", head)
			}
		case badName:
			if !strings.Contains(u.Error, "-nope") {
				t.Errorf("bad name's error %q", u.Error)
			}
		default:
			if u.Error != "" || !u.Created {
				t.Errorf("%s: %+v", u.File, u)
			}
		}
	}
	for _, f := range inputFiles(t, filepath.Join(dir)) {
		if f[2] == bad || f[2] == badName {
			continue
		}
		if _, got := readHead(t, s, f[0], f[1]); !equalMaps(got, wantRecords(t, f[2])) {
			t.Errorf("%s does not read back", f[2])
		}
	}
}

func TestBuildDirBothPlainAndZstdIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "acme"), 0o755)
	os.WriteFile(filepath.Join(dir, "acme", "bob.ndjson"), []byte(`{"key":"a","value":1}`), 0o644)
	os.WriteFile(filepath.Join(dir, "acme", "bob.ndjson.zst"), nil, 0o644)
	res, err := BuildDir(t.Context(), memstore.New(), DirOptions{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || !strings.Contains(res.Users[0].Error, "both") {
		t.Fatalf("%+v", res.Users[0])
	}
}

func TestShardsCoverEveryUserOnce(t *testing.T) {
	dir := genDir(t, 60, 5, false)
	s := memstore.New()
	seen := map[string]int{}
	for i := range 3 {
		sh, err := ParseShard(strings.Join([]string{string(rune('0' + i)), "3"}, "/"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := BuildDir(t.Context(), s, DirOptions{Dir: dir, Shard: sh}, nil)
		if err != nil || res.Err() != nil {
			t.Fatal(err, res.Err())
		}
		if res.Total+res.OtherShards != 60 || res.Total == 0 || res.Total == 60 {
			t.Fatalf("shard %v: %d users, %d in other shards", sh, res.Total, res.OtherShards)
		}
		for _, u := range res.Users {
			if !u.Created {
				t.Errorf("shard %v: %s/%s was already built by another shard", sh, u.Org, u.User)
			}
			seen[u.Org+"/"+u.User]++
		}
	}
	if len(seen) != 60 {
		t.Fatalf("shards built %d distinct users, want 60", len(seen))
	}
	for u, n := range seen {
		if n != 1 {
			t.Errorf("%s built by %d shards", u, n)
		}
	}
}

func TestParseShard(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Shard
		ok   bool
	}{
		{"", Shard{}, true}, {"0/1", Shard{0, 1}, true}, {"2/3", Shard{2, 3}, true},
		{"3/3", Shard{}, false}, {"-1/3", Shard{}, false}, {"1", Shard{}, false}, {"a/b", Shard{}, false}, {"0/0", Shard{}, false},
	} {
		got, err := ParseShard(tc.in)
		if (err == nil) != tc.ok || tc.ok && got != tc.want {
			t.Errorf("ParseShard(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestProgressReportsEveryUser(t *testing.T) {
	dir := genDir(t, 20, 6, false)
	var mu sync.Mutex
	var last Progress
	users := 0
	res, err := BuildDir(t.Context(), memstore.New(), DirOptions{Dir: dir, Jobs: 4, ProgressInterval: -1}, func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if p.User != nil {
			users++
		}
		if p.UsersDone < last.UsersDone || p.BytesDone < last.BytesDone {
			t.Errorf("progress went backwards: %+v after %+v", p, last)
		}
		last = p
	})
	if err != nil {
		t.Fatal(err)
	}
	if users != 20 || last.UsersDone != 20 || last.UsersTotal != 20 || last.BytesDone != res.InputBytes || last.BytesTotal != res.InputBytes || last.ETA != 0 {
		t.Fatalf("last progress %+v after %d user reports; input %d bytes", last, users, res.InputBytes)
	}
}
