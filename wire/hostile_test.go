package wire_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
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
	hdrEnc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderDictRaw(1, []byte(wire.HeaderDict)))
	for _, part := range [][]byte{hj, man} {
		f := hdrEnc.EncodeAll(part, nil)
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

// sections3 takes a one-group format-3 pack apart: header JSON, manifest
// delta, group header (chunk count and dictionary runs) and group content,
// all decompressed.
func sections3(t testing.TB, pack []byte) (hdr, man, ghdr, content []byte) {
	dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderDictRaw(1, []byte(wire.HeaderDict)))
	b := pack[5:]
	frame := func() []byte {
		n, k := binary.Uvarint(b)
		f := b[k : k+int(n)]
		b = b[k+int(n):]
		out, err := dec.DecodeAll(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	hdr, man = frame(), frame()
	if b[0] != 1 {
		t.Fatalf("section %d", b[0])
	}
	start := b[1:]
	b = start
	_, k := binary.Uvarint(b) // chunks
	b = b[k:]
	runs, k := binary.Uvarint(b)
	b = b[k:]
	for range 2 * runs {
		_, k = binary.Uvarint(b)
		b = b[k:]
	}
	ghdr = start[:len(start)-len(b)]
	n, k := binary.Uvarint(b)
	if b[k+int(n)] != 0xff {
		t.Fatal("more than one group")
	}
	return hdr, man, ghdr, nil
}

// FuzzDelta3Sections fuzzes what format 3's frames hold, not the frames
// (whose checksums turn most mutations of a pack into one error): the
// header, the manifest delta, a group's header and its content are
// assembled into a pack of valid frames; the group's dictionary, when its
// runs ask for one, is the old chunks they name.
func FuzzDelta3Sections(f *testing.F) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 6})
	a := build(f, s, recs)
	b := build(f, s, gen.EditScattered(recs, 2, 1))
	have := chunkMap(f, s, a)
	all := chunkMap(f, s, b)
	for _, from := range []*snapshot.Manifest{a, nil} {
		hdr, man, ghdr, _ := sections3(f, pack(f, s, from, b, 0))
		var content []byte
		for _, j := range diff.Manifests(from, b).Needed() {
			content = append(content, all[b.Chunks[j].ID]...)
		}
		// The seeds are packs the reader takes whole: the fuzzer starts
		// from the deep end.
		chunks, got, err := apply(f, assemble3(hdr, man, ghdr, content), from, have)
		if err != nil || !bytes.Equal(streamFrom(chunks, got, have), streamOf(gen.EditScattered(recs, 2, 1))) {
			f.Fatalf("seed from %v: %v", from != nil, err)
		}
		f.Add(hdr, man, ghdr, content)
	}
	f.Fuzz(func(t *testing.T, hdr, man, ghdr, content []byte) {
		apply(t, assemble3(hdr, man, ghdr, content), a, have) // must not panic, hang or blow up
	})
}

// assemble3 makes a one-group format-3 pack of its sections. The content
// goes without dictionary: a frame with one would need the old chunks the
// runs name, which the reader assembles itself.
func assemble3(hdr, man, ghdr, content []byte) []byte {
	enc, hdrEnc := assembleEncoders()
	out := []byte(wire.DeltaMagic + "\x03")
	for _, part := range [][]byte{hdr, man} {
		fr := hdrEnc.EncodeAll(part, nil)
		out = append(binary.AppendUvarint(out, uint64(len(fr))), fr...)
	}
	out = append(append(out, 1), ghdr...)
	fr := enc.EncodeAll(content, nil)
	out = append(binary.AppendUvarint(out, uint64(len(fr))), fr...)
	return append(out, 0xff)
}

// TestDelta3RefusesDecompressionBombs: a frame of a few kilobytes that
// decompresses to far more than its section may hold (header, manifest
// delta, a group: tens of megabytes of zeros) is refused as a bad pack
// without the reader allocating what it would decompress to.
func TestDelta3RefusesDecompressionBombs(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 7})
	b := build(t, s, recs)
	all := chunkMap(t, s, b)
	hdr, man, ghdr, _ := sections3(t, pack(t, s, nil, b, 0))
	var content []byte
	for _, c := range b.Chunks {
		content = append(content, all[c.ID]...)
	}
	if _, _, err := apply(t, assemble3(hdr, man, ghdr, content), nil, nil); err != nil {
		t.Fatalf("the pack as it is: %v", err)
	}
	zeros := make([]byte, 48<<20)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"header", assemble3(append(slices.Clone(hdr), zeros[:16<<20]...), man, ghdr, content)},
		{"manifest delta", assemble3(hdr, append(slices.Clone(man), zeros...), ghdr, content)},
		{"group", assemble3(hdr, man, ghdr, append(slices.Clone(content), zeros...))},
	} {
		if len(tc.data) > 1<<20 {
			t.Fatalf("%s: the bomb is %d bytes, not small", tc.name, len(tc.data))
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := apply(t, tc.data, nil, nil)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, wire.ErrBadDelta) {
			t.Errorf("%s: %v, want ErrBadDelta", tc.name, err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
			t.Errorf("%s: reading a %d-byte bomb allocated %d bytes", tc.name, len(tc.data), got)
		}
	}
}

// assembleEncoders are assemble3's encoders, made once: making two per
// call held the fuzzer to about 30 inputs a second (and ran it past its
// deadline in CI). EncodeAll may be called concurrently.
var assembleEncoders = sync.OnceValues(func() (enc, hdrEnc *zstd.Encoder) {
	enc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
	hdrEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderDictRaw(1, []byte(wire.HeaderDict)))
	return enc, hdrEnc
})
