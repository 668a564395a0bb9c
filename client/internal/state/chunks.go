package state

import (
	"container/list"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	bolt "go.etcd.io/bbolt"
)

// Chunks are stored zstd-compressed, one frame each with its checksum, at
// the fastest level: a full sync compresses the whole data set once, and
// the client's CPU budget for it is a second for 64 MB. Keys are local
// sequence numbers (big-endian uint64), assigned in arrival order, so a
// download appends to the bucket instead of writing all over it (random
// chunk IDs as keys would touch, and keep resident, every page of the file).
//
// Reading a record decompresses its chunk; the last few decompressed
// chunks are kept (a scan reads each chunk once, a UI that shows a list
// reads neighbours). A sequence number names one content forever (it is
// never reused), so the cache needs no invalidation.
type chunkCodec struct {
	enc *zstd.Encoder
	dec *zstd.Decoder

	mu    sync.Mutex
	lru   *list.List // of *cached, most recent first
	bySeq map[uint64]*list.Element
	bytes int
}

type cached struct {
	seq uint64
	raw []byte
}

const (
	cacheChunks = 64
	cacheBytes  = 2 << 20
	// maxStoredChunk bounds a decompressed chunk (the chunker's largest
	// Max is 16 MiB).
	maxStoredChunk = 16 << 20
)

func newChunkCodec() *chunkCodec {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true), zstd.WithLowerEncoderMem(true), zstd.WithWindowSize(1<<20))
	if err != nil {
		panic(err) // fixed, valid options
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(maxStoredChunk+1<<20))
	if err != nil {
		panic(err)
	}
	return &chunkCodec{enc: enc, dec: dec, lru: list.New(), bySeq: map[uint64]*list.Element{}}
}

// encode appends the stored form of raw to dst.
func (c *chunkCodec) encode(dst, raw []byte) []byte { return c.enc.EncodeAll(raw, dst) }

// decode returns the raw chunk seq from its stored form, from the cache
// when it is there. The result is shared: read-only.
func (c *chunkCodec) decode(seq uint64, stored []byte) ([]byte, error) {
	c.mu.Lock()
	if e, ok := c.bySeq[seq]; ok {
		c.lru.MoveToFront(e)
		raw := e.Value.(*cached).raw
		c.mu.Unlock()
		return raw, nil
	}
	c.mu.Unlock()
	raw, err := c.dec.DecodeAll(stored, nil)
	if err != nil {
		return nil, fmt.Errorf("stored chunk %d: %v: %w", seq, err, ErrCorrupt)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.bySeq[seq]; !ok && len(raw) <= cacheBytes/4 {
		c.bySeq[seq] = c.lru.PushFront(&cached{seq, raw})
		c.bytes += len(raw)
		for c.lru.Len() > cacheChunks || c.bytes > cacheBytes {
			old := c.lru.Remove(c.lru.Back()).(*cached)
			delete(c.bySeq, old.seq)
			c.bytes -= len(old.raw)
		}
	}
	return raw, nil
}

// decodeUncached decodes without touching the cache (a full check or a
// rebuild reads every chunk once: caching them would only evict what the
// app reads).
func (c *chunkCodec) decodeUncached(seq uint64, stored, dst []byte) ([]byte, error) {
	raw, err := c.dec.DecodeAll(stored, dst[:0])
	if err != nil {
		return nil, fmt.Errorf("stored chunk %d: %v: %w", seq, err, ErrCorrupt)
	}
	return raw, nil
}

// loadChunk reads and decompresses chunk seq.
func (s *Store) loadChunk(b *bolt.Bucket, seq uint64) ([]byte, error) {
	stored := b.Get(u64(seq))
	if stored == nil {
		return nil, fmt.Errorf("stored chunk %d is missing: %w", seq, ErrCorrupt)
	}
	return s.chunks.decode(seq, stored)
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
