package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/deltasync/deltasync/snapshot"
)

// The synced version's manifest is kept in a local encoding, not the
// store's: the store's compresses its chunk list with zstd, which buys
// nothing on IDs and SHA-256s and cost a 64 MB data set's one-record delta
// 2 ms to write and 1 ms to read. Packs and offsets (the server's
// placement) are not kept.
//
//	"DSLM" format byte
//	uvarint length, header JSON (localHeader)
//	per chunk: ID (16), SHA-256 (32), uvarint size, uvarint records,
//	  flags byte (1: continued), uvarint shared key prefix with the
//	  previous first key, uvarint suffix length, suffix
const (
	localManifestMagic  = "DSLM"
	localManifestFormat = 1
)

type localHeader struct {
	Org            string                 `json:"org"`
	User           string                 `json:"user"`
	Version        uint64                 `json:"version"`
	Parent         uint64                 `json:"parent"`
	ChunkerName    string                 `json:"chunker"`
	ChunkerVersion uint64                 `json:"chunker_version"`
	Chunker        snapshot.ChunkerParams `json:"params"`
	Records        uint64                 `json:"records"`
	StreamLen      uint64                 `json:"stream_len"`
	StreamHash     [32]byte               `json:"stream_hash"`
	CreatedUnix    int64                  `json:"created_unix"`
	Chunks         int                    `json:"chunks"`
}

func marshalManifest(m *snapshot.Manifest) ([]byte, error) {
	hj, err := json.Marshal(localHeader{m.Org, m.User, m.Version, m.Parent, m.ChunkerName, m.ChunkerVersion,
		m.Chunker, m.Records, m.StreamLen, m.StreamHash, m.CreatedUnix, len(m.Chunks)})
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 5+10+len(hj)+len(m.Chunks)*64)
	b = append(b, localManifestMagic...)
	b = append(b, localManifestFormat)
	b = binary.AppendUvarint(b, uint64(len(hj)))
	b = append(b, hj...)
	prev := ""
	for i := range m.Chunks {
		c := &m.Chunks[i]
		b = appendChunkRef(b, c, prev)
		prev = c.FirstKey
	}
	return b, nil
}

// appendChunkRef appends one chunk's entry of a local chunk list (the
// manifest's and a page's): ID, SHA-256, size, records, the continued
// flag and the first key as a suffix of prev, the entry before it.
func appendChunkRef(b []byte, c *snapshot.ChunkRef, prev string) []byte {
	b = append(b, c.ID[:]...)
	b = append(b, c.Sum[:]...)
	b = binary.AppendUvarint(b, uint64(c.Size))
	b = binary.AppendUvarint(b, uint64(c.Records))
	flags := byte(0)
	if c.Continued {
		flags = 1
	}
	b = append(b, flags)
	shared := commonPrefix(prev, c.FirstKey)
	b = binary.AppendUvarint(b, uint64(shared))
	b = binary.AppendUvarint(b, uint64(len(c.FirstKey)-shared))
	return append(b, c.FirstKey[shared:]...)
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// unmarshalManifest decodes marshalManifest's encoding. data may be
// reused afterwards.
func unmarshalManifest(data []byte) (*snapshot.Manifest, error) {
	bad := func(what string) error { return fmt.Errorf("local manifest: %s: %w", what, ErrCorrupt) }
	if len(data) < 5 || string(data[:4]) != localManifestMagic || data[4] != localManifestFormat {
		return nil, bad("magic")
	}
	d := data[5:]
	num := func() uint64 {
		v, n := binary.Uvarint(d)
		if n <= 0 {
			d = nil
			return 0
		}
		d = d[n:]
		return v
	}
	hl := num()
	if hl > uint64(len(d)) {
		return nil, bad("header")
	}
	var h localHeader
	if err := json.Unmarshal(d[:hl], &h); err != nil || h.Chunks < 0 || h.Chunks > len(d)/50 {
		return nil, bad("header")
	}
	d = d[hl:]
	m := &snapshot.Manifest{Org: h.Org, User: h.User, Version: h.Version, Parent: h.Parent,
		ChunkerName: h.ChunkerName, ChunkerVersion: h.ChunkerVersion, Chunker: h.Chunker,
		Records: h.Records, StreamLen: h.StreamLen, StreamHash: h.StreamHash, CreatedUnix: h.CreatedUnix,
		Packs: []string{"local"}, Chunks: make([]snapshot.ChunkRef, h.Chunks)}
	prev := ""
	for i := range m.Chunks {
		c := &m.Chunks[i]
		if len(d) < 48 {
			return nil, bad("chunk list")
		}
		copy(c.ID[:], d)
		copy(c.Sum[:], d[16:])
		d = d[48:]
		size, recs := num(), num()
		if len(d) == 0 || size > 16<<20 || recs > size {
			return nil, bad("chunk entry")
		}
		c.Continued, d = d[0] == 1, d[1:]
		shared, sl := num(), num()
		if d == nil || shared > uint64(len(prev)) || sl > uint64(len(d)) {
			return nil, bad("chunk key")
		}
		c.FirstKey = prev[:shared] + string(d[:sl])
		d = d[sl:]
		c.Size, c.Records, c.StoredLen = uint32(size), uint32(recs), uint32(size)
		prev = c.FirstKey
	}
	if len(d) != 0 {
		return nil, bad("trailing data")
	}
	return m, nil
}
