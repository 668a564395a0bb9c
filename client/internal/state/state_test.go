package state

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/snapshot"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// records are sorted test records: n keys "k/00000".., with values of
// about size bytes; every 97th a big one (over a chunk) when big.
func records(n, size int, big bool, tag string) [][2]string {
	var out [][2]string
	for i := range n {
		v := fmt.Sprintf(`{"i":%d,"t":%q,"pad":%q}`, i, tag, strings.Repeat("x", size))
		if big && i%97 == 50 {
			v = fmt.Sprintf(`{"i":%d,"big":%q}`, i, strings.Repeat(fmt.Sprintf("%d-%s ", i, tag), 30_000))
		}
		out = append(out, [2]string{fmt.Sprintf("k/%05d", i), v})
	}
	return out
}

func source(recs [][2]string) Records {
	return func(yield func(string, []byte) error) error {
		for _, r := range recs {
			if err := yield(r[0], []byte(r[1])); err != nil {
				return err
			}
		}
		return nil
	}
}

func installRecs(t *testing.T, s *Store, v uint64, recs [][2]string) *snapshot.Manifest {
	t.Helper()
	m, err := s.InstallRecords(context.Background(), v, snapshot.DefaultChunkerParams(), source(recs), nil)
	must(t, err)
	return m
}

func scanAll(t *testing.T, s *Store, prefix string, batch int) [][2]string {
	t.Helper()
	var out [][2]string
	var after []byte
	for {
		kvs, next, err := s.ScanBatch([]byte(prefix), after, batch, 1<<20)
		must(t, err)
		for _, kv := range kvs {
			out = append(out, [2]string{kv.Key, string(kv.Value)})
		}
		if next == nil {
			return out
		}
		after = next
	}
}

func checkOK(t *testing.T, dir string) *Report {
	t.Helper()
	var recs int
	r, err := Check(dir, CheckOptions{Records: func(k, v []byte) error { recs++; return nil }})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if uint64(recs) != r.Records {
		t.Errorf("check visited %d records, reports %d", recs, r.Records)
	}
	return r
}

func TestInstallRecordsReadsBackAndReplaces(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	v1 := records(3000, 300, true, "one")
	m1 := installRecs(t, s, 1, v1)
	if got := scanAll(t, s, "", 100); !slices.Equal(got, v1) {
		t.Fatalf("scan of version 1: %d records, want %d", len(got), len(v1))
	}
	for _, i := range []int{0, 50, 147, 2999} {
		got, found, err := s.View(v1[i][0], ^uint64(0))
		if err != nil || !found || string(got) != v1[i][1] {
			t.Errorf("view %s: %v %v %.40q", v1[i][0], found, err, got)
		}
	}
	if _, found, err := s.View("k/99999", ^uint64(0)); found || err != nil {
		t.Errorf("absent key: %v %v", found, err)
	}
	s.Close()
	r := checkOK(t, dir)
	if r.Version != 1 || r.Records != 3000 || r.StreamHash != m1.StreamHash || r.Stored != r.Distinct {
		t.Errorf("report %+v", r)
	}
	s = openStore(t, dir)
	v2 := records(2000, 200, false, "two")
	installRecs(t, s, 2, v2)
	if got := scanAll(t, s, "k/01", 7); !slices.Equal(got, v2[1000:2000]) {
		t.Errorf("prefix scan of version 2: %d records", len(got))
	}
	s.Close()
	r = checkOK(t, dir)
	if r.Version != 2 || r.Stored != r.Distinct {
		t.Errorf("after replacing version 1: %+v (the old chunks must be gone)", r)
	}
}

func TestEditsLaidOverTheSyncedVersion(t *testing.T) {
	s := openStore(t, t.TempDir())
	installRecs(t, s, 3, [][2]string{{"a", `{"x":1}`}, {"b", `[1]`}, {"c", `2`}})
	must(t, s.UpdateEdits(func(tx *EditsTx) error {
		for _, e := range []*Edit{
			{Op: OpMerge, Key: "a", Patch: []byte(`{"y":2}`)},
			{Op: OpMerge, Key: "b", Patch: []byte(`{"y":2}`)}, // refused by the server: not an object
			{Op: OpDelete, Key: "c"},
			{Op: OpPut, Key: "d", Value: []byte(`"new"`)},
		} {
			if _, err := tx.Enqueue(e); err != nil {
				return err
			}
		}
		// A sent edit that version 3 already holds, and one it does not.
		if _, err := tx.Enqueue(&Edit{Op: OpPut, Key: "e", Value: []byte(`"old"`)}); err != nil {
			return err
		}
		if _, _, err := tx.Complete(5, 3); err != nil {
			return err
		}
		if _, err := tx.Enqueue(&Edit{Op: OpPut, Key: "f", Value: []byte(`"sent"`)}); err != nil {
			return err
		}
		_, _, err := tx.Complete(6, 4)
		return err
	}))
	want := [][2]string{{"a", `{"x":1,"y":2}`}, {"b", `[1]`}, {"d", `"new"`}, {"f", `"sent"`}}
	for _, batch := range []int{1, 2, 100} {
		if got := scanAll(t, s, "", batch); !slices.Equal(got, want) {
			t.Errorf("batches of %d: %q, want %q", batch, got, want)
		}
	}
}

func TestOpenHeldByAnotherProcessFailsFast(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir)
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second open: %v, want ErrLocked", err)
	}
}

func TestCheckFindsDamage(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	installRecs(t, s, 1, records(500, 300, false, "x"))
	s.Close()
	db, err := bolt.Open(filepath.Join(dir, DataFile), 0o600, nil)
	must(t, err)
	must(t, db.Update(func(tx *bolt.Tx) error {
		slot := liveSlot(tx)
		return slot.Bucket(sbIndex).Put([]byte("k/00007"), appendLoc(nil, 3, []uint64{1}))
	}))
	db.Close()
	if _, err := Check(dir, CheckOptions{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `index entry of "k/00007"`) {
		t.Errorf("check of a damaged index: %v", err)
	}
}

// TestFullSyncMarksKeys: a full sync reports the keys whose values contain
// Options.Mark (the client's blob references), so the client need not read
// every record again after the install; with more than MaxChangedKeys of
// them it says any may.
func TestFullSyncMarksKeys(t *testing.T) {
	ctx := context.Background()
	recs := records(3000, 300, true, "one")
	var want []string
	for i := range recs {
		if i%250 == 7 {
			recs[i][1] = fmt.Sprintf(`{"$blob":"sha256:%064d","i":%d}`, i, i)
			want = append(want, recs[i][0])
		}
	}
	s, err := Open(t.TempDir(), Options{Mark: []byte(`"$blob":`)})
	must(t, err)
	defer s.Close()
	_, in, err := s.installRecords(ctx, 1, snapshot.DefaultChunkerParams(), source(recs), nil)
	must(t, err)
	if !in.Full || in.MarkedAll || !slices.Equal(in.Marked, want) {
		t.Fatalf("marked %v (all %v), want %v", in.Marked, in.MarkedAll, want)
	}

	many := records(MaxChangedKeys+1, 10, false, "two")
	for i := range many {
		many[i][1] = fmt.Sprintf(`{"$blob":"sha256:%064d"}`, i)
	}
	_, in, err = s.installRecords(ctx, 2, snapshot.DefaultChunkerParams(), source(many), nil)
	must(t, err)
	if !in.MarkedAll || in.Marked != nil {
		t.Fatalf("%d marked values: marked %d keys, all %v; want all", len(many), len(in.Marked), in.MarkedAll)
	}

	plain := openStore(t, t.TempDir()) // no Mark: nothing is looked for
	_, in, err = plain.installRecords(ctx, 1, snapshot.DefaultChunkerParams(), source(recs), nil)
	must(t, err)
	if in.Marked != nil || in.MarkedAll {
		t.Fatalf("without a mark: marked %v, all %v", in.Marked, in.MarkedAll)
	}
}
