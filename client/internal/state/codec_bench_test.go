package state

import (
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

// BenchmarkChunkCodec compares how the device stores chunks (S2 with a
// CRC-32C) with zstd's fastest level, on the chunks of a 16 MB generated
// data set: MB/s of raw chunk bytes, and the stored size per raw byte.
//
//	go test -run '^$' -bench ChunkCodec ./client/internal/state
func BenchmarkChunkCodec(b *testing.B) {
	var chunks [][]byte
	var total int64
	ch, err := snapshot.NewChunker(snapshot.DefaultChunkerParams(), func(c snapshot.ChunkData) error {
		chunks = append(chunks, append([]byte(nil), c.Data...))
		total += int64(len(c.Data))
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, r := range gen.Dataset(gen.Options{Size: 16 << 20, Seed: 1}) {
		if err := ch.Add(r.Key, r.Value); err != nil {
			b.Fatal(err)
		}
	}
	ch.Close()
	zenc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true), zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<20))
	zdec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	s2c := newChunkCodec()
	codecs := []struct {
		name string
		enc  func(dst, raw []byte) []byte
		dec  func(stored, dst []byte) ([]byte, error)
	}{
		{"s2", s2c.encode, func(stored, dst []byte) ([]byte, error) { return s2c.decodeUncached(0, stored, dst) }},
		{"zstd-fastest", func(dst, raw []byte) []byte { return zenc.EncodeAll(raw, dst) },
			func(stored, dst []byte) ([]byte, error) { return zdec.DecodeAll(stored, dst[:0]) }},
	}
	for _, c := range codecs {
		stored := make([][]byte, len(chunks))
		var n int64
		for i, raw := range chunks {
			stored[i] = c.enc(nil, raw)
			n += int64(len(stored[i]))
		}
		b.Run(c.name+"/encode", func(b *testing.B) {
			b.SetBytes(total)
			b.ReportAllocs()
			var buf []byte
			for range b.N {
				for _, raw := range chunks {
					buf = c.enc(buf[:0], raw)
				}
			}
			b.ReportMetric(float64(n)/float64(total), "stored/raw")
		})
		b.Run(c.name+"/decode", func(b *testing.B) {
			b.SetBytes(total)
			b.ReportAllocs()
			var buf []byte
			for range b.N {
				for _, s := range stored {
					var err error
					if buf, err = c.dec(s, buf); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkDecodeChunkList decodes the chunk list of a 64 MB data set
// (8,000 chunks) from its pages, as the first pull of a process does.
func BenchmarkDecodeChunkList(b *testing.B) {
	const n = 8000
	chunks := make([]snapshot.ChunkRef, n)
	seqs := make([]uint64, n)
	for i := range chunks {
		chunks[i] = snapshot.ChunkRef{Size: 8000, Records: 10, FirstKey: fmt.Sprintf("tasks/%08d", i*10)}
		chunks[i].ID[0], chunks[i].Sum[1] = byte(i), byte(i>>8)
		seqs[i] = uint64(i + 1)
	}
	var pages [][]byte
	for i := 0; i < n; i += pageChunks {
		end := min(i+pageChunks, n)
		pages = append(pages, encodePage(chunks[i:end], seqs[i:end]))
	}
	b.ReportAllocs()
	for b.Loop() {
		got, gotSeqs := make([]snapshot.ChunkRef, 0, n), make([]uint64, 0, n)
		r := &entryReader{}
		for _, p := range pages {
			if err := r.page(p, &got, &gotSeqs); err != nil {
				b.Fatal(err)
			}
		}
		if len(got) != n || got[n-1].FirstKey != chunks[n-1].FirstKey {
			b.Fatal("decoded wrong")
		}
	}
}
