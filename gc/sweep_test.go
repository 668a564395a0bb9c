package gc_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/snapshot/deadline"
	"github.com/deltasync/deltasync/snapshot/fsstore"
)

// Temp files that killed writers left in a directory store are removed by
// gc (older than the grace, never younger than an hour); a concurrent
// writer's fresh file stays, and a dry run removes nothing.
func TestGCSweepsAbandonedTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	plant := func(name string, age time.Duration) string {
		p := filepath.Join(dir, ".tmp", name)
		if err := os.WriteFile(p, []byte("half a pack"), 0o644); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	old := plant("put-killed", 3*time.Hour)
	young := plant("put-45min", 45*time.Minute)
	fresh := plant("put-writing", 0)
	opts := gc.Options{KeepVersions: 1, Grace: time.Minute}
	// As the command runs it: behind the deadline wrapper.
	store, err := deadline.New(s, deadline.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}

	opts.DryRun = true
	rep, err := gc.Run(t.Context(), store, opts)
	if err != nil || rep.TempFilesDeleted != 0 || !exists(old) {
		t.Fatalf("dry run: %v, %+v; the old temp file exists: %v", err, rep, exists(old))
	}
	opts.DryRun = false
	rep, err = gc.Run(t.Context(), store, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.TempFilesDeleted != 1 || exists(old) {
		t.Errorf("gc removed %d temp files, the 3-hour-old one exists: %v; want it removed", rep.TempFilesDeleted, exists(old))
	}
	if !exists(young) || !exists(fresh) {
		t.Errorf("gc with a 1-minute grace removed a temp file younger than an hour (45 min kept %v, fresh kept %v)", exists(young), exists(fresh))
	}
	if !strings.Contains(rep.String(), "removed 1 abandoned temp files") {
		t.Errorf("report %q does not mention the temp files", rep.String())
	}
}
