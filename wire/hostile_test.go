package wire_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/wire"
)

// hostileListPack is a pack whose manifest delta lists n chunks of a few
// compressible bytes each: a server (or something in between) making the
// client build a huge chunk list from a small download.
func hostileListPack(t *testing.T, format, n int, keyLen int) []byte {
	var h wire.SyncHeader
	h.To, h.Manifest.Chunks, h.Manifest.StreamLen = 1, n, uint64(n)
	hj, _ := json.Marshal(h)
	var man []byte
	if format == wire.DeltaFormat2 {
		man = append(man, 1) // insert
		man = binary.AppendUvarint(man, uint64(n))
		for i := range n {
			man = append(man, make([]byte, 16)...)
			man = append(man, 1, 0, 0) // size 1, no records, no flags
			shared := min(i, 1) * keyLen
			man = binary.AppendUvarint(man, uint64(shared))
			man = binary.AppendUvarint(man, uint64(keyLen-shared))
			man = append(man, bytes.Repeat([]byte("k"), keyLen-shared)...)
		}
		man = append(man, 2) // end
	} else {
		man = append(man, 2) // known
		man = binary.AppendUvarint(man, uint64(n))
		for i := range n {
			man = append(man, make([]byte, 16)...)
			man = append(man, 1, 0, 0)
			shared := min(i, 1) * keyLen
			man = binary.AppendUvarint(man, uint64(shared))
			man = binary.AppendUvarint(man, uint64(keyLen-shared))
			man = append(man, bytes.Repeat([]byte("k"), keyLen-shared)...)
		}
		man = append(man, 3) // end
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	out := []byte(wire.DeltaMagic + string(rune(format)))
	if format == wire.DeltaFormat2 {
		body := binary.AppendUvarint(nil, uint64(len(hj)))
		body = append(append(append(body, hj...), man...), 0xff)
		return append(out, enc.EncodeAll(body, nil)...)
	}
	for _, part := range [][]byte{hj, man} {
		f := enc.EncodeAll(part, nil)
		out = append(binary.AppendUvarint(out, uint64(len(f))), f...)
	}
	return append(out, 0xff)
}

// TestReaderBoundsTheChunkList: a pack that lists millions of chunks in a
// few kilobytes (or gives every chunk a long first key by front coding) is
// refused before the client has spent hundreds of megabytes on the list.
func TestReaderBoundsTheChunkList(t *testing.T) {
	for _, format := range formats {
		for _, tc := range []struct{ n, keyLen int }{{3_000_000, 0}, {400_000, 500}} {
			t.Run(fmt.Sprintf("format%d/%d-chunks/key%d", format, tc.n, tc.keyLen), func(t *testing.T) {
				data := hostileListPack(t, format, tc.n, tc.keyLen)
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				d, err := wire.NewDeltaReader(bytes.NewReader(data), nil)
				runtime.ReadMemStats(&after)
				if err == nil {
					d.Close()
				}
				alloc := after.TotalAlloc - before.TotalAlloc
				t.Logf("%d-byte pack: %v, %d MB allocated", len(data), err, alloc>>20)
				if !errors.Is(err, wire.ErrBadDelta) {
					t.Errorf("a list of %d chunks from %d bytes: %v, want ErrBadDelta", tc.n, len(data), err)
				}
				if alloc > 150<<20 {
					t.Errorf("%d MB allocated reading it", alloc>>20)
				}
			})
		}
	}
}
