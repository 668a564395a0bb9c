package state

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/snapshot"
)

// deltaBytes installs v1 (n records cut into small chunks: a chunk list
// as long as a big data set's), then a delta changing one record in the
// middle, and returns the bytes of data.db pages that delta's commit
// wrote (bbolt's dirty page allocations).
func deltaBytes(t *testing.T, n int) int64 {
	s := openStore(t, t.TempDir())
	params := snapshot.ChunkerParams{Min: 128, Avg: 512, Max: 4096}
	v1 := cutWith(t, 1, records(n, 40, false, "one"), params)
	r2 := slices.Clone(v1.recs)
	r2[n/2][1] = `{"changed":2}`
	v2 := cutWith(t, 2, r2, params)
	t.Logf("%d records in %d chunks", n, len(v1.m.Chunks))
	_, err := pull(s, v1)
	must(t, err)
	alloc := func() int64 { st := s.data.db.Stats(); return st.TxStats.GetPageAlloc() }
	before := alloc()
	_, err = pull(s, v2)
	must(t, err)
	return alloc() - before
}

// TestOneRecordDeltaWritesO1 protects issue 13's "a one-record delta in
// under 10 ms": what a one-record delta writes must not grow with the data
// set (format 1 rewrote the whole chunk list, 480 KB on 64 MB, with every
// delta). Eight times the chunks may cost a level more of the index's
// tree and a longer free list, not the chunk list again (some 300 KB).
func TestOneRecordDeltaWritesO1(t *testing.T) { bothPaths(t, testOneRecordDeltaWritesO1) }

func testOneRecordDeltaWritesO1(t *testing.T) {
	small, big := deltaBytes(t, 3000), deltaBytes(t, 24000)
	t.Logf("a one-record delta wrote %d bytes on 3000 records, %d on 24000", small, big)
	if big-small > 64<<10 {
		t.Errorf("a one-record delta wrote %d bytes on %d records, %d on %d: it grows with the data set", small, 3000, big, 24000)
	}
}

// TestChunkListPagesSurviveManyDeltas installs a run of random deltas
// (records changed, inserted in runs and deleted in runs, at the same
// places again and again) with pages of 8 chunks, so pages are split,
// joined and keyed between others; after each, the chunk list read back
// is the version's (the pages', and the cached copy the same) and the
// state checks out.
func TestChunkListPagesSurviveManyDeltas(t *testing.T) {
	bothPaths(t, testChunkListPagesSurviveManyDeltas)
}

func testChunkListPagesSurviveManyDeltas(t *testing.T) {
	s := openStore(t, t.TempDir())
	small(s)
	rng := rand.New(rand.NewPCG(1, 2))
	recs := records(3000, 300, false, "v1")
	_, err := pull(s, cut(t, 1, recs))
	must(t, err)
	for v := uint64(2); v <= 60; v++ {
		recs = slices.Clone(recs)
		at := []int{100, 1500, len(recs) - 1}[rng.IntN(3)] + rng.IntN(20) - 10
		at = max(0, min(at, len(recs)-1))
		switch rng.IntN(3) {
		case 0:
			recs[at][1] = fmt.Sprintf(`{"v":%d}`, v)
		case 1:
			var ins [][2]string
			for i := range 1 + rng.IntN(200) {
				ins = append(ins, [2]string{fmt.Sprintf("%s/%d/%03d", recs[at][0], v, i), fmt.Sprintf(`{"pad":"%0300d"}`, i)})
			}
			recs = slices.Insert(recs, at+1, ins...)
			slices.SortFunc(recs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		default:
			recs = slices.Delete(recs, at, min(at+1+rng.IntN(150), len(recs)-1))
		}
		want := cut(t, v, recs)
		_, err := pull(s, want)
		must(t, err)
		_, cached, err := s.Manifest()
		must(t, err)
		var m *snapshot.Manifest
		var seqs []uint64
		must(t, s.data.db.View(func(tx *bolt.Tx) error {
			m, seqs, err = readSlot(liveSlot(tx))
			return err
		}))
		if !reflect.DeepEqual(cached, m) {
			t.Fatalf("version %d: the cached manifest is not what the pages hold", v)
		}
		if _, cs, ok := s.synced.get(s.data.gen, v); !ok || !slices.Equal(cs, seqs) {
			t.Fatalf("version %d: the cached seqs are not what the pages hold", v)
		}
		if len(m.Chunks) != len(want.m.Chunks) {
			t.Fatalf("version %d: %d chunks read back, %d installed", v, len(m.Chunks), len(want.m.Chunks))
		}
		for i := range m.Chunks {
			if m.Chunks[i].ID != want.m.Chunks[i].ID || m.Chunks[i].FirstKey != want.m.Chunks[i].FirstKey {
				t.Fatalf("version %d: chunk %d read back as %s %q, installed %s %q", v, i,
					m.Chunks[i].ID, m.Chunks[i].FirstKey, want.m.Chunks[i].ID, want.m.Chunks[i].FirstKey)
			}
		}
		if m.StreamHash != want.m.StreamHash {
			t.Fatalf("version %d: stream hash %x, installed %x", v, m.StreamHash, want.m.StreamHash)
		}
	}
	must(t, s.Close())
	checkOK(t, s.dir)
}

// TestOneRecordEditReadsFewPages: a one-record delta installed as an edit
// decodes the chunk list pages around its change only (issue 13: the list
// path decoded all of them, and built the new list whole), and rewrites
// only those: the other pages keep their keys and bytes.
func TestOneRecordEditReadsFewPages(t *testing.T) {
	s := openStore(t, t.TempDir())
	small(s)
	params := snapshot.ChunkerParams{Min: 128, Avg: 512, Max: 4096}
	v1 := cutWith(t, 1, records(3000, 40, false, "one"), params)
	r2 := slices.Clone(v1.recs)
	r2[1500][1] = `{"changed":2}`
	v2 := cutWith(t, 2, r2, params)
	_, err := pull(s, v1)
	must(t, err)
	pages := func() map[string]string {
		out := map[string]string{}
		must(t, s.data.db.View(func(tx *bolt.Tx) error {
			return liveSlot(tx).Bucket(sbPages).ForEach(func(k, v []byte) error { out[string(k)] = string(v); return nil })
		}))
		return out
	}
	before := pages()
	_, old, err := s.Manifest()
	must(t, err)
	d, err := startEdit(s, old, v2, nil)
	must(t, err)
	for j := range v2.m.Chunks {
		if raw, ok := v2.chunks[v2.m.Chunks[j].ID]; ok && d.pos(j) >= 0 && v1.chunks[v2.m.Chunks[j].ID] == nil {
			must(t, d.Add(j, raw))
		}
	}
	m := *v2.m
	m.Chunks, m.StreamHash = nil, [32]byte{}
	in, err := d.Finish(context.Background(), &m, v2.m.StreamHash)
	must(t, err)
	if in.Changed != 1 {
		t.Errorf("the delta changed %d records, want 1", in.Changed)
	}
	after := pages()
	changed := 0
	for k, v := range before {
		if after[k] != v {
			changed++
		}
	}
	t.Logf("%d pages; the edit decoded %d, rewrote %d", len(before), len(d.base.decoded), changed)
	if len(before) < 40 || len(d.base.decoded) > 3 || changed > 3 {
		t.Errorf("a one-record edit of a list of %d pages decoded %d of them and rewrote %d, want at most 3 each", len(before), len(d.base.decoded), changed)
	}
	must(t, s.Close())
	checkOK(t, s.dir)
}
