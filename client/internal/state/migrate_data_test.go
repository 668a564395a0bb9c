package state

import (
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestDataFormat1IsMigrated opens a state directory the code of data
// format 1 wrote (testdata/data1: each chunk list one value): Check reads
// it as it is; Open rewrites the chunk lists as pages, after which it holds
// the same version, reads the same records, takes the next delta and
// checks out.
func TestDataFormat1IsMigrated(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, filepath.Join("testdata", "data1"), dir)
	v1 := cut(t, 1, records(600, 300, true, "fixture"))
	r2 := slices.Clone(v1.recs)
	r2[300][1] = `{"changed":2}`
	v2 := cut(t, 2, r2)
	if r := checkOK(t, dir); r.Version != 2 || r.StreamHash != v2.m.StreamHash {
		t.Fatalf("format 1 checks as version %d, stream %x", r.Version, r.StreamHash)
	}

	s := openStore(t, dir)
	v, m, err := s.Manifest()
	must(t, err)
	if v != 2 || m.StreamHash != v2.m.StreamHash || len(m.Chunks) != len(v2.m.Chunks) {
		t.Fatalf("migrated: version %d, %d chunks, stream %x", v, len(m.Chunks), m.StreamHash)
	}
	if got := scanAll(t, s, "k/", 50); !slices.Equal(got, r2) {
		t.Fatalf("migrated: %d records read, %d installed", len(got), len(r2))
	}
	must(t, s.data.db.View(func(tx *bolt.Tx) error {
		if f := tx.Bucket(dataMeta).Get(dmFormat); string(f) != string(u64(dataFormat)) {
			t.Errorf("format %x after the migration", f)
		}
		live := liveSlot(tx)
		if live.Get(skSeqs) != nil || live.Bucket(sbPages) == nil {
			t.Errorf("the live slot keeps format 1's chunk list")
		}
		return nil
	}))
	r3 := slices.Clone(r2)
	r3[100][1] = `{"changed":3}`
	v3 := cut(t, 3, r3)
	in, err := pull(s, v3)
	must(t, err)
	if in.Full || in.Changed != 1 {
		t.Errorf("the delta after the migration: %+v", in)
	}
	if got := scanAll(t, s, "k/", 50); !slices.Equal(got, r3) {
		t.Errorf("after a delta: %d records read, %d installed", len(got), len(r3))
	}
	must(t, s.Close())
	if r := checkOK(t, dir); r.Version != 3 || r.StreamHash != v3.m.StreamHash {
		t.Errorf("after a delta: checks as version %d, stream %x", r.Version, r.StreamHash)
	}
}
