package wire_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

var secret = []byte("wire-test-secret-0123456789")

func build(t testing.TB, s snapshot.Store, recs []gen.Record) *snapshot.Manifest {
	t.Helper()
	o := snapshot.DefaultBuildOptions()
	o.Org, o.User, o.Secret = "acme", "alice", secret
	o.Now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	res, _, err := diff.BuildVersion(context.Background(), s, o, gen.NewSource(recs))
	if err != nil {
		t.Fatal(err)
	}
	return res.Manifest
}

// pack writes the delta a->b in the newest format.
func pack(t testing.TB, s snapshot.Store, a, b *snapshot.Manifest, skip int) []byte {
	t.Helper()
	return packFormat(t, s, a, b, skip, 0)
}

// packFormat writes the delta a->b in the given format.
func packFormat(t testing.TB, s snapshot.Store, a, b *snapshot.Manifest, skip, format int) []byte {
	t.Helper()
	ds := wire.DeltaSource{Script: diff.Manifests(a, b), NewChunks: snapshot.NewReader(s, b, secret), Format: format}
	if a != nil {
		ds.OldChunks = snapshot.NewReader(s, a, secret)
		ds.Header.From = a.Version
	}
	ds.Header.To, ds.Header.Skip = b.Version, skip
	ds.Header.IDSeeds = snapshot.NewHasher(secret, "acme", "alice").Seeds()
	var buf bytes.Buffer
	if err := wire.WriteDelta(context.Background(), &buf, ds); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// chunkMap reads every chunk of m.
func chunkMap(t testing.TB, s snapshot.Store, m *snapshot.Manifest) map[snapshot.ChunkID][]byte {
	out := map[snapshot.ChunkID][]byte{}
	if m == nil {
		return out
	}
	r := snapshot.NewReader(s, m, secret)
	idx := make([]int, len(m.Chunks))
	for i := range idx {
		idx[i] = i
	}
	if err := r.Chunks(context.Background(), idx, func(i int, raw []byte) error {
		out[m.Chunks[i].ID] = bytes.Clone(raw)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// apply decodes a delta pack like a client: old chunks come from have.
func apply(t testing.TB, data []byte, a *snapshot.Manifest, have map[snapshot.ChunkID][]byte) ([]snapshot.ChunkRef, map[snapshot.ChunkID][]byte, error) {
	var old []snapshot.ChunkRef
	if a != nil {
		old = a.Chunks
	}
	d, err := wire.NewDeltaReader(bytes.NewReader(data), old)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	got := map[snapshot.ChunkID][]byte{}
	for {
		j, raw, err := d.Next(func(i int) ([]byte, error) {
			if i >= len(old) {
				return nil, snapshot.ErrNotExist
			}
			return have[old[i].ID], nil
		})
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		got[d.Chunks()[j].ID] = bytes.Clone(raw)
	}
	if data[4] == wire.DeltaFormat && a != nil {
		// The same pack read in edit mode gives the same list and chunks.
		chunks, egot, err := applyEdit(t, data, old, have)
		if errors.Is(err, errFullSync) {
			return d.Chunks(), got, nil
		}
		if err != nil {
			t.Fatalf("edit mode: %v (the list mode read the pack)", err)
		}
		if len(chunks) != len(d.Chunks()) || len(egot) != len(got) {
			t.Fatalf("edit mode: %d chunks (%d received), list mode %d (%d)", len(chunks), len(egot), len(d.Chunks()), len(got))
		}
		for j := range chunks {
			g, w := chunks[j], d.Chunks()[j]
			if g.ID != w.ID || g.Size != w.Size || g.Records != w.Records || g.Continued != w.Continued || g.FirstKey != w.FirstKey {
				t.Fatalf("edit mode: chunk %d is %+v, list mode %+v", j, g, w)
			}
		}
	}
	return d.Chunks(), got, nil
}

var errFullSync = errors.New("a full sync")

// sliceBase is a wire.Base of a chunk list in memory.
type sliceBase []snapshot.ChunkRef

func (b sliceBase) Len() int { return len(b) }
func (b sliceBase) Chunk(i int) (snapshot.ChunkRef, error) {
	if i < 0 || i >= len(b) {
		return snapshot.ChunkRef{}, fmt.Errorf("old chunk %d of %d", i, len(b))
	}
	return b[i], nil
}
func (b sliceBase) Totals() (uint64, uint64) {
	var n, r uint64
	for _, c := range b {
		n, r = n+uint64(c.Size), r+uint64(c.Records)
	}
	return n, r
}

// applyEdit reads a format-3 delta in edit mode and returns the new list
// it describes, materialised, and the chunks it carried.
func applyEdit(t testing.TB, data []byte, old []snapshot.ChunkRef, have map[snapshot.ChunkID][]byte) ([]snapshot.ChunkRef, map[snapshot.ChunkID][]byte, error) {
	d, err := wire.NewDeltaReaderBase(bytes.NewReader(data), sliceBase(old))
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	e := d.Edit()
	if e == nil {
		if d.Header().From != 0 {
			t.Fatalf("a format-3 delta from %d read in list mode by NewDeltaReaderBase", d.Header().From)
		}
		return nil, nil, errFullSync
	}
	at := map[int]int{} // new index -> entry
	k := 0
	for _, r := range e.Regions {
		for j := r.NewFrom; j < r.NewTo; j++ {
			at[j], k = k, k+1
		}
	}
	got := map[snapshot.ChunkID][]byte{}
	for {
		j, raw, err := d.Next(func(i int) ([]byte, error) { return have[old[i].ID], nil })
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		k, ok := at[j]
		if !ok {
			t.Fatalf("edit mode: chunk %d received outside the regions", j)
		}
		got[e.Entries[k].ID] = bytes.Clone(raw)
	}
	var out []snapshot.ChunkRef
	i, k := 0, 0
	for _, r := range e.Regions {
		if r.OldFrom < i || r.NewFrom != len(out)+r.OldFrom-i || r.OldTo < r.OldFrom || r.NewTo < r.NewFrom {
			t.Fatalf("edit mode: region %+v after old %d, new %d", r, i, len(out))
		}
		out = append(out, old[i:r.OldFrom]...)
		out = append(out, e.Entries[k:k+r.NewTo-r.NewFrom]...)
		k, i = k+r.NewTo-r.NewFrom, r.OldTo
	}
	out = append(out, old[i:]...)
	if len(out) != e.Len || k != len(e.Entries) {
		t.Fatalf("edit mode: %d chunks of %d, %d entries of %d used", len(out), e.Len, k, len(e.Entries))
	}
	return out, got, nil
}

func streamFrom(chunks []snapshot.ChunkRef, have ...map[snapshot.ChunkID][]byte) []byte {
	var out []byte
	for _, c := range chunks {
		for _, h := range have {
			if b, ok := h[c.ID]; ok {
				out = append(out, b...)
				break
			}
		}
	}
	return out
}

func streamOf(recs []gen.Record) []byte {
	var b []byte
	for _, r := range recs {
		b = snapshot.AppendRecord(b, r.Key, r.Value)
	}
	return b
}

func TestDeltaOneRecordEditIsTiny(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 2 << 20, Seed: 1})
	a := build(t, s, recs)
	edited := gen.EditOneField(recs, 3)
	b := build(t, s, edited)
	data := pack(t, s, a, b, 0)
	have := chunkMap(t, s, a)
	chunks, got, err := apply(t, data, a, have)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(streamFrom(chunks, got, have), streamOf(edited)) {
		t.Fatal("rebuilt stream differs")
	}
	t.Logf("1-record edit on 2 MiB: delta pack %d bytes", len(data))
	if len(data) > 1500 {
		t.Fatalf("delta pack of %d bytes for a one-field edit", len(data))
	}
}

// TestDeltaFullSyncBelowZstd: a full sync is smaller than zstd -3 of the
// stream (klauspost's level 3, as the bench measures it), a small one at
// the delta groups' level, one of at least a full group at the highest.
func TestDeltaFullSyncBelowZstd(t *testing.T) {
	for _, tc := range []struct {
		size     int64
		maxRatio float64
	}{{4 << 20, 0.93}, {10 << 20, 0.89}} { // 0.916, 0.878 in groups of 1 MiB or a 24th (0.902, 0.857 in 2-8 MiB groups)
		if tc.size > 8<<20 && raceEnabled {
			t.Logf("%d MiB: skipped under the race detector (the highest level is too slow there)", tc.size>>20)
			continue
		}
		s := memstore.New()
		recs := gen.Dataset(gen.Options{Size: tc.size, Seed: 2})
		b := build(t, s, recs)
		data := pack(t, s, nil, b, 0)
		chunks, got, err := apply(t, data, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		stream := streamFrom(chunks, got)
		if !bytes.Equal(stream, streamOf(recs)) {
			t.Fatal("rebuilt stream differs")
		}
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		z := len(enc.EncodeAll(stream, nil))
		ratio := float64(len(data)) / float64(z)
		t.Logf("%d MiB: full sync %d bytes, zstd -3 of the stream %d: %.3fx", tc.size>>20, len(data), z, ratio)
		if ratio > tc.maxRatio {
			t.Errorf("%d MiB: full sync is %.3fx zstd -3, want at most %.2f", tc.size>>20, ratio, tc.maxRatio)
		}
	}
}

func TestDeltaResume(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 3})
	b := build(t, s, recs)
	full := pack(t, s, nil, b, 0)
	_, all, err := apply(t, full, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	half := len(b.Chunks) / 2
	rest := pack(t, s, nil, b, half)
	chunks, got, err := apply(t, rest, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(all)-half {
		t.Fatalf("resumed pack carries %d chunks, want %d", len(got), len(all)-half)
	}
	for id := range got {
		if _, ok := all[id]; !ok {
			t.Fatal("resumed pack has an unknown chunk")
		}
	}
	if float64(len(rest)) > 0.55*float64(len(full)) {
		t.Fatalf("resume from 50%% costs %d of %d bytes", len(rest), len(full))
	}
	_ = chunks
}

func TestDeltaRejectsDamage(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 4})
	a := build(t, s, recs)
	b := build(t, s, gen.EditScattered(recs, 5, 1))
	have := chunkMap(t, s, a)
	for _, format := range formats {
		rejectsDamage(t, packFormat(t, s, a, b, 0, format), a, have, gen.EditScattered(recs, 5, 1))
	}
}

func rejectsDamage(t *testing.T, data []byte, a *snapshot.Manifest, have map[snapshot.ChunkID][]byte, want []gen.Record) {
	for n := 0; n < len(data); n += max(1, len(data)/200) {
		if _, _, err := apply(t, data[:n], a, have); err == nil {
			t.Fatalf("truncated to %d of %d bytes: accepted", n, len(data))
		}
	}
	for i := 0; i < len(data); i += max(1, len(data)/300) {
		bad := bytes.Clone(data)
		bad[i] ^= 0x20
		chunks, got, err := apply(t, bad, a, have)
		if err == nil && !bytes.Equal(streamFrom(chunks, got, have), streamOf(want)) {
			t.Fatalf("flipped byte %d: accepted wrong data", i)
		}
		if err != nil && !errors.Is(err, wire.ErrBadDelta) && !errors.Is(err, snapshot.ErrCorrupt) && !errors.Is(err, snapshot.ErrUnsupportedVersion) {
			t.Fatalf("flipped byte %d: untyped error %v", i, err)
		}
	}
}

func FuzzDeltaReader(f *testing.F) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 5})
	a := build(f, s, recs)
	b := build(f, s, gen.EditScattered(recs, 2, 1))
	have := chunkMap(f, s, a)
	for _, format := range formats {
		f.Add(packFormat(f, s, a, b, 0, format))
		f.Add(packFormat(f, s, nil, b, 1, format))
	}
	ds := deltaSource(s, a, b)
	ds.NewChunks = failingGetter{r: ds.NewChunks, at: ds.Script.Needed()[0], err: snapshot.ErrCorrupt}
	var aborted bytes.Buffer
	wire.WriteDelta(context.Background(), &aborted, ds)
	f.Add(aborted.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		apply(t, data, a, have) // must not panic or hang
		wire.Breakdown(data)    // nor the bench's parser
	})
}

// TestDeltaStreamNeedsOneMiBWindow protects the device's memory: a format-2
// delta pack's zstd stream must decode with a window of 1 MiB, so a phone
// never holds more history than that (issue 13). Format 3 (one stream per
// group, not one per pack) decodes a group of up to 8 MiB (a full sync's)
// against a dictionary of up to 4 MiB (a delta's) instead: not covered by
// this test (see the merge's note).
func TestDeltaStreamNeedsOneMiBWindow(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 4 << 20, Seed: 3})
	b := build(t, s, recs)
	data := packFormat(t, s, nil, b, 0, wire.DeltaFormat2)
	dec, err := zstd.NewReader(bytes.NewReader(data[len(wire.DeltaMagic)+1:]),
		zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	n, err := io.Copy(io.Discard, dec)
	if err != nil {
		t.Fatalf("decoding with a 1 MiB window: %v", err)
	}
	if n < int64(len(streamOf(recs)))/2 {
		t.Fatalf("decoded %d bytes of a %d-byte data set", n, len(streamOf(recs)))
	}
}

// TestFormat2StreamCannotClaimABigWindow: a format-2 pack is one zstd
// stream, whose decoder allocates the window its frame header claims; a
// 2 KB pack claiming 64 MiB made the device allocate 66 MB. Windows past
// the 8 MiB any server wrote are refused before anything is allocated.
func TestFormat2StreamCannotClaimABigWindow(t *testing.T) {
	pack := func(windowLog byte) []byte {
		b := []byte(wire.DeltaMagic + string(rune(wire.DeltaFormat2)))
		b = append(b, 0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog-10)<<3)
		for i := range 16 {
			h := uint32(128<<10)<<3 | 1<<1 // RLE block of 128 KiB
			if i == 15 {
				h |= 1
			}
			b = append(b, byte(h), byte(h>>8), byte(h>>16), 'x')
		}
		return b
	}
	for _, tc := range []struct {
		windowLog byte
		refused   bool
	}{{23, false}, {26, true}} {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		d, err := wire.NewDeltaReader(bytes.NewReader(pack(tc.windowLog)), nil)
		runtime.ReadMemStats(&m1)
		if d != nil {
			d.Close()
		}
		if err == nil {
			t.Fatalf("window 2^%d: a pack of RLE blocks read as a delta", tc.windowLog)
		}
		alloc := m1.TotalAlloc - m0.TotalAlloc
		if tc.refused && (alloc > 16<<20 || !strings.Contains(err.Error(), "window")) {
			t.Errorf("window 2^%d: allocated %d MiB, error %v; want it refused for its window", tc.windowLog, alloc>>20, err)
		}
		if !tc.refused && strings.Contains(err.Error(), "window") {
			t.Errorf("window 2^%d (zstd's default, written by older servers) refused for its window: %v", tc.windowLog, err)
		}
	}
}
