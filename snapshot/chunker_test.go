package snapshot_test

import (
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

func TestChunkerRecordAligned(t *testing.T) {
	recs := gen.Dataset(gen.Options{Size: 2 << 20, Seed: 3})
	p := snapshot.DefaultChunkerParams()
	chunks := chunkAll(t, p, recs)
	// Walk the stream: every chunk that is not Continued must start exactly
	// at a record boundary, and chunk sizes must add up to the stream.
	var stream int
	starts := map[int]bool{}
	for _, r := range recs {
		starts[stream] = true
		stream += snapshot.EncodedLen(r.Key, r.Value)
	}
	off, records := 0, 0
	for i, c := range chunks {
		if c.Continued == starts[off] {
			t.Fatalf("chunk %d at %d: continued=%v but record boundary=%v", i, off, c.Continued, starts[off])
		}
		if c.Size > p.Max {
			t.Errorf("chunk %d: %d bytes > max %d", i, c.Size, p.Max)
		}
		off += c.Size
		records += c.Records
	}
	if off != stream || records != len(recs) {
		t.Fatalf("chunks cover %d bytes / %d records, want %d / %d", off, records, stream, len(recs))
	}
}

func TestChunkerParamsValidate(t *testing.T) {
	bad := []snapshot.ChunkerParams{{}, {Min: 8 << 10, Avg: 8 << 10, Max: 64 << 10}, {Min: 2 << 10, Avg: 6 << 10, Max: 64 << 10}, {Min: 2 << 10, Avg: 8 << 10, Max: 4 << 10}, {Min: 2 << 10, Avg: 8 << 10, Max: 32 << 20}}
	for _, p := range bad {
		if _, err := snapshot.NewChunker(p, nil); err == nil {
			t.Errorf("params %+v accepted", p)
		}
	}
}
