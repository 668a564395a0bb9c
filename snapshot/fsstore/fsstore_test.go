package fsstore_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

func newStore(t *testing.T) *fsstore.Store {
	t.Helper()
	s, err := fsstore.New(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) snapshot.Store { return newStore(t) })
}

func TestFilesOnDisk(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if _, err := s.Put(ctx, "org/user/head", strings.NewReader("7"), 1); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir(), "org", "user", "head"))
	if err != nil || string(b) != "7" {
		t.Fatalf("object file = %q, %v; want \"7\"", b, err)
	}
	// A temp file left by a crashed writer is not an object.
	if err := os.WriteFile(filepath.Join(s.Dir(), ".tmp", "put-123"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutIfMatch(ctx, "org/user/head", strings.NewReader("8"), 1, "bogus"); !errors.Is(err, snapshot.ErrPrecondition) {
		t.Fatalf("PutIfMatch: %v", err)
	}
	var keys []string
	if err := s.List(ctx, "", func(info snapshot.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(keys), "[org/user/head]"; got != want {
		t.Errorf("List = %s, want %s (no .tmp or .lock entries)", got, want)
	}
	// Failed writes leave no temp files behind.
	ents, err := os.ReadDir(filepath.Join(s.Dir(), ".tmp"))
	if err != nil || len(ents) != 1 {
		t.Errorf(".tmp holds %d entries (%v), want only the planted one", len(ents), err)
	}
}

func TestETagChangesOnIdenticalRewrite(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	a, err := s.Put(ctx, "k", strings.NewReader("same"), 4)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Put(ctx, "k", strings.NewReader("same"), 4)
	if err != nil {
		t.Fatal(err)
	}
	if a.ETag == b.ETag {
		t.Fatalf("rewriting identical content kept ETag %q; a CAS holder of the old tag would not notice the write", a.ETag)
	}
}

func TestKeyUnderObjectFails(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	if _, err := s.Put(ctx, "a", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "a/b", strings.NewReader("y"), 1); err == nil {
		t.Errorf("Put(a/b) with object a succeeded")
	}
	if _, err := s.Put(ctx, "d/e", strings.NewReader("y"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutIfAbsent(ctx, "d", strings.NewReader("y"), 1); err == nil || errors.Is(err, snapshot.ErrExist) {
		t.Errorf("PutIfAbsent(d) over directory d/ = %v, want a non-ErrExist error", err)
	}
}

// The helper process runs increments of a shared counter with
// compare-and-swap, as a second server replica would.
const helperEnv = "FSSTORE_CAS_HELPER"

func TestCASHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper for TestCASAcrossProcesses")
	}
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := increment(t, s, 100); err != nil {
		t.Fatal(err)
	}
}

// increment adds n to the counter object, retrying lost swaps.
func increment(t *testing.T, s snapshot.Store, n int) error {
	ctx := t.Context()
	for done := 0; done < n; {
		rc, info, err := s.Get(ctx, "counter")
		if err != nil {
			return err
		}
		b := make([]byte, info.Size)
		_, err = io.ReadFull(rc, b)
		rc.Close()
		if err != nil {
			return err
		}
		v, err := strconv.Atoi(string(b))
		if err != nil {
			return err
		}
		next := strconv.Itoa(v + 1)
		_, err = s.PutIfMatch(ctx, "counter", strings.NewReader(next), int64(len(next)), info.ETag)
		if errors.Is(err, snapshot.ErrPrecondition) {
			continue
		}
		if err != nil {
			return err
		}
		done++
	}
	return nil
}

func TestCASAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	s := newStore(t)
	if _, err := s.Put(t.Context(), "counter", strings.NewReader("0"), 1); err != nil {
		t.Fatal(err)
	}
	const procs = 3
	cmds := make([]*exec.Cmd, procs)
	for i := range cmds {
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCASHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+s.Dir())
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[i] = cmd
	}
	// This process races the children as well.
	if err := increment(t, s, 100); err != nil {
		t.Error(err)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	}
	rc, _, err := s.Get(t.Context(), "counter")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b := make([]byte, 16)
	n, _ := rc.Read(b)
	if got, want := string(b[:n]), strconv.Itoa(100*(procs+1)); got != want {
		t.Errorf("counter = %s after %d CAS increments, want %s: an update was lost", got, 100*(procs+1), want)
	}
}
