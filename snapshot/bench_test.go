package snapshot_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// Benchmarks share one 16 MiB data set. Report build throughput as a ratio
// to BenchmarkZstdBaseline (single-threaded klauspost zstd at level 3 over the
// same stream), measured in the same run:
//
//	go test -run '^$' -bench . -benchtime 5x ./snapshot

var (
	benchOnce sync.Once
	benchRecs []gen.Record
	benchData []byte
)

func benchSet(b *testing.B) ([]gen.Record, []byte) {
	benchOnce.Do(func() {
		benchRecs = gen.Dataset(gen.Options{Size: 16 << 20, Seed: 1})
		benchData = streamOf(benchRecs)
	})
	b.SetBytes(int64(len(benchData)))
	b.ReportAllocs()
	return benchRecs, benchData
}

func BenchmarkZstdBaseline(b *testing.B) {
	_, data := benchSet(b)
	enc, err := zstd.NewWriter(io.Discard, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		enc.Reset(io.Discard)
		enc.Write(data)
		enc.Close()
	}
}

func BenchmarkChunker(b *testing.B) {
	recs, _ := benchSet(b)
	n := 0
	c, err := snapshot.NewChunker(snapshot.DefaultChunkerParams(), func(snapshot.ChunkData) error { n++; return nil })
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		for _, r := range recs {
			c.Add(r.Key, r.Value)
		}
		c.Close()
	}
}

func BenchmarkChunkID(b *testing.B) {
	_, data := benchSet(b)
	h := snapshot.NewHasher(testSecret, "o", "u")
	for b.Loop() {
		for off := 0; off < len(data); off += 8 << 10 {
			h.Sum(data[off:min(off+8<<10, len(data))])
		}
	}
}

func BenchmarkBuildFS(b *testing.B) {
	recs, _ := benchSet(b)
	s, err := fsstore.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	i := 0
	for b.Loop() {
		opts := buildOpts("bench", fmt.Sprintf("u%d", i))
		i++
		res, err := snapshot.Build(ctx, s, opts, source(recs))
		if err != nil {
			b.Fatal(err)
		}
		if err := snapshot.Commit(ctx, s, res.Manifest); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadFS(b *testing.B) {
	recs, _ := benchSet(b)
	s, err := fsstore.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	res := buildCommit(b, s, buildOpts("bench", "reader"), recs)
	r := snapshot.NewReader(s, res.Manifest, testSecret)
	ctx := context.Background()
	for b.Loop() {
		if err := r.Records(ctx, func(k, v []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuildMem(b *testing.B) {
	recs, _ := benchSet(b)
	s := memstore.New()
	ctx := context.Background()
	i := 0
	for b.Loop() {
		opts := buildOpts("bench", fmt.Sprintf("u%d", i))
		i++
		if _, err := snapshot.Build(ctx, s, opts, source(recs)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyEdits applies 10 scattered edits to data sets of 1 MiB and
// 64 MiB in the local store: the cost follows the edit, not the data set.
func BenchmarkApplyEdits(b *testing.B) {
	for _, size := range []int64{1 << 20, 64 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			s, err := fsstore.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			recs := gen.Dataset(gen.Options{Size: size, Seed: 1})
			opts := buildOpts("bench", "u")
			parent := buildCommit(b, s, opts, recs).Manifest
			edited := gen.EditScattered(recs, 10, 2)
			var edits []snapshot.Edit
			for i, j := 0, 0; i < len(recs); i++ {
				for edited[j].Key < recs[i].Key {
					j++
				}
				if string(edited[j].Value) != string(recs[i].Value) {
					edits = append(edits, snapshot.Edit{Key: recs[i].Key, Value: edited[j].Value})
				}
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := snapshot.ApplyEdits(ctx, s, opts, parent, edits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
