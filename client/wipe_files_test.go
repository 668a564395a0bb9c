package client

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/internal/gen"
)

// TestWipeRemovesEveryStateFile: a wipe in the middle of a full sync
// removes data.db and the download's data.next.db with state.db, so the
// next user inherits no record of the last one, on disk or in view.
func TestWipeRemovesEveryStateFile(t *testing.T) {
	ts := newTestServer(t)
	var buf strings.Builder
	if _, err := gen.Generate(&buf, gen.Options{Size: 4 << 20, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	ts.do(http.MethodPut, "/v1/admin/orgs/"+testOrg+"/users/ann/dataset", []byte(buf.String()))
	ref := newFaultTransport()
	_, err := ts.client("ann", ref).Pull(context.Background())
	mustDo(t, err)

	dir := filepath.Join(t.TempDir(), "ann")
	ft := newFaultTransport()
	c := ts.client("ann", ft, dir)
	ft.cutAfter.Store(ref.down.Load() * 3 / 4)
	if _, err := c.Pull(context.Background()); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("cut full sync: %v, want ErrNoConnection", err)
	}
	for _, name := range []string{StateFile, DataFile, state.NextFile} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("%s during a full sync: %v", name, err)
		}
	}
	mustDo(t, c.Wipe(context.Background(), false))
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		left, _ := os.ReadDir(dir)
		t.Fatalf("state directory after wipe: %v, want removed (left: %v)", err, left)
	}
	mustDo(t, c.Close())
	c = openTest(t, dir)
	if mk, err := c.store.Marker(); err != nil || mk != nil {
		t.Fatalf("download marker after wipe: %+v, %v", mk, err)
	}
}
