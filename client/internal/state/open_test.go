package state

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenWritesNothingToData: opening a synced state does not write
// data.db (a commit there is two fsyncs of the biggest file, at every
// start of the app, and a first install's dirty pages flushed then).
func TestOpenWritesNothingToData(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	installRecs(t, s, 1, records(50, 100, false, "a"))
	must(t, s.Close())
	before, err := os.ReadFile(filepath.Join(dir, DataFile))
	must(t, err)
	s = openStore(t, dir)
	must(t, s.Close())
	after, err := os.ReadFile(filepath.Join(dir, DataFile))
	must(t, err)
	if !bytes.Equal(before, after) {
		t.Fatal("opening the state wrote data.db")
	}
}
