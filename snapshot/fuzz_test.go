package snapshot_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

func sampleManifest(t testing.TB) []byte {
	m := &snapshot.Manifest{
		Org: "acme", User: "alice", Version: 3, Parent: 2,
		ChunkerName: snapshot.ChunkerName, ChunkerVersion: snapshot.ChunkerVersion, Chunker: snapshot.DefaultChunkerParams(),
		Records: 3, StreamLen: 30, CreatedUnix: 1_700_000_000, Changes: "acme/alice/versions/3.changes",
		Packs: []string{"p1", "p2"},
		Chunks: []snapshot.ChunkRef{
			{ID: snapshot.ChunkID{1}, Size: 10, Records: 2, FirstKey: "tasks/1", Pack: 0, Offset: 0, StoredLen: 20},
			{ID: snapshot.ChunkID{2}, Size: 20, Records: 1, FirstKey: "tasks/2", Pack: 1, Offset: 20, StoredLen: 25},
		},
	}
	m.SetStreamHash()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestManifestRoundTrip(t *testing.T) {
	b := sampleManifest(t)
	m, err := snapshot.UnmarshalManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := m.Marshal()
	if !bytes.Equal(again, b) {
		t.Fatal("manifest does not round-trip byte for byte")
	}
	if m.Chunks[1].FirstKey != "tasks/2" || m.Packs[1] != "p2" || m.Changes == "" {
		t.Fatalf("decoded %+v", m)
	}
}

func TestManifestDecodeErrors(t *testing.T) {
	b := sampleManifest(t)
	for n := range len(b) {
		if _, err := snapshot.UnmarshalManifest(b[:n]); !errors.Is(err, snapshot.ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: err = %v, want ErrCorrupt", n, err)
		}
	}
	future := bytes.Clone(b)
	future[4] = 99
	if _, err := snapshot.UnmarshalManifest(future); !errors.Is(err, snapshot.ErrUnsupportedVersion) {
		t.Fatalf("format 99: err = %v, want ErrUnsupportedVersion", err)
	}
}

func FuzzManifestDecode(f *testing.F) {
	f.Add(sampleManifest(f))
	f.Add([]byte("DSMF\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := snapshot.UnmarshalManifest(data)
		if err != nil {
			if !errors.Is(err, snapshot.ErrCorrupt) && !errors.Is(err, snapshot.ErrUnsupportedVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// Whatever decodes must re-encode to something that decodes the same.
		b, _ := m.Marshal()
		m2, err := snapshot.UnmarshalManifest(b)
		if err != nil || len(m2.Chunks) != len(m.Chunks) || m2.StreamHash != m.StreamHash {
			t.Fatalf("re-encoded manifest: %v", err)
		}
	})
}

func FuzzStreamDecode(f *testing.F) {
	recs := gen.Dataset(gen.Options{Size: 8 << 10, Seed: 1})
	f.Add(streamOf(recs[:3]))
	f.Add([]byte{1, 'a', 1, '1', 1, 'a', 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Two decoders must agree: the streaming reader and the chunk-fed one.
		sr := snapshot.NewStreamReader(bytes.NewReader(data))
		var a [][2]string
		var errA error
		for {
			k, v, err := sr.Next()
			if err != nil {
				if err != io.EOF {
					errA = err
				}
				break
			}
			a = append(a, [2]string{string(k), string(v)})
		}
		var b [][2]string
		d := &snapshot.RecordDecoder{}
		errB := d.Feed(data, func(k, v []byte) error {
			b = append(b, [2]string{string(k), string(v)})
			return nil
		})
		if errB == nil {
			errB = d.Close()
		}
		if (errA == nil) != (errB == nil) {
			t.Fatalf("decoders disagree: %v vs %v", errA, errB)
		}
		if errA == nil && len(a) != len(b) {
			t.Fatalf("decoders disagree: %d vs %d records", len(a), len(b))
		}
		if errA == nil {
			var re []byte
			for _, r := range a {
				re = snapshot.AppendRecord(re, r[0], []byte(r[1]))
			}
			if !bytes.Equal(re, data) {
				t.Fatal("decoded records do not re-encode to the input")
			}
		}
	})
}

func FuzzNDJSONLine(f *testing.F) {
	f.Add([]byte(`{"key":"tasks/1","value":{"b":1,"a":2}}`))
	f.Add([]byte(`{"key":"","value":null}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		k, v, err := snapshot.ParseNDJSONLine(line)
		if err != nil {
			if !errors.Is(err, snapshot.ErrInvalid) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if snapshot.ValidateKey(k) != nil {
			t.Fatalf("accepted bad key %q", k)
		}
		// Canonical form is a fixed point.
		k2, v2, err := snapshot.ParseNDJSONLine(snapshot.AppendNDJSONLine(nil, k, v))
		if err != nil || k2 != k || !bytes.Equal(v2, v) {
			t.Fatalf("canonical line does not round-trip: %v", err)
		}
	})
}
