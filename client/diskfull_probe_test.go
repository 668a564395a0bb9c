package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// TestProbeDiskFull runs a client whose state directory is on a small
// file system of its own (DELTASYNC_FULLDISK_DIR, e.g. a 12 MB tmpfs:
// `mount -t tmpfs -o size=12m tmpfs DIR`, as root; not run in CI) and
// fills it: a pull and a push then fail with ENOSPC, reported as
// error/storage, keep the synced version and the queued edit, Put refuses
// (nothing is accepted that is not durable), and once space is freed a
// sync completes and a fresh check of the directory passes.
func TestProbeDiskFull(t *testing.T) {
	root := os.Getenv("DELTASYNC_FULLDISK_DIR")
	if root == "" {
		t.Skip("DELTASYNC_FULLDISK_DIR not set")
	}
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 8})
	ts.upload("ann", recs)
	dir := filepath.Join(root, "state")
	os.RemoveAll(dir)
	mustDo(t, os.MkdirAll(dir, 0o755))
	c := ts.client("ann", nil, dir)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Put("mine/1", []byte(`"before"`)))
	// Fill the disk.
	filler := filepath.Join(root, "filler")
	f, err := os.Create(filler)
	mustDo(t, err)
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			t.Logf("filler: %v", err)
			break
		}
	}
	f.Close()
	ts.upload("ann", gen.Dataset(gen.Options{Size: 2 << 20, Seed: 9}))
	_, err = c.Pull(ctx)
	t.Logf("pull on a full disk: %v (ENOSPC: %v)", err, errors.Is(err, syscall.ENOSPC))
	s := c.Status()
	t.Logf("status: %s/%s %q, v%d, %d pending", s.State, s.Reason, s.Message, s.LocalVersion, s.PendingEdits)
	if !errors.Is(err, syscall.ENOSPC) || s.Reason != ReasonStorage || s.LocalVersion != 1 || s.PendingEdits != 1 {
		t.Errorf("pull on a full disk: %v, status %s/%s v%d %d pending; want ENOSPC, storage, v1, 1 pending",
			err, s.State, s.Reason, s.LocalVersion, s.PendingEdits)
	}
	if got := get(t, c, "mine/1"); got != `"before"` {
		t.Errorf("on a full disk: mine/1 = %s", got)
	}
	var puts, failed int
	for i := 0; i < 200; i++ {
		if err := c.Put("mine/x", []byte(`"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"`)); err != nil {
			failed++
			if failed == 1 {
				t.Logf("put on a full disk: %v", err)
			}
		} else {
			puts++
		}
	}
	t.Logf("%d puts accepted, %d refused on a full disk", puts, failed)
	_, err = c.Push(ctx)
	t.Logf("push on a full disk: %v", err)
	s = c.Status()
	t.Logf("status: %s/%s %q, v%d, %d pending", s.State, s.Reason, s.Message, s.LocalVersion, s.PendingEdits)
	mustDo(t, os.Remove(filler))
	_, err = c.Sync(ctx)
	t.Logf("sync after freeing space: %v", err)
	mustDo(t, c.Close())
	if _, err := Check(dir, CheckOptions{}); err != nil {
		t.Errorf("check after the full disk: %v", err)
	}
	c2 := ts.client("ann", nil, dir)
	_, err = c2.Sync(ctx)
	mustDo(t, err)
	if got, want := exportOf(t, c2), ts.export("ann"); got != want {
		t.Errorf("client and server differ after the disk was freed")
	}
	if got := get(t, c2, "mine/1"); got != `"before"` {
		t.Errorf("mine/1 = %s", got)
	}
	if puts > 0 {
		if got := get(t, c2, "mine/x"); got == "" {
			t.Errorf("accepted puts of mine/x lost")
		}
	}
	s = c2.Status()
	t.Logf("final status: %s/%s %q, v%d, %d pending", s.State, s.Reason, s.Message, s.LocalVersion, s.PendingEdits)
}
