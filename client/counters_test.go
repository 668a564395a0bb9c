package client

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestUnchangedCountersWriteNothing: a status change that leaves the
// persisted counters as they were commits nothing to state.db (a commit is
// two fsyncs; a pull makes several status changes before its install).
func TestUnchangedCountersWriteNothing(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir)
	mustDo(t, c.flushCounters())
	read := func() []byte {
		b, err := os.ReadFile(filepath.Join(dir, StateFile))
		mustDo(t, err)
		return b
	}
	before := read()
	mustDo(t, c.setState(StateSyncing, ReasonNone, ""))
	mustDo(t, c.flushCounters())
	if !bytes.Equal(before, read()) {
		t.Fatal("a status change with the counters unchanged wrote state.db")
	}
	// A change that is persisted is still written.
	mustDo(t, c.setState(StateError, ReasonServer, "refused"))
	if bytes.Equal(before, read()) {
		t.Fatal("a settled state was not persisted")
	}
}
