package fsstore_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot/fsstore"
)

// plantTemp writes a temp file as a writer would leave it, aged by age.
func plantTemp(t *testing.T, dir, name string, age time.Duration) string {
	t.Helper()
	p := filepath.Join(dir, ".tmp", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("half a pack"), 0o644); err != nil {
		t.Fatal(err)
	}
	mt := time.Now().Add(-age)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	return p
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// Temp files left by a killed writer are removed when the store is next
// opened; a concurrent writer's fresh file, and anything not a temp file of
// ours, stay.
func TestAbandonedTempFilesSweptAtOpen(t *testing.T) {
	dir := t.TempDir()
	old := plantTemp(t, dir, "put-111", 2*time.Hour)
	fresh := plantTemp(t, dir, "put-222", time.Minute)
	other := plantTemp(t, dir, "notours", 3*time.Hour)
	if _, err := fsstore.New(dir); err != nil {
		t.Fatal(err)
	}
	if exists(old) {
		t.Errorf("a 2-hour-old temp file survived opening the store")
	}
	if !exists(fresh) || !exists(other) {
		t.Errorf("opening the store removed a fresh temp file (%v) or a file not its own (%v)", !exists(fresh), !exists(other))
	}
}

// A long-running writer sweeps too, at most once per interval.
func TestAbandonedTempFilesSweptByWriters(t *testing.T) {
	dir := t.TempDir()
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	fsstore.SetClock(s, func() time.Time { return now })
	old := plantTemp(t, dir, "put-333", 2*time.Hour)
	put := func() {
		t.Helper()
		if _, err := s.Put(t.Context(), "k", strings.NewReader("v"), 1); err != nil {
			t.Fatal(err)
		}
	}
	put()
	if !exists(old) {
		t.Fatalf("swept again within the interval after opening (a sweep per write is not cheap)")
	}
	now = now.Add(11 * time.Minute)
	put()
	if exists(old) {
		t.Errorf("a writer did not sweep after the interval")
	}
	fresh := plantTemp(t, dir, "put-444", 0)
	now = now.Add(11 * time.Minute)
	put()
	if !exists(fresh) {
		t.Errorf("a writer swept a fresh temp file")
	}
}

func TestSweepTemp(t *testing.T) {
	dir := t.TempDir()
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := plantTemp(t, dir, "put-1", 3*time.Hour)
	b := plantTemp(t, dir, "put-2", 30*time.Minute)
	n, err := s.SweepTemp(t.Context(), 2*time.Hour)
	if err != nil || n != 1 || exists(a) || !exists(b) {
		t.Errorf("SweepTemp(2h) = %d, %v; old gone %v, young kept %v", n, err, !exists(a), exists(b))
	}
	n, err = s.SweepTemp(t.Context(), 10*time.Minute)
	if err != nil || n != 1 || exists(b) {
		t.Errorf("SweepTemp(10m) = %d, %v", n, err)
	}
}
