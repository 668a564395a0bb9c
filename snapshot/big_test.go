package snapshot_test

import (
	"math/rand/v2"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

// Big-data acceptance tests run once per CI run without the race detector
// (scripts/test runs them with -run Big); under -race or -short they skip.

func bigDataset(t *testing.T) []gen.Record {
	if testing.Short() || raceEnabled {
		t.Skip("64 MB acceptance test: run without -race/-short (scripts/test does)")
	}
	return gen.Dataset(gen.Options{Size: 64 << 20, Seed: 1})
}

func TestBigChunkSizes(t *testing.T) {
	recs := bigDataset(t)
	p := snapshot.DefaultChunkerParams()
	chunks := chunkAll(t, p, recs)
	var total, n int
	for _, c := range chunks {
		if c.Size > p.Max {
			t.Errorf("chunk %s: %d bytes > max", c.FirstKey, c.Size)
		}
		if c.Oversize {
			continue
		}
		total += c.Size
		n++
	}
	mean := float64(total) / float64(n)
	t.Logf("%d chunks (%d from ordinary records), mean %.0f bytes (avg param %d)", len(chunks), n, mean, p.Avg)
	if mean < 0.75*float64(p.Avg) || mean > 1.25*float64(p.Avg) {
		t.Errorf("mean chunk size %.0f not within ±25%% of %d", mean, p.Avg)
	}
}

func TestBigEditLocality(t *testing.T) {
	recs := bigDataset(t)
	p := snapshot.DefaultChunkerParams()
	base := chunkAll(t, p, recs)
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(name string, edit func() []gen.Record) {
		worst, sum := 0, 0
		const trials = 100
		for range trials {
			n := newChunks(base, chunkAll(t, p, edit()))
			worst = max(worst, n)
			sum += n
		}
		mean := float64(sum) / trials
		t.Logf("%s: mean %.2f, worst %d changed chunks", name, mean, worst)
		if worst > 3 || mean > 2.2 {
			t.Errorf("%s: mean %.2f worst %d changed chunks, want mean <= 2.2 and worst <= 3", name, mean, worst)
		}
	}
	check("edit one record", func() []gen.Record {
		out := append([]gen.Record(nil), recs...)
		i := rng.IntN(len(out))
		v := append([]byte(nil), out[i].Value...)
		v[len(v)/2] ^= 1 // still the same length; content differs
		out[i].Value = v
		return out
	})
	check("insert one record", func() []gen.Record {
		i := rng.IntN(len(recs))
		out := append([]gen.Record(nil), recs[:i+1]...)
		out = append(out, gen.Record{Key: recs[i].Key + "~new", Value: []byte(`{"title":"inserted","n":1}`)})
		return append(out, recs[i+1:]...)
	})
	check("delete one record", func() []gen.Record {
		i := rng.IntN(len(recs))
		out := append([]gen.Record(nil), recs[:i]...)
		return append(out, recs[i+1:]...)
	})
}
