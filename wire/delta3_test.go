package wire_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

var formats = []int{wire.DeltaFormat2, wire.DeltaFormat}

// sameChunkList compares what a client rebuilt with the server's manifest:
// every field a client keeps (the SHA-256 it adds itself).
func sameChunkList(t *testing.T, got []snapshot.ChunkRef, want *snapshot.Manifest) {
	t.Helper()
	if len(got) != len(want.Chunks) {
		t.Fatalf("%d chunks, want %d", len(got), len(want.Chunks))
	}
	for i := range got {
		g, w := got[i], want.Chunks[i]
		if g.ID != w.ID || g.Size != w.Size || g.Records != w.Records || g.Continued != w.Continued || g.FirstKey != w.FirstKey {
			t.Fatalf("chunk %d: got {%s %d recs %d cont %v %q}, want {%s %d recs %d cont %v %q}", i,
				g.ID, g.Size, g.Records, g.Continued, g.FirstKey, w.ID, w.Size, w.Records, w.Continued, w.FirstKey)
		}
	}
}

// TestDeltaFormatsRebuildEveryScenario: in both formats, a client at the
// previous version rebuilds the new stream and exactly the server's chunk
// list (IDs, sizes, records, continuations, first keys) after every bench
// scenario, and a full sync of the last version does too.
func TestDeltaFormatsRebuildEveryScenario(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 3 << 20, Seed: 31})
	a := build(t, s, recs)
	cur := recs
	for _, sc := range gen.Scenarios(31) {
		next := sc.Apply(cur)
		b := build(t, s, next)
		have := chunkMap(t, s, a)
		for _, format := range formats {
			t.Run(fmt.Sprintf("%s/format%d", sc.Name, format), func(t *testing.T) {
				froms := []*snapshot.Manifest{a}
				if sc.Name == "change-10pct" {
					froms = append(froms, nil)
				}
				for _, from := range froms {
					data := packFormat(t, s, from, b, 0, format)
					if data[4] != byte(format) {
						t.Fatalf("format byte %d", data[4])
					}
					chunks, got, err := apply(t, data, from, have)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(streamFrom(chunks, got, have), streamOf(next)) {
						t.Fatal("rebuilt stream differs")
					}
					sameChunkList(t, chunks, b)
				}
			})
		}
		cur, a = next, b
	}
}

// TestDelta3OversizeRecords: records bigger than the chunker's maximum are
// cut into pieces; a client derives their first keys and record counts too,
// also where a piece is too short to hold its key (the manifest then names
// it), and where an edit changes a piece in the middle of a record.
func TestDelta3OversizeRecords(t *testing.T) {
	for _, p := range []snapshot.ChunkerParams{snapshot.DefaultChunkerParams(), {Min: 64, Avg: 128, Max: 512}} {
		t.Run(fmt.Sprint(p.Max), func(t *testing.T) {
			s := memstore.New()
			rnd := rand.New(rand.NewPCG(1, 2))
			text := func(n int) string {
				b := make([]byte, n)
				for i := range b {
					b[i] = 'a' + byte(rnd.IntN(26))
				}
				return string(b)
			}
			long := text(400)
			recs := []gen.Record{
				{Key: "a/1", Value: []byte(`{"x":1}`)},
				{Key: "b/" + long, Value: []byte(`"` + text(300<<10) + `"`)},
				{Key: "c/2", Value: []byte(`{"y":"` + text(3000) + `"}`)},
				{Key: "d/" + long + "2", Value: []byte(`"` + text(200<<10) + `"`)},
			}
			a := buildWith(t, s, recs, p)
			cut := 0
			for _, c := range a.Chunks {
				if !c.Continued && c.Records == 1 && int(c.Size) < len(c.FirstKey) {
					cut++
				}
			}
			if p.Min == 64 && cut == 0 {
				t.Fatal("no piece too short for its key: the test misses the case it is for")
			}
			edited := append([]gen.Record(nil), recs...)
			v := bytes.Clone(recs[1].Value)
			copy(v[len(v)/2:], "EDITED")
			edited[1].Value = v
			b := buildWith(t, s, edited, p)
			have := chunkMap(t, s, a)
			for _, from := range []*snapshot.Manifest{a, nil} {
				ds := wire.DeltaSource{Script: diff.Manifests(from, b), NewChunks: snapshot.NewReader(s, b, secret)}
				if from != nil {
					ds.OldChunks = snapshot.NewReader(s, from, secret)
					ds.Header.From = from.Version
				}
				ds.Header.To, ds.Header.IDSeeds = b.Version, snapshot.NewHasher(secret, "acme", "alice").Seeds()
				var buf bytes.Buffer
				if err := wire.WriteDelta(context.Background(), &buf, ds); err != nil {
					t.Fatal(err)
				}
				chunks, got, err := apply(t, buf.Bytes(), from, have)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(streamFrom(chunks, got, have), streamOf(edited)) {
					t.Fatal("rebuilt stream differs")
				}
				sameChunkList(t, chunks, b)
			}
		})
	}
}

func buildWith(t testing.TB, s snapshot.Store, recs []gen.Record, p snapshot.ChunkerParams) *snapshot.Manifest {
	t.Helper()
	o := snapshot.DefaultBuildOptions()
	o.Org, o.User, o.Secret, o.Chunker = "acme", "alice", secret, p
	o.Now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	res, _, err := diff.BuildVersion(context.Background(), s, o, gen.NewSource(recs))
	if err != nil {
		t.Fatal(err)
	}
	return res.Manifest
}

// TestDelta3ResumeAnywhere: a download resumed after any number of chunks
// (inside a group too) carries exactly the rest; the chunks received before
// come as complete entries, so the list is whole.
func TestDelta3ResumeAnywhere(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 3 << 20, Seed: 32})
	a := build(t, s, recs)
	edited := gen.ChangeFraction(recs, 0.2, 32)
	b := build(t, s, edited)
	have := chunkMap(t, s, a)
	needed := diff.Manifests(a, b).Needed()
	all := chunkMap(t, s, b)
	for _, from := range []*snapshot.Manifest{a, nil} {
		n := len(needed)
		if from == nil {
			n = len(b.Chunks)
		}
		for _, skip := range []int{1, n / 3, n / 2, n - 1, n} {
			data := pack(t, s, from, b, skip)
			chunks, got, err := apply(t, data, from, have)
			if err != nil {
				t.Fatalf("skip %d: %v", skip, err)
			}
			if len(got) != n-skip {
				t.Fatalf("skip %d: %d chunks, want %d", skip, len(got), n-skip)
			}
			sameChunkList(t, chunks, b)
			if !bytes.Equal(streamFrom(chunks, all), streamOf(edited)) {
				t.Fatalf("skip %d: stream differs", skip)
			}
		}
	}
}

// TestDelta3BroadChangesCostLittle: the changes a migration makes to many
// records cost a fraction of what format 2 paid (one frame per chunk, each
// with its full chunk ID and first key in the manifest).
func TestDelta3BroadChangesCostLittle(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 8 << 20, Seed: 33})
	a := build(t, s, recs)
	for _, tc := range []struct {
		name  string
		edit  func([]gen.Record) []gen.Record
		ratio float64 // format 3 at most this much of format 2
	}{
		{"delete-300", func(r []gen.Record) []gen.Record { return gen.DeleteRandom(r, 300, 3) }, 0.5},
		{"change-10pct", func(r []gen.Record) []gen.Record { return gen.ChangeFraction(r, 0.1, 3) }, 0.6},
	} {
		b := build(t, s, tc.edit(recs))
		v2, v3 := packFormat(t, s, a, b, 0, 2), packFormat(t, s, a, b, 0, 3)
		t.Logf("%s: format 2 %d bytes, format 3 %d", tc.name, len(v2), len(v3))
		if float64(len(v3)) > tc.ratio*float64(len(v2)) {
			t.Errorf("%s: format 3 %d bytes, format 2 %d: want at most %.1fx", tc.name, len(v3), len(v2), tc.ratio)
		}
	}
}

// TestDelta3BoundsHostileLengths: lengths that claim more than the limits
// are refused before anything that big is allocated or decoded.
func TestDelta3BoundsHostileLengths(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 34})
	a := build(t, s, recs)
	b := build(t, s, gen.EditScattered(recs, 3, 1))
	have := chunkMap(t, s, a)
	good := pack(t, s, a, b, 0)
	hdrLen, n := binary.Uvarint(good[5:])
	manStart := 5 + n + int(hdrLen)
	manLen, m := binary.Uvarint(good[manStart:])
	groupStart := manStart + m + int(manLen)
	if good[groupStart] != 1 {
		t.Fatalf("no group at %d", groupStart)
	}
	huge := binary.AppendUvarint(nil, 1<<40)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"header length", concat(good[:5], huge, good[5:])},
		{"manifest length", concat(good[:manStart], huge)},
		{"group chunk count", concat(good[:groupStart+1], huge)},
		{"dictionary runs", concat(good[:groupStart+2], huge)},
	} {
		_, _, err := apply(t, tc.data, a, have)
		if !errors.Is(err, wire.ErrBadDelta) {
			t.Errorf("%s: %v, want ErrBadDelta", tc.name, err)
		}
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestDelta3DictionaryChunkMissing: a client that cannot read an old chunk a
// dictionary needs gets an error naming it (not a malformed pack), so it can
// repair its copy.
func TestDelta3DictionaryChunkMissing(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 35})
	a := build(t, s, recs)
	b := build(t, s, gen.EditScattered(recs, 3, 1))
	d, err := wire.NewDeltaReader(bytes.NewReader(pack(t, s, a, b, 0)), a.Chunks)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, _, err = d.Next(func(int) ([]byte, error) { return nil, snapshot.ErrNotExist })
	if !errors.Is(err, snapshot.ErrNotExist) || errors.Is(err, wire.ErrBadDelta) {
		t.Fatalf("Next: %v, want the base error", err)
	}
}

// TestDelta3UnknownFormatRefused: a writer asked for a format it does not
// know says so.
func TestDelta3UnknownFormatRefused(t *testing.T) {
	s := memstore.New()
	b := build(t, s, gen.Dataset(gen.Options{Size: 64 << 10, Seed: 36}))
	for _, f := range []int{1, 4, -1} {
		ds := deltaSource(s, nil, b)
		ds.Format = f
		if err := wire.WriteDelta(context.Background(), io.Discard, ds); !errors.Is(err, snapshot.ErrUnsupportedVersion) {
			t.Errorf("format %d: %v", f, err)
		}
	}
}

// TestBreakdownAddsUp: the parts of a pack add up to its length, and each
// is where it should be.
func TestBreakdownAddsUp(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 2 << 20, Seed: 37})
	a := build(t, s, recs)
	b := build(t, s, gen.ChangeFraction(recs, 0.05, 1))
	for _, tc := range []struct {
		name      string
		from      *snapshot.Manifest
		dictGroup bool
	}{{"delta", a, true}, {"full", nil, false}} {
		data := pack(t, s, tc.from, b, 0)
		pb, err := wire.Breakdown(data)
		if err != nil {
			t.Fatal(err)
		}
		if pb.Header+pb.Manifest+pb.Payload+pb.Framing != int64(len(data)) || pb.Header == 0 || pb.Manifest == 0 || pb.Payload == 0 || pb.Framing < 5 {
			t.Errorf("%s: %+v of %d bytes", tc.name, pb, len(data))
		}
		if pb.Groups == 0 || (pb.DictGroups == pb.Groups) != tc.dictGroup || pb.Payload < int64(len(data))/2 {
			t.Errorf("%s: %+v of %d bytes", tc.name, pb, len(data))
		}
		if _, err := wire.Breakdown(data[:len(data)-1]); !errors.Is(err, wire.ErrBadDelta) {
			t.Errorf("%s: truncated pack: %v", tc.name, err)
		}
	}
	if _, err := wire.Breakdown(packFormat(t, s, a, b, 0, 2)); !errors.Is(err, snapshot.ErrUnsupportedVersion) {
		t.Errorf("format 2: %v", err)
	}
}

// TestDelta3OpenAllocatesWhatItReads: opening a one-record delta of a
// version of ~1,000 chunks allocates the new chunk list and the decoders,
// not a buffer sized for the largest manifest delta the header's chunk
// count allows (some 590 bytes a chunk: 4.8 MB on 64 MB, for a manifest
// delta of a few bytes).
func TestDelta3OpenAllocatesWhatItReads(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 8 << 20, Seed: 5})
	a := build(t, s, recs)
	b := build(t, s, gen.EditOneField(recs, 3))
	data := packFormat(t, s, a, b, 0, wire.DeltaFormat)
	open := func() uint64 {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		d, err := wire.NewDeltaReader(bytes.NewReader(data), a.Chunks)
		runtime.ReadMemStats(&m1)
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		return m1.TotalAlloc - m0.TotalAlloc
	}
	open() // the decoders' tables are made once per process
	got := open()
	list := uint64(len(b.Chunks)) * uint64(unsafe.Sizeof(snapshot.ChunkRef{}))
	t.Logf("%d chunks: the list is %d bytes, opening allocated %d", len(b.Chunks), list, got)
	if got > 2*list+256<<10 {
		t.Errorf("opening a one-record delta of %d chunks allocated %d bytes, want at most %d", len(b.Chunks), got, 2*list+256<<10)
	}
}
