package snapshot

import (
	"fmt"
	"math/bits"
)

// Chunker identity, written into every manifest. Changing the algorithm or the
// gear table must bump ChunkerVersion: chunk boundaries are part of the format.
const (
	ChunkerName    = "fastcdc-record"
	ChunkerVersion = 1
)

// ChunkerParams are the size parameters of the record-aligned chunker.
type ChunkerParams struct {
	Min, Avg, Max int
}

// DefaultChunkerParams returns min 2 KiB, average 8 KiB, max 64 KiB.
func DefaultChunkerParams() ChunkerParams {
	return ChunkerParams{Min: 2 << 10, Avg: 8 << 10, Max: 64 << 10}
}

// Validate checks 64 <= Min < Avg < Max <= 16 MiB and that Avg is a power of two.
func (p ChunkerParams) Validate() error {
	if p.Min < 64 || p.Min >= p.Avg || p.Avg >= p.Max || p.Max > 16<<20 || bits.OnesCount(uint(p.Avg)) != 1 {
		return fmt.Errorf("chunker params min=%d avg=%d max=%d: want 64 <= min < avg < max <= 16MiB, avg a power of two: %w",
			p.Min, p.Avg, p.Max, ErrInvalid)
	}
	return nil
}

// gear is the FastCDC gear table: 256 fixed pseudo-random words (splitmix64
// from a fixed seed, so the table is reproducible and needs no literal).
var gear = func() (t [256]uint64) {
	x := uint64(0x6465_6c74_6173_796e) // "deltasyn"
	for i := range t {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		t[i] = z ^ z>>31
	}
	return t
}()

// ChunkData is one chunk emitted by the Chunker. Data is only valid during
// the emit callback.
type ChunkData struct {
	Data      []byte
	FirstKey  string // key of the first record that starts in (or, if Continued, contains) the chunk
	Continued bool   // the chunk starts inside a record (a piece of an oversize record)
	Records   int    // records that start in this chunk
}

// Chunker cuts a sequence of records into content-defined chunks whose
// boundaries fall only between records. It runs a FastCDC gear hash with
// normalized chunking over the encoded stream; when the cut condition fires
// inside a record, the chunk ends after that record, so editing one record
// changes only the chunk(s) holding it (until the boundaries resynchronise).
// A chunk never grows past Max: a record that would not fit starts a new
// chunk, and a record bigger than Max is split inside by byte-level CDC.
type Chunker struct {
	p          ChunkerParams
	thrS, thrL uint64
	emit       func(ChunkData) error

	buf      []byte
	hash     uint64
	firstKey string
	records  int
}

// NewChunker returns a chunker that calls emit for every finished chunk.
func NewChunker(p ChunkerParams, emit func(ChunkData) error) (*Chunker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	thrS, thrL := cutThresholds(p)
	return &Chunker{p: p, thrS: thrS, thrL: thrL, emit: emit, buf: make([]byte, 0, p.Max)}, nil
}

// cutThresholds returns the cut probabilities (as thresholds on the 64-bit
// hash) before and after Avg. The expected distance from Min to a cut is
// Avg-Min, so chunks average about Avg plus half a record. Normalized
// chunking makes cuts before Avg rarer and after it likelier, narrowing the
// size distribution; the ratio is kept mild (NormRatio) because a cut that
// depends on its position in the chunk is what makes an edit ripple into
// the following chunks.
func cutThresholds(p ChunkerParams) (thrS, thrL uint64) {
	base := float64(1<<63) / float64(p.Avg-p.Min) * 2
	return uint64(base), uint64(min(base*normRatio, float64(1<<63)))
}

const normRatio = 2.0

// Add appends one record (already canonical, keys in increasing order).
func (c *Chunker) Add(key string, value []byte) error {
	n := EncodedLen(key, value)
	if n > c.p.Max {
		return c.addOversize(key, value)
	}
	if len(c.buf)+n > c.p.Max {
		if err := c.flush(); err != nil {
			return err
		}
	}
	start := len(c.buf)
	if c.records == 0 {
		c.firstKey = key
	}
	c.buf = AppendRecord(c.buf, key, value)
	c.records++
	if c.scan(max(start, c.p.Min)) {
		return c.flush()
	}
	return nil
}

// scan rolls the gear hash over buf[from:] and reports whether the cut
// condition fired.
func (c *Chunker) scan(from int) bool {
	buf, h := c.buf, c.hash
	i := from
	if from == c.p.Min && len(buf) > from {
		// Warm the hash up over the 64 bytes before Min, so that every
		// tested position sees a full window and cuts depend on content only.
		for j := from - 64; j < from; j++ {
			h = h<<1 + gear[buf[j]]
		}
	}
	for lim := min(len(buf), c.p.Avg); i < lim; i++ {
		h = h<<1 + gear[buf[i]]
		if h < c.thrS {
			c.hash = h
			return true
		}
	}
	for ; i < len(buf); i++ {
		h = h<<1 + gear[buf[i]]
		if h < c.thrL {
			c.hash = h
			return true
		}
	}
	c.hash = h
	return false
}

// addOversize emits a record larger than Max as byte-level CDC pieces; the
// record gets chunks of its own, the last ending at the record's end.
func (c *Chunker) addOversize(key string, value []byte) error {
	if err := c.flush(); err != nil {
		return err
	}
	rec := AppendRecord(nil, key, value)
	for off := 0; off < len(rec); {
		n := c.cutPoint(rec[off:])
		d := ChunkData{Data: rec[off : off+n], FirstKey: key, Continued: off > 0}
		if off == 0 {
			d.Records = 1
		}
		if err := c.emit(d); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// cutPoint is plain FastCDC over bytes.
func (c *Chunker) cutPoint(data []byte) int {
	n := len(data)
	if n <= c.p.Min {
		return n
	}
	n = min(n, c.p.Max)
	var h uint64
	i := c.p.Min
	for j := i - 64; j < i; j++ {
		h = h<<1 + gear[data[j]]
	}
	for lim := min(n, c.p.Avg); i < lim; i++ {
		h = h<<1 + gear[data[i]]
		if h < c.thrS {
			return i + 1
		}
	}
	for ; i < n; i++ {
		h = h<<1 + gear[data[i]]
		if h < c.thrL {
			return i + 1
		}
	}
	return n
}

func (c *Chunker) flush() error {
	if c.records == 0 {
		return nil
	}
	err := c.emit(ChunkData{Data: c.buf, FirstKey: c.firstKey, Records: c.records})
	c.buf, c.hash, c.records, c.firstKey = c.buf[:0], 0, 0, ""
	return err
}

// Close emits the last chunk.
func (c *Chunker) Close() error { return c.flush() }

// StartsChunk reports whether adding a record of encoded length n would
// begin a new chunk whatever its content: the chunker holds nothing, or the
// record cannot join the current chunk. Patching uses it to find where a
// re-chunked stretch rejoins the old chunk boundaries.
func (c *Chunker) StartsChunk(n int) bool {
	return c.records == 0 || len(c.buf)+n > c.p.Max
}
