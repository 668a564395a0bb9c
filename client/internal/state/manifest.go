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
	r := &entryReader{d: data[5:], keys: true}
	hl := r.num()
	if hl > uint64(len(r.d)) {
		return nil, bad("header")
	}
	var h localHeader
	if err := json.Unmarshal(r.d[:hl], &h); err != nil || h.Chunks < 0 || h.Chunks > len(r.d)/50 {
		return nil, bad("header")
	}
	r.d = r.d[hl:]
	m := &snapshot.Manifest{Org: h.Org, User: h.User, Version: h.Version, Parent: h.Parent,
		ChunkerName: h.ChunkerName, ChunkerVersion: h.ChunkerVersion, Chunker: h.Chunker,
		Records: h.Records, StreamLen: h.StreamLen, StreamHash: h.StreamHash, CreatedUnix: h.CreatedUnix,
		Packs: []string{"local"}, Chunks: make([]snapshot.ChunkRef, h.Chunks)}
	for i := range m.Chunks {
		if what := r.entry(&m.Chunks[i]); what != "" {
			return nil, bad(what)
		}
	}
	if len(r.d) != 0 {
		return nil, bad("trailing data")
	}
	r.setKeys(m.Chunks)
	return m, nil
}

// entryReader reads the entries of a local chunk list, appendChunkRef's
// encoding (a format-1 manifest's list, a page), for both. With keys, it
// keeps the first keys it reads back to back, and setKeys makes them one
// string: one allocation for a page's keys rather than one a chunk (8,000
// on 64 MB, a good part of reading a chunk list).
type entryReader struct {
	d    []byte
	keys bool // keep the first keys
	// The first keys read (with keys; else the last one's length in
	// prevLen only), the end of each in buf, where the last one starts.
	buf       []byte
	ends      []int
	prevStart int
	prevLen   int
}

func (r *entryReader) num() uint64 {
	v, n := binary.Uvarint(r.d)
	if n <= 0 {
		r.d = nil
		return 0
	}
	r.d = r.d[n:]
	return v
}

// entry reads the next entry into c, all but its first key (setKeys), and
// returns what is wrong with it ("" if nothing).
func (r *entryReader) entry(c *snapshot.ChunkRef) string {
	if len(r.d) < 48 {
		return "entry"
	}
	copy(c.ID[:], r.d)
	copy(c.Sum[:], r.d[16:])
	r.d = r.d[48:]
	size, recs := r.num(), r.num()
	if len(r.d) == 0 || size > 16<<20 || recs > size {
		return "entry"
	}
	c.Continued, r.d = r.d[0] == 1, r.d[1:]
	shared, sl := r.num(), r.num()
	if r.d == nil || shared > uint64(r.prevLen) || sl > uint64(len(r.d)) {
		return "key"
	}
	if r.keys {
		start := len(r.buf)
		r.buf = append(r.buf, r.buf[r.prevStart:r.prevStart+int(shared)]...)
		r.buf = append(r.buf, r.d[:sl]...)
		r.ends = append(r.ends, len(r.buf))
		r.prevStart = start
	}
	r.d, r.prevLen = r.d[sl:], int(shared+sl)
	c.Size, c.Records, c.StoredLen = uint32(size), uint32(recs), uint32(size)
	return ""
}

// setKeys sets the first keys of chunks, the entries read since the last
// call, from one string.
func (r *entryReader) setKeys(chunks []snapshot.ChunkRef) {
	all := string(r.buf)
	start := 0
	for i, end := range r.ends {
		chunks[i].FirstKey, start = all[start:end], end
	}
	// The next entry's key is coded against the last one's.
	n := copy(r.buf, r.buf[r.prevStart:])
	r.buf, r.ends, r.prevStart = r.buf[:n], r.ends[:0], 0
}
