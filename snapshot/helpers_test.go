package snapshot_test

import (
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

var testSecret = []byte("test-secret-0123456789abcdef")

func source(recs []gen.Record) snapshot.RecordSource { return gen.NewSource(recs) }

// chunkInfo summarises one emitted chunk.
type chunkInfo struct {
	ID        snapshot.ChunkID
	Size      int
	FirstKey  string
	Continued bool
	Records   int
	Oversize  bool // piece of a record larger than Max
}

// chunkAll runs the chunker over records.
func chunkAll(t testing.TB, p snapshot.ChunkerParams, recs []gen.Record) []chunkInfo {
	t.Helper()
	h := snapshot.NewHasher(testSecret, "o", "u")
	big := map[string]bool{}
	for _, r := range recs {
		if snapshot.EncodedLen(r.Key, r.Value) > p.Max {
			big[r.Key] = true
		}
	}
	var out []chunkInfo
	c, err := snapshot.NewChunker(p, func(d snapshot.ChunkData) error {
		out = append(out, chunkInfo{ID: h.Sum(d.Data), Size: len(d.Data), FirstKey: d.FirstKey,
			Continued: d.Continued, Records: d.Records, Oversize: big[d.FirstKey] && (d.Continued || d.Records == 1)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := c.Add(r.Key, r.Value); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

// newChunks counts chunks of b whose IDs a lacks.
func newChunks(a, b []chunkInfo) int {
	have := map[snapshot.ChunkID]bool{}
	for _, c := range a {
		have[c.ID] = true
	}
	n := 0
	for _, c := range b {
		if !have[c.ID] {
			n++
		}
	}
	return n
}
