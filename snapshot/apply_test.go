package snapshot_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// randomEdits picks n edits over recs: updates, deletes and inserts (some
// oversize), sorted by key.
func randomEdits(rng *rand.Rand, recs []gen.Record, n int) []snapshot.Edit {
	seen := map[string]bool{}
	var out []snapshot.Edit
	for len(out) < n {
		var e snapshot.Edit
		switch k := rng.IntN(10); {
		case k < 5 && len(recs) > 0:
			r := recs[rng.IntN(len(recs))]
			e = snapshot.Edit{Key: r.Key, Value: []byte(fmt.Sprintf(`{"edited":%d}`, rng.IntN(1e6)))}
		case k < 7 && len(recs) > 0:
			e = snapshot.Edit{Key: recs[rng.IntN(len(recs))].Key, Delete: true}
		case k < 8:
			e = snapshot.Edit{Key: fmt.Sprintf("zz/big%d", rng.IntN(1e6)), Value: []byte(`"` + strings.Repeat("x", 70<<10+rng.IntN(100<<10)) + `"`)}
		default:
			base := "new"
			if len(recs) > 0 {
				base = recs[rng.IntN(len(recs))].Key
			}
			e = snapshot.Edit{Key: fmt.Sprintf("%s~%d", base, rng.IntN(1e6)), Value: []byte(`{"inserted":true}`)}
		}
		if !seen[e.Key] {
			seen[e.Key] = true
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b snapshot.Edit) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func applyToRecords(recs []gen.Record, edits []snapshot.Edit) []gen.Record {
	m := map[string][]byte{}
	for _, r := range recs {
		m[r.Key] = r.Value
	}
	for _, e := range edits {
		if e.Delete {
			delete(m, e.Key)
		} else {
			m[e.Key] = e.Value
		}
	}
	out := make([]gen.Record, 0, len(m))
	for k, v := range m {
		out = append(out, gen.Record{Key: k, Value: v})
	}
	gen.SortRecords(out)
	return out
}

// TestApplyEditsMatchesFullBuild: patching only the neighbourhood of the
// edits must give exactly the chunk list (and so the stream hash) of a
// from-scratch build of the edited records.
func TestApplyEditsMatchesFullBuild(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range 12 {
		size := []int64{0, 20 << 10, 300 << 10, 1 << 20}[trial%4]
		recs := gen.Dataset(gen.Options{Size: size, Seed: int64(trial)})
		s := memstore.New()
		opts := buildOpts("o", "u")
		parent := buildCommit(t, s, opts, recs).Manifest
		if len(recs) == 0 {
			parent = nil
		}
		edits := randomEdits(rng, recs, 1+rng.IntN(12))
		res, err := snapshot.ApplyEdits(ctx, s, opts, parent, edits)
		if err != nil {
			t.Fatal(err)
		}
		want := applyToRecords(recs, edits)
		full, err := snapshot.BuildOn(ctx, memstore.New(), opts, nil, source(want))
		if err != nil {
			t.Fatal(err)
		}
		got := res.Manifest
		if got.StreamHash != full.Manifest.StreamHash || got.Records != full.Manifest.Records || got.StreamLen != full.Manifest.StreamLen || len(got.Chunks) != len(full.Manifest.Chunks) {
			t.Fatalf("trial %d: patched version differs from a full build: %d/%d chunks, %d/%d records",
				trial, len(got.Chunks), len(full.Manifest.Chunks), got.Records, full.Manifest.Records)
		}
		for i := range got.Chunks {
			if got.Chunks[i].ID != full.Manifest.Chunks[i].ID {
				t.Fatalf("trial %d: chunk %d differs", trial, i)
			}
		}
		if err := snapshot.Commit(ctx, s, got); err != nil {
			t.Fatal(err)
		}
		back, err := readAll(t, s, "o", "u", got.Version)
		if err != nil {
			t.Fatal(err)
		}
		sameRecords(t, back, want)
	}
}

func TestApplyEditsReadsLittle(t *testing.T) {
	ctx := context.Background()
	recs := gen.Dataset(gen.Options{Size: 4 << 20, Seed: 3})
	s := snapshot.NewCountingStore(memstore.New())
	opts := buildOpts("o", "u")
	parent := buildCommit(t, s, opts, recs).Manifest
	edits := randomEdits(rand.New(rand.NewPCG(1, 1)), recs[:len(recs)/2], 3)
	for i := range edits { // keep it to small values
		if !edits[i].Delete {
			edits[i].Value = []byte(`{"x":1}`)
		}
	}
	before := s.Counts()
	res, err := snapshot.ApplyEdits(ctx, s, opts, parent, edits)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Counts()
	read := c.BytesRead - before.BytesRead
	if read > int64(parent.StoredBytes())/10 || c.Puts-before.Puts > 1 {
		t.Fatalf("3 edits read %d of %d stored bytes and wrote %d objects", read, parent.StoredBytes(), c.Puts-before.Puts)
	}
	if res.ChunksNew > 3*3 {
		t.Fatalf("%d new chunks for 3 edits", res.ChunksNew)
	}
}

func TestApplyEditsRejectsBadInput(t *testing.T) {
	s := snapshot.NewCountingStore(memstore.New())
	opts := buildOpts("o", "u")
	for name, edits := range map[string][]snapshot.Edit{
		"unsorted":  {{Key: "b", Value: []byte("1")}, {Key: "a", Value: []byte("1")}},
		"duplicate": {{Key: "a", Value: []byte("1")}, {Key: "a", Delete: true}},
		"bad key":   {{Key: "", Value: []byte("1")}},
	} {
		if _, err := snapshot.ApplyEdits(context.Background(), s, opts, nil, edits); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := s.Counts().Writes(); n != 0 {
		t.Fatalf("%d writes", n)
	}
}
