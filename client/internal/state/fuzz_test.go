package state

import (
	"bytes"
	"crypto/sha256"
	"reflect"
	"testing"

	"github.com/deltasync/deltasync/snapshot"
)

// FuzzLocalManifest: any bytes decode to a manifest or an error, never a
// panic; what decodes encodes to bytes that decode to the same manifest.
func FuzzLocalManifest(f *testing.F) {
	m := &snapshot.Manifest{Version: 3, Records: 2, ChunkerName: snapshot.ChunkerName, Chunker: snapshot.DefaultChunkerParams(),
		Chunks: []snapshot.ChunkRef{{ID: snapshot.ChunkID{1}, Size: 10, Records: 2, FirstKey: "a/1"}, {ID: snapshot.ChunkID{2}, Sum: sha256.Sum256(nil), Size: 70000, Continued: true, FirstKey: "a/12"}}}
	good, err := marshalManifest(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte("DSLM\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := unmarshalManifest(data)
		if err != nil {
			return
		}
		again, err := marshalManifest(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := unmarshalManifest(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("decoded %+v, re-encoded and decoded %+v, %v", m, m2, err)
		}
	})
}

// FuzzLocation: a record location decodes or errs; a decoded one encodes
// back.
func FuzzLocation(f *testing.F) {
	f.Add(appendLoc(nil, 300, []uint64{7}))
	f.Add(appendLoc(nil, 0, []uint64{1, 2, 3}))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, loc []byte) {
		off, seqs, err := parseLoc(loc)
		if err != nil {
			return
		}
		if got := appendLoc(nil, off, seqs); !bytes.Equal(got, loc) {
			// Non-minimal varints decode too; they must at least decode
			// the same way.
			off2, seqs2, err := parseLoc(got)
			if err != nil || off2 != off || len(seqs2) != len(seqs) {
				t.Fatalf("%x: %d %v, re-encoded %x", loc, off, seqs, got)
			}
		}
	})
}

// FuzzWalker: chunks of any bytes decode to records or an error, never a
// panic, and every record's location points at it.
func FuzzWalker(f *testing.F) {
	var stream []byte
	stream = snapshot.AppendRecord(stream, "a", []byte(`1`))
	stream = snapshot.AppendRecord(stream, "b", bytes.Repeat([]byte("x"), 300))
	f.Add(stream, 5)
	f.Add(stream[:10], 3)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		if cut < 0 || cut > len(data) {
			cut = len(data) / 2
		}
		chunks := [][]byte{data[:cut], data[cut:]}
		w := &walker{}
		for i, c := range chunks {
			err := w.feed(uint64(i+1), c, func(r record) error {
				off, seqs, err := parseLoc(r.loc)
				if err != nil || len(seqs) == 0 || int(seqs[0]) > len(chunks) || off > len(chunks[seqs[0]-1]) {
					t.Fatalf("record %q at %x: %v", r.key, r.loc, err)
				}
				return nil
			})
			if err != nil {
				return
			}
		}
		w.close()
	})
}
