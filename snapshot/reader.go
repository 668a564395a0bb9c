package snapshot

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
)

// ChunkGetter is what consumers need to fetch verified chunks of a version.
type ChunkGetter interface {
	Chunks(ctx context.Context, idx []int, fn func(i int, raw []byte) error) error
}

// Reader reads the chunks and records of one version, verifying every chunk
// against its ID and the whole stream against the manifest's SHA-256.
type Reader struct {
	s      Getter
	m      *Manifest
	hasher *Hasher
	// MaxRange bounds one coalesced ranged GET; MaxGap is the largest hole
	// between two wanted frames that is read through rather than split.
	MaxRange int64
	MaxGap   int64
}

// NewReader returns a reader of version m.
func NewReader(s Getter, m *Manifest, secret []byte) *Reader {
	return &Reader{s: s, m: m, hasher: NewHasher(secret, m.Org, m.User), MaxRange: 8 << 20, MaxGap: 32 << 10}
}

// Manifest returns the version being read.
func (r *Reader) Manifest() *Manifest { return r.m }

// span is one ranged GET covering the frames of chunks idx[from:to].
type span struct {
	pack     uint32
	off, end uint64
	from, to int
}

// Chunks fetches the chunks whose manifest indexes are listed (in that
// order), coalescing frames that sit close together in one pack into one
// ranged GET, and calls fn with each verified raw chunk. raw is only valid
// during the call.
func (r *Reader) Chunks(ctx context.Context, idx []int, fn func(i int, raw []byte) error) error {
	for _, i := range idx {
		if i < 0 || i >= len(r.m.Chunks) {
			return fmt.Errorf("chunk index %d of %d: %w", i, len(r.m.Chunks), ErrInvalid)
		}
	}
	var buf, raw []byte
	for _, sp := range r.spans(idx) {
		key := PackKey(r.m.Org, r.m.User, r.m.Packs[sp.pack])
		n := int(sp.end - sp.off)
		buf = grow(buf, n)
		if err := r.readRange(ctx, key, int64(sp.off), buf); err != nil {
			return err
		}
		for _, i := range idx[sp.from:sp.to] {
			c := &r.m.Chunks[i]
			frame := buf[c.Offset-sp.off : c.Offset-sp.off+uint64(c.StoredLen)]
			var err error
			raw, err = r.decodeChunk(raw[:0], c, frame)
			if err != nil {
				return &ObjectError{Op: "read pack", Key: key, Err: err}
			}
			if err := fn(i, raw); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Reader) readRange(ctx context.Context, key string, off int64, buf []byte) error {
	rc, err := r.s.GetRange(ctx, key, off, int64(len(buf)))
	if err != nil {
		return &ObjectError{Op: "read pack", Key: key, Err: err}
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, buf); err != nil {
		return &ObjectError{Op: "read pack", Key: key, Err: fmt.Errorf("short range read: %v: %w", err, ErrCorrupt)}
	}
	return nil
}

// decodeChunk decompresses one frame and checks its length and ID.
func (r *Reader) decodeChunk(dst []byte, c *ChunkRef, frame []byte) ([]byte, error) {
	raw, err := DecodeChunk(dst, r.hasher, c, frame)
	if err != nil {
		return nil, err
	}
	return raw, nil
}

// DecodeChunk decompresses a stored chunk frame and verifies it against its
// ID and raw size.
func DecodeChunk(dst []byte, h *Hasher, c *ChunkRef, frame []byte) ([]byte, error) {
	id, size := c.ID, int(c.Size)
	raw, err := DecompressAtMost(dst, frame, int(c.Size))
	if err != nil {
		return nil, &ChunkError{Op: "decompress", ID: id, Err: fmt.Errorf("%v: %w", err, ErrCorrupt)}
	}
	if len(raw) != size {
		return nil, &ChunkError{Op: "verify", ID: id, Err: fmt.Errorf("%d bytes, want %d: %w", len(raw), size, ErrCorrupt)}
	}
	return raw, VerifyChunk(h, c, raw)
}

// VerifyChunk checks raw chunk bytes against their manifest entry: length,
// keyed ID and SHA-256.
func VerifyChunk(h *Hasher, c *ChunkRef, raw []byte) error {
	if len(raw) != int(c.Size) {
		return &ChunkError{Op: "verify", ID: c.ID, Err: fmt.Errorf("%d bytes, want %d: %w", len(raw), c.Size, ErrCorrupt)}
	}
	if h.Sum(raw) != c.ID {
		return &ChunkError{Op: "verify", ID: c.ID, Err: fmt.Errorf("content does not match its ID: %w", ErrCorrupt)}
	}
	if sha256.Sum256(raw) != c.Sum {
		return &ChunkError{Op: "verify", ID: c.ID, Err: fmt.Errorf("content does not match its SHA-256: %w", ErrCorrupt)}
	}
	return nil
}

func (r *Reader) spans(idx []int) []span {
	var out []span
	for k, i := range idx {
		c := &r.m.Chunks[i]
		off, end := c.Offset, c.Offset+uint64(c.StoredLen)
		if n := len(out); n > 0 {
			sp := &out[n-1]
			if sp.pack == c.Pack && off >= sp.end && off-sp.end <= uint64(r.MaxGap) && end-sp.off <= uint64(r.MaxRange) {
				sp.end, sp.to = end, k+1
				continue
			}
		}
		out = append(out, span{pack: c.Pack, off: off, end: end, from: k, to: k + 1})
	}
	return out
}

// WriteStream writes the version's canonical stream to w and verifies its
// SHA-256 at the end. On a mismatch w has received bad data: callers write to
// a temporary place and keep it only on success.
func (r *Reader) WriteStream(ctx context.Context, w io.Writer) error {
	err := r.Chunks(ctx, r.all(), func(_ int, raw []byte) error {
		_, err := w.Write(raw)
		return err
	})
	if err != nil {
		return err
	}
	return r.checkStreamHash()
}

// checkStreamHash ties the chunks (each verified against its SHA-256 as it
// was read) to the manifest's stream hash.
func (r *Reader) checkStreamHash() error {
	if r.m.computeStreamHash() != r.m.StreamHash {
		return &ObjectError{Op: "verify stream", Key: ManifestKey(r.m.Org, r.m.User, r.m.Version),
			Err: fmt.Errorf("stream hash does not match the chunk list: %w", ErrCorrupt)}
	}
	return nil
}

func (r *Reader) all() []int {
	idx := make([]int, len(r.m.Chunks))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// Records calls fn for every record of the version in key order. The stream
// hash is checked after the last record: fn sees data before it is fully
// verified, so callers that must not act on unverified data buffer until
// Records returns nil.
func (r *Reader) Records(ctx context.Context, fn func(key, value []byte) error) error {
	d := &RecordDecoder{}
	err := r.Chunks(ctx, r.all(), func(_ int, raw []byte) error {
		return d.Feed(raw, fn)
	})
	if err != nil {
		return err
	}
	if err := d.Close(); err != nil {
		return err
	}
	if uint64(d.Count()) != r.m.Records {
		return &ObjectError{Op: "verify stream", Key: ManifestKey(r.m.Org, r.m.User, r.m.Version),
			Err: fmt.Errorf("%d records, manifest says %d: %w", d.Count(), r.m.Records, ErrCorrupt)}
	}
	return r.checkStreamHash()
}

// RecordDecoder decodes records from a canonical stream fed in pieces of any
// size (chunks), checking key order.
type RecordDecoder struct {
	carry []byte
	prev  []byte
	n     int
}

// Feed decodes every complete record in carry+p and calls fn for each.
func (d *RecordDecoder) Feed(p []byte, fn func(key, value []byte) error) error {
	buf := p
	if len(d.carry) > 0 {
		d.carry = append(d.carry, p...)
		buf = d.carry
	}
	for len(buf) > 0 {
		k, v, n, err := DecodeRecord(buf)
		if err != nil {
			return fmt.Errorf("record %d: %w", d.n+1, err)
		}
		if n == 0 {
			break
		}
		if d.n > 0 && string(k) <= string(d.prev) {
			return fmt.Errorf("record %d: key order: %w", d.n+1, ErrCorrupt)
		}
		d.prev = append(d.prev[:0], k...)
		d.n++
		if err := fn(k, v); err != nil {
			return err
		}
		buf = buf[n:]
	}
	if len(buf) == 0 || len(buf) != len(d.carry) || &buf[0] != &d.carry[0] {
		// Keep the unfinished record. (When nothing was finished, buf is
		// the carry itself: copying it onto itself on every chunk of a
		// big record made decoding it quadratic.)
		d.carry = append(d.carry[:0], buf...)
	}
	return nil
}

// Close reports an error if the stream ended inside a record.
func (d *RecordDecoder) Close() error {
	if len(d.carry) > 0 {
		return fmt.Errorf("stream ends inside record %d: %w", d.n+1, ErrCorrupt)
	}
	return nil
}

// Count is the number of records decoded so far.
func (d *RecordDecoder) Count() int { return d.n }
