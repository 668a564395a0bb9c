package gc_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// TestReusedPackDuringGC pins what was once a gap on the writer side (now
// fixed: snapshot.putPack writes a fresh name instead of reusing an
// existing pack). A build names a pack after the chunks it holds; reusing
// an identical existing pack would not refresh its ModTime. Data
// that returns to an earlier state (a task toggled open → done → open)
// produces such a pack. If gc found that pack unreferenced and old, it
// deletes it between the build's reuse and its claim, and the new version
// references a missing pack. The grace period cannot help, since the pack
// looks old. Fix on the writer side: refresh the reused pack's ModTime
// (gc re-stats before deleting, see TestRewrittenSinceListingIsYoung) or
// write it under a fresh name.
func TestReusedPackDuringGC(t *testing.T) {
	t.Run("as snapshot writes today", func(t *testing.T) {
		reusedPackDuringGC(t, false)
	})
	t.Run("writer refreshes reused packs", func(t *testing.T) { reusedPackDuringGC(t, true) })
}

// refreshingStore stands in for the proposed writer fix: a create-only
// pack write that finds an identical pack rewrites it, so its ModTime is
// that of the build that reuses it.
func refreshingStore(s snapshot.Store) *storetest.Faults {
	f := storetest.Wrap(s)
	f.PutIfAbsentFunc = func(ctx context.Context, key string, rd io.Reader, size int64) (snapshot.ObjectInfo, error) {
		data, err := io.ReadAll(io.LimitReader(rd, size))
		if err != nil {
			return snapshot.ObjectInfo{}, err
		}
		oi, err := s.PutIfAbsent(ctx, key, bytes.NewReader(data), size)
		if errors.Is(err, snapshot.ErrExist) && strings.HasSuffix(key, ".pack") {
			if old, gerr := snapshot.GetBytes(ctx, s, key, size); gerr == nil && bytes.Equal(old, data) {
				if _, perr := s.Put(ctx, key, bytes.NewReader(data), size); perr != nil {
					return snapshot.ObjectInfo{}, perr
				}
			}
		}
		return oi, err
	}
	return f
}

func reusedPackDuringGC(t *testing.T, refresh bool) {
	ctx := context.Background()
	s, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, s)
	x := gen.Dataset(gen.Options{Size: 200 << 10, Seed: 7})
	y := gen.EditScattered(x, 3, 8)
	now := time.Now()
	f.build("acme", "alice", x, now) // v1
	f.build("acme", "alice", y, now) // v2: writes the pack of y's edits
	f.build("acme", "alice", x, now) // v3: back to x
	// Everything so far was written days ago.
	old := now.Add(-72 * time.Hour)
	err = filepath.WalkDir(s.Dir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.Contains(p, "/.") {
			err = os.Chtimes(p, old, old)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	if refresh {
		f.s = refreshingStore(s)
	}
	b := startPausedBuild(t, f, "acme", "alice", y) // v4: y again, reuses v2's pack
	defer b.release()
	rep, err := gc.Run(ctx, s, gc.Options{KeepVersions: 1}) // real clock, default grace
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %v", rep)
	b.release()
	if _, err := b.wait(); err != nil {
		t.Fatal(err)
	}
	f.verify("acme", "alice", 4)
}
