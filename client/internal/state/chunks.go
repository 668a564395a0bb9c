package state

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"github.com/klauspost/compress/s2"
	bolt "go.etcd.io/bbolt"
)

// Chunks are stored compressed with S2 (klauspost/compress/s2, a faster
// Snappy), a byte naming the codec and the raw chunk's CRC-32C in front:
// a full sync compresses the whole data set once, and the device's CPU
// budget for one of 64 MB is a second. zstd's fastest level stores less
// (0.43 of the raw bytes against S2's 0.57, BenchmarkChunkCodec) but took
// 0.45 s of that second where S2 takes 0.16 s, and decodes several times
// slower (every Get and Scan decodes); the outer zstd stream of the
// download alone costs 0.3 s.
// Keys are local sequence numbers (big-endian uint64), assigned in arrival
// order, so a download appends to the bucket instead of writing all over
// it (random chunk IDs as keys would touch, and keep resident, every page
// of the file).
//
// Reading a record decompresses its chunk; the last few decompressed
// chunks are kept (a scan reads each chunk once, a UI that shows a list
// reads neighbours). A sequence number names one content forever (it is
// never reused), so the cache needs no invalidation.
type chunkCodec struct {
	mu    sync.Mutex
	lru   *list.List // of *cached, most recent first
	bySeq map[chunkKey]*list.Element
	bytes int
}

// chunkKey names a chunk: its data file and seq.
type chunkKey struct {
	gen uint32
	seq uint64
}

type cached struct {
	key chunkKey
	raw []byte
}

const (
	cacheChunks = 64
	cacheBytes  = 2 << 20
	// maxStoredChunk bounds a decompressed chunk (the chunker's largest
	// Max is 16 MiB).
	maxStoredChunk = 16 << 20

	codecS2 = 1
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

func newChunkCodec() *chunkCodec {
	return &chunkCodec{lru: list.New(), bySeq: map[chunkKey]*list.Element{}}
}

// storedLen bounds the stored form of a chunk of n bytes.
func storedLen(n int) int { return 5 + s2.MaxEncodedLen(n) }

// encode appends the stored form of raw to dst.
func (c *chunkCodec) encode(dst, raw []byte) []byte {
	dst = append(dst, codecS2)
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(raw, crc32c))
	n := len(dst)
	need := n + s2.MaxEncodedLen(len(raw))
	if cap(dst) < need {
		dst = append(dst[:cap(dst)], make([]byte, need-cap(dst))...)
	}
	enc := s2.Encode(dst[n:need], raw)
	return dst[:n+len(enc)]
}

// decode returns the raw chunk seq from its stored form, from the cache
// when it is there. The result is shared: read-only.
func (c *chunkCodec) decode(key chunkKey, stored []byte) ([]byte, error) {
	raw, err := c.decodeUncached(key.seq, stored, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.bySeq[key]; !ok && len(raw) <= cacheBytes/4 {
		c.bySeq[key] = c.lru.PushFront(&cached{key, raw})
		c.bytes += len(raw)
		for c.lru.Len() > cacheChunks || c.bytes > cacheBytes {
			old := c.lru.Remove(c.lru.Back()).(*cached)
			delete(c.bySeq, old.key)
			c.bytes -= len(old.raw)
		}
	}
	return raw, nil
}

// cached returns the chunk key if the cache holds it.
func (c *chunkCodec) cached(key chunkKey) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.bySeq[key]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cached).raw
	}
	return nil
}

// decodeUncached decodes into dst's memory when it is large enough,
// without touching the cache (a full check or a rebuild reads every chunk
// once: caching them would only evict what the app reads).
func (c *chunkCodec) decodeUncached(seq uint64, stored, dst []byte) ([]byte, error) {
	if len(stored) < 5 || stored[0] != codecS2 {
		return nil, fmt.Errorf("stored chunk %d: unknown codec: %w", seq, ErrCorrupt)
	}
	body := stored[5:]
	n, err := s2.DecodedLen(body)
	if err != nil || n > maxStoredChunk {
		return nil, fmt.Errorf("stored chunk %d: %v: %w", seq, err, ErrCorrupt)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	raw, err := s2.Decode(dst[:n], body)
	if err == nil && crc32.Checksum(raw, crc32c) != binary.LittleEndian.Uint32(stored[1:5]) {
		err = errors.New("checksum mismatch")
	}
	if err != nil {
		return nil, fmt.Errorf("stored chunk %d: %v: %w", seq, err, ErrCorrupt)
	}
	return raw, nil
}

// loadChunk reads and decompresses chunk seq of the data file gen.
func (s *Store) loadChunk(b *bolt.Bucket, gen uint32, seq uint64) ([]byte, error) {
	if raw := s.chunks.cached(chunkKey{gen, seq}); raw != nil {
		return raw, nil
	}
	stored := b.Get(u64(seq))
	if stored == nil {
		return nil, fmt.Errorf("stored chunk %d is missing: %w", seq, ErrCorrupt)
	}
	return s.chunks.decode(chunkKey{gen, seq}, stored)
}

// A location says where a record is: uvarint offset in its first chunk,
// then the uvarint sequence numbers of the chunks it starts in and runs
// into (one but for a record bigger than a chunk).
func appendLoc(dst []byte, off int, seqs []uint64) []byte {
	dst = binary.AppendUvarint(dst, uint64(off))
	for _, s := range seqs {
		dst = binary.AppendUvarint(dst, s)
	}
	return dst
}

func parseLoc(loc []byte) (off int, seqs []uint64, err error) {
	return parseLocInto(loc, nil)
}

// parseLocInto is parseLoc appending the seqs to buf (a record in one
// chunk, the common case, then needs no allocation).
func parseLocInto(loc []byte, buf []uint64) (off int, seqs []uint64, err error) {
	seqs = buf[:0]
	o, n := binary.Uvarint(loc)
	if n <= 0 || o > maxStoredChunk {
		return 0, nil, fmt.Errorf("record location %x: %w", loc, ErrCorrupt)
	}
	loc = loc[n:]
	for len(loc) > 0 {
		s, n := binary.Uvarint(loc)
		if n <= 0 {
			return 0, nil, fmt.Errorf("record location: %w", ErrCorrupt)
		}
		seqs = append(seqs, s)
		loc = loc[n:]
	}
	if len(seqs) == 0 {
		return 0, nil, fmt.Errorf("record location without a chunk: %w", ErrCorrupt)
	}
	return int(o), seqs, nil
}
