package client

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
)

// The fixture in testdata/v1 was made by the code of state format 1
// (testdata/v1/make.sh): a client synced at version 3 of acme/kim with
// edits sent and applied as version 4 (not pulled), a conflict, a patch in
// flight that never reached the server, and queued edits; beside it the
// server's store, and what that code showed.

// v1Fixture copies the fixture's state directory and store and starts a
// server on the store (its chunk secret is the one inside it).
func v1Fixture(t *testing.T) (dir string, ts *testServer, secret []byte) {
	t.Helper()
	dir, storeDir := t.TempDir(), t.TempDir()
	copyTree(t, filepath.Join("testdata", "v1", "state"), dir)
	copyTree(t, filepath.Join("testdata", "v1", "store"), storeDir)
	st, err := fsstore.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	ts = newTestServerWith(t, func(o *server.Options) { o.Store, o.ChunkSecret = st, nil })
	ts.store = st
	secret, err = snapshot.LoadOrCreateSecret(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return dir, ts, secret
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// serverExport is the server's head of acme/kim as NDJSON.
func serverExport(t *testing.T, ts *testServer, secret []byte) string {
	t.Helper()
	ctx := context.Background()
	m, err := snapshot.ReadManifest(ctx, ts.store, testOrg, "kim", ts.head("kim"))
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	err = snapshot.NewReader(ts.store, m, secret).Records(ctx, func(k, v []byte) error {
		b = snapshot.AppendNDJSONLine(b, string(k), v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fixtureFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "v1", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMigratesFormat1 opens a state directory written by the code of
// format 1 (records and raw chunks in state.db) and checks that it is
// migrated in place: the view, the queue, the patch in flight and the
// conflict are what that code showed; the state checks out; the next pull
// is a delta from the migrated version (its chunks are the server's); the
// patch in flight applies once; and state.db holds no copy of the data.
func TestMigratesFormat1(t *testing.T) {
	dir, ts, secret := v1Fixture(t)
	before, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	c := ts.client("kim", nil, dir)
	if got, want := exportOf(t, c), fixtureFile(t, "export.ndjson"); got != want {
		t.Fatalf("view after migration:\n%s\nformat 1 showed:\n%s", got, want)
	}
	var st struct {
		Version   uint64 `json:"version"`
		Pending   int    `json:"pending"`
		Conflicts int    `json:"conflicts"`
	}
	if err := json.Unmarshal([]byte(fixtureFile(t, "status.json")), &st); err != nil {
		t.Fatal(err)
	}
	s := c.Status()
	if s.LocalVersion != st.Version || s.PendingEdits != st.Pending || s.Conflicts != st.Conflicts || st.Pending != 4 {
		t.Fatalf("status after migration %+v, format 1 showed %+v", s, st)
	}
	cs, err := c.Conflicts()
	if err != nil || len(cs) != 1 || !strings.Contains(fixtureFile(t, "conflicts.json"), fmt.Sprintf(`"key":%q`, cs[0].Key)) {
		t.Fatalf("conflicts after migration: %+v, %v", cs, err)
	}
	mustDo(t, c.Close())
	r, err := Check(dir, CheckOptions{})
	if err != nil {
		t.Fatalf("check after migration: %v", err)
	}
	if r.InflightID == "" || len(r.Queued) != 4 || len(r.Sent) != 2 || r.NeedFull || r.Version != 3 {
		t.Fatalf("state after migration: %+v", r)
	}
	if after := r.StateBytes; after >= before.Size() {
		t.Errorf("state.db of %d bytes after migration, %d before: the records and chunks are still in it", after, before.Size())
	}
	inflight := r.InflightID

	c = ts.client("kim", nil, dir)
	res, err := c.Pull(context.Background())
	mustDo(t, err)
	if res.Full || res.Version != 4 {
		t.Fatalf("first pull after migration: %+v, want a delta to version 4", res)
	}
	res, err = c.Sync(context.Background())
	mustDo(t, err)
	if res.Pending != 0 || res.State != StateSynced {
		t.Fatalf("sync after migration: %+v", res)
	}
	if got, want := exportOf(t, c), serverExport(t, ts, secret); got != want || !strings.Contains(got, "formed, never delivered") {
		t.Fatalf("after the sync the device shows\n%s\nthe server holds\n%s", got, want)
	}
	if n := patchApplied(t, ts, inflight); n != 1 {
		t.Errorf("the patch in flight before the migration was applied %d times", n)
	}
}

// patchApplied counts the versions of acme/kim made by patch id.
func patchApplied(t *testing.T, ts *testServer, id string) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	for v := uint64(1); v <= ts.head("kim"); v++ {
		m, err := snapshot.ReadManifestHeader(ctx, ts.store, testOrg, "kim", v)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := diff.ReadChangeSet(ctx, ts.store, m)
		if err != nil {
			t.Fatal(err)
		}
		if cs.Patch != nil && cs.Patch.ID == id {
			n++
		}
	}
	return n
}

// TestMigratesDamagedFormat1 migrates a format-1 state whose records no
// longer match its manifest (damage format 1 never noticed): the records
// it showed are kept, and the next pull is a full sync that repairs them.
func TestMigratesDamagedFormat1(t *testing.T) {
	dir, ts, secret := v1Fixture(t)
	db, err := bolt.Open(filepath.Join(dir, StateFile), 0o600, nil)
	mustDo(t, err)
	var key string
	mustDo(t, db.Update(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket([]byte("records")).Cursor().First()
		key = string(k)
		return tx.Bucket([]byte("records")).Put(k, []byte(`{"damaged":true}`))
	}))
	mustDo(t, db.Close())
	c := ts.client("kim", nil, dir)
	if got := get(t, c, key); got != `{"damaged":true}` {
		t.Fatalf("%s after migration: %s, want the record format 1 held", key, got)
	}
	r, err := c.store.Verify(state.CheckOptions{})
	if err != nil || !r.NeedFull {
		t.Fatalf("after migrating a damaged state: %+v, %v (want a full sync next)", r, err)
	}
	res, err := c.Pull(context.Background())
	mustDo(t, err)
	if !res.Full {
		t.Fatalf("pull after migrating a damaged state: %+v, want a full sync", res)
	}
	res, err = c.Sync(context.Background())
	mustDo(t, err)
	if got, want := exportOf(t, c), serverExport(t, ts, secret); got != want || res.Pending != 0 {
		t.Fatalf("after the repair the device shows\n%s\nthe server holds\n%s", got, want)
	}
}

// TestMigrationInterruptedResumes opens format-1 states as a migration
// killed midway leaves them: beside the old state.db, a data.db half
// written (garbage to it), or complete (the migration died before
// state.db was replaced), and the new state.db half written. Each opens,
// migrated, showing what format 1 showed.
func TestMigrationInterruptedResumes(t *testing.T) {
	done, ts, _ := v1Fixture(t)
	c := ts.client("kim", nil, done)
	mustDo(t, c.Close())
	complete, err := os.ReadFile(filepath.Join(done, DataFile))
	mustDo(t, err)
	for _, tc := range []struct {
		name  string
		files map[string][]byte
	}{
		{"data.db half written", map[string][]byte{DataFile: []byte("not a database")}},
		{"data.db complete", map[string][]byte{DataFile: complete}},
		{"new state.db half written", map[string][]byte{DataFile: complete, StateFile + ".migrate": []byte("partial")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, ts, _ := v1Fixture(t)
			for name, b := range tc.files {
				mustDo(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
			}
			c := ts.client("kim", nil, dir)
			if got, want := exportOf(t, c), fixtureFile(t, "export.ndjson"); got != want {
				t.Fatalf("view after migration:\n%s\nformat 1 showed:\n%s", got, want)
			}
			mustDo(t, c.Close())
			if r, err := Check(dir, CheckOptions{}); err != nil || r.NeedFull || r.Version != 3 || len(r.Queued) != 4 {
				t.Fatalf("check after migration: %+v, %v", r, err)
			}
			if _, err := os.Stat(filepath.Join(dir, StateFile+".migrate")); !os.IsNotExist(err) {
				t.Errorf("the temporary file of the migration is left: %v", err)
			}
		})
	}
}
