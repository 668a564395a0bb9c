package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// TestWipeAfterPushingPendingEdits protects issue 12 item 6: signing out on
// a shared device removes the user's local state, but never an edit that
// has not reached the server unless forced.
func TestWipeAfterPushingPendingEdits(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	sw := newSwitchTransport()
	dir := filepath.Join(t.TempDir(), "ann")
	c := ts.client("ann", sw, dir)
	ctx := context.Background()
	_, err := c.Sync(ctx)
	mustDo(t, err)
	mustDo(t, c.Put("tasks/2", []byte(`{"s":"made offline"}`)))

	// Unreachable: refused, nothing changed.
	sw.stop()
	if err := c.Wipe(ctx, false); !errors.Is(err, ErrPendingEdits) || !errors.Is(err, ErrNoConnection) {
		t.Fatalf("wipe with an unsent edit and no connection: %v, want ErrPendingEdits (no connection)", err)
	}
	if got := get(t, c, "tasks/2"); got != `{"s":"made offline"}` {
		t.Fatalf("after the refused wipe tasks/2 = %s", got)
	}

	// Reachable: the edit goes out, then the state is gone.
	sw.down.Store(false)
	mustDo(t, c.Wipe(ctx, false))
	if !strings.Contains(ts.export("ann"), `"tasks/2"`) {
		t.Fatal("the pending edit did not reach the server before the wipe")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state directory after wipe: %v, want removed", err)
	}
	if err := c.Put("tasks/3", []byte(`1`)); err == nil {
		t.Fatal("put on a wiped client succeeded")
	}
	mustDo(t, c.Close())

	// The next user starts from nothing: no records, token, counters.
	c = openTest(t, dir)
	s := c.Status()
	if s.LocalVersion != 0 || s.PendingEdits != 0 || s.BytesDownTotal != 0 || s.LastSyncedUnix != 0 || c.Token() != "" || c.ServerURL() != "" {
		t.Fatalf("state after wipe: %+v, token %q, server %q", s, c.Token(), c.ServerURL())
	}
	if n, err := c.Count(""); err != nil || n != 0 {
		t.Fatalf("records after wipe: %d, %v", n, err)
	}
}

// TestWipeForcedDropsEditsAndBlocked: force drops what cannot be sent; an
// edit that cannot be sent under the org's limits blocks an unforced wipe.
func TestWipeForcedDropsEditsAndBlocked(t *testing.T) {
	ts := newTestServer(t)
	dir := t.TempDir()
	c := ts.client("ann", nil, dir)
	ctx := context.Background()
	_, err := c.Sync(ctx)
	mustDo(t, err)
	mustDo(t, c.Put("forms/1", bigForm(5000)))
	// The org lowers the record limit before the edit went out: the pull
	// brings it, and the edit is blocked (kept, not sendable).
	ts.setPolicy(`{"offline_mode":true,"max_record_bytes":2000}`)
	_, err = c.Pull(ctx)
	mustDo(t, err)
	if s := c.Status(); s.BlockedEdits != 1 {
		t.Fatalf("blocked edits: %d, want 1", s.BlockedEdits)
	}
	if err := c.Wipe(ctx, false); !errors.Is(err, ErrPendingEdits) {
		t.Fatalf("wipe with a blocked edit: %v, want ErrPendingEdits", err)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); err != nil {
		t.Fatalf("state file after a refused wipe: %v", err)
	}
	mustDo(t, c.Wipe(ctx, true))
	if _, err := os.Stat(filepath.Join(dir, StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file after a forced wipe: %v", err)
	}
}

// TestWipeInterruptedFinishesAtOpen: a process that died between sealing
// the state for a wipe and removing it leaves a file the next Open removes.
func TestWipeInterruptedFinishesAtOpen(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir)
	install(t, c, 3, map[string]string{"a": "1"})
	mustDo(t, c.sealForWipe(true))
	if err := c.Put("b", []byte(`2`)); !errors.Is(err, ErrWiped) {
		t.Fatalf("put on a sealed state: %v, want ErrWiped", err)
	}
	mustDo(t, c.Close())
	c = openTest(t, dir)
	if s := c.Status(); s.LocalVersion != 0 {
		t.Fatalf("sealed state survived Open: version %d", s.LocalVersion)
	}
}
