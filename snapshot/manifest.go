package snapshot

import (
	"context"
	"io"

	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/cespare/xxhash/v2"
)

// Manifest format: magic, one format-version byte, then one zstd frame
// holding the body (see encodeBody). The frame checksum protects the body.
const (
	manifestMagic   = "DSMF"
	ManifestFormat  = 1
	maxManifestBody = 512 << 20
)

// Manifest describes one version of a user's data set: where every chunk of
// its canonical stream lives, and the SHA-256 that proves a rebuild exact.
type Manifest struct {
	Org, User      string
	Version        uint64
	Parent         uint64
	ChunkerName    string
	ChunkerVersion uint64
	Chunker        ChunkerParams
	Records        uint64
	StreamLen      uint64
	StreamHash     [32]byte // SHA-256 hash list of the stream: see StreamHasher
	CreatedUnix    int64
	Changes        string   // object key of the change set that produced this version ("" if none)
	Packs          []string // pack names; ChunkRef.Pack indexes this list
	Chunks         []ChunkRef
}

// ChunkRef is one entry of a manifest's ordered chunk list.
type ChunkRef struct {
	ID        ChunkID
	Sum       [32]byte // SHA-256 of the raw chunk
	Size      uint32   // raw bytes
	Records   uint32   // records starting in this chunk
	Continued bool     // starts inside a record (piece of an oversize record)
	FirstKey  string
	Pack      uint32 // index into Manifest.Packs
	Offset    uint64 // of the zstd frame in the pack
	StoredLen uint32 // of the zstd frame
}

// StoredBytes sums the stored (compressed) length of all chunks.
func (m *Manifest) StoredBytes() uint64 {
	var n uint64
	for i := range m.Chunks {
		n += uint64(m.Chunks[i].StoredLen)
	}
	return n
}

// Marshal encodes the manifest.
//
// Layout: magic, format byte, uvarint header length, header (version
// metadata, uncompressed so that ReadManifestHeader can read it from a short
// prefix), 8-byte xxhash64 of the header, then one zstd frame (with
// checksum) whose content starts with the same header hash (binding the two
// halves) followed by the pack and chunk lists.
func (m *Manifest) Marshal() ([]byte, error) {
	hdr := m.encodeHeader()
	sum := xxhash.Sum64(hdr)
	body := binary.LittleEndian.AppendUint64(make([]byte, 0, 256+len(m.Chunks)*80), sum)
	body = m.appendLists(body)
	out := make([]byte, 0, len(hdr)+len(body)/2+32)
	out = append(out, manifestMagic...)
	out = append(out, ManifestFormat)
	out = binary.AppendUvarint(out, uint64(len(hdr)))
	out = append(out, hdr...)
	out = binary.LittleEndian.AppendUint64(out, sum)
	return compressFast(out, body), nil
}

func (m *Manifest) encodeHeader() []byte {
	var b []byte
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(x uint64) { b = binary.AppendUvarint(b, x) }
	str(m.Org)
	str(m.User)
	num(m.Version)
	num(m.Parent)
	str(m.ChunkerName)
	num(m.ChunkerVersion)
	num(uint64(m.Chunker.Min))
	num(uint64(m.Chunker.Avg))
	num(uint64(m.Chunker.Max))
	num(m.Records)
	num(m.StreamLen)
	b = append(b, m.StreamHash[:]...)
	b = binary.AppendVarint(b, m.CreatedUnix)
	str(m.Changes)
	return b
}

func (m *Manifest) appendLists(b []byte) []byte {
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	num := func(x uint64) { b = binary.AppendUvarint(b, x) }
	num(uint64(len(m.Packs)))
	for _, p := range m.Packs {
		str(p)
	}
	num(uint64(len(m.Chunks)))
	prev := ""
	for i := range m.Chunks {
		c := &m.Chunks[i]
		b = append(b, c.ID[:]...)
		b = append(b, c.Sum[:]...)
		num(uint64(c.Size))
		num(uint64(c.Records))
		var flags byte
		if c.Continued {
			flags |= 1
		}
		b = append(b, flags)
		// First keys are sorted: store them front-coded.
		shared := commonPrefix(prev, c.FirstKey)
		num(uint64(shared))
		str(c.FirstKey[shared:])
		prev = c.FirstKey
		num(uint64(c.Pack))
		num(c.Offset)
		num(uint64(c.StoredLen))
	}
	return b
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

// UnmarshalManifest decodes a manifest. Truncated or corrupted input returns
// an error matching ErrCorrupt, an unknown format version one matching
// ErrUnsupportedVersion; it never panics.
func UnmarshalManifest(data []byte) (*Manifest, error) {
	if len(data) < len(manifestMagic)+1 || string(data[:len(manifestMagic)]) != manifestMagic {
		return nil, fmt.Errorf("manifest: bad magic: %w", ErrCorrupt)
	}
	if v := data[len(manifestMagic)]; v != ManifestFormat {
		return nil, fmt.Errorf("manifest format %d (this build reads %d): %w", v, ManifestFormat, ErrUnsupportedVersion)
	}
	m, sum, rest, err := decodeHeader(data[len(manifestMagic)+1:])
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	// The body is mostly hashes, which do not compress: a frame that claims
	// to expand far beyond its size is corrupt, and is refused unexpanded.
	body, err := DecompressAtMost(nil, rest, min(64*len(rest)+1<<20, maxManifestBody))
	if err != nil {
		return nil, fmt.Errorf("manifest: decompress: %v: %w", err, ErrCorrupt)
	}
	if len(body) > maxManifestBody {
		return nil, fmt.Errorf("manifest: body too large: %w", ErrCorrupt)
	}
	if len(body) < 8 || binary.LittleEndian.Uint64(body) != sum {
		return nil, fmt.Errorf("manifest: body does not belong to the header: %w", ErrCorrupt)
	}
	if err := decodeLists(m, body[8:]); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return m, nil
}

// maxManifestHeader bounds the uncompressed header (names, keys, hashes).
const maxManifestHeader = 8 << 10

// decodeHeader parses the uncompressed header and its hash, returning the
// rest of the input (the zstd frame).
func decodeHeader(data []byte) (*Manifest, uint64, []byte, error) {
	n, k := binary.Uvarint(data)
	if k <= 0 || n > maxManifestHeader || uint64(len(data)-k) < n+8 {
		return nil, 0, nil, errShort
	}
	hdr := data[k : k+int(n)]
	sum := binary.LittleEndian.Uint64(data[k+int(n):])
	if xxhash.Sum64(hdr) != sum {
		return nil, 0, nil, fmt.Errorf("header checksum mismatch: %w", ErrCorrupt)
	}
	d := &decoder{b: hdr}
	m := &Manifest{}
	d.header(m)
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing header bytes", len(d.b))
	}
	if d.err != nil {
		return nil, 0, nil, d.err
	}
	return m, sum, data[k+int(n)+8:], nil
}

// ReadManifestHeader reads only the version metadata of a manifest (org,
// user, version, parent, totals, stream hash, change-set key) from a short
// prefix of the object: no chunk list is fetched or decoded.
func ReadManifestHeader(ctx context.Context, s Getter, org, user string, v uint64) (*Manifest, error) {
	key := ManifestKey(org, user, v)
	rc, _, err := s.Get(ctx, key)
	if err != nil {
		return nil, &ObjectError{Op: "read manifest", Key: key, Err: err}
	}
	defer rc.Close()
	buf := make([]byte, len(manifestMagic)+1+binary.MaxVarintLen64+maxManifestHeader+8)
	n, err := io.ReadFull(rc, buf)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, &ObjectError{Op: "read manifest", Key: key, Err: err}
	}
	buf = buf[:n]
	if len(buf) < len(manifestMagic)+1 || string(buf[:len(manifestMagic)]) != manifestMagic {
		return nil, &ObjectError{Op: "read manifest", Key: key, Err: fmt.Errorf("bad magic: %w", ErrCorrupt)}
	}
	if f := buf[len(manifestMagic)]; f != ManifestFormat {
		return nil, &ObjectError{Op: "read manifest", Key: key, Err: fmt.Errorf("format %d: %w", f, ErrUnsupportedVersion)}
	}
	m, _, _, err := decodeHeader(buf[len(manifestMagic)+1:])
	if err != nil {
		return nil, &ObjectError{Op: "read manifest", Key: key, Err: err}
	}
	if m.Org != org || m.User != user || m.Version != v {
		return nil, &ObjectError{Op: "read manifest", Key: key, Err: fmt.Errorf("names %s/%s version %d: %w", m.Org, m.User, m.Version, ErrCorrupt)}
	}
	return m, nil
}

var errShort = fmt.Errorf("truncated: %w", ErrCorrupt)

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) num() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) str() string { return string(d.bytes(d.num())) }

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format+": %w", append(args, ErrCorrupt)...)
	}
}

func (d *decoder) header(m *Manifest) {
	m.Org = d.str()
	m.User = d.str()
	m.Version = d.num()
	m.Parent = d.num()
	m.ChunkerName = d.str()
	m.ChunkerVersion = d.num()
	m.Chunker.Min = int(min(d.num(), 1<<30))
	m.Chunker.Avg = int(min(d.num(), 1<<30))
	m.Chunker.Max = int(min(d.num(), 1<<30))
	m.Records = d.num()
	m.StreamLen = d.num()
	copy(m.StreamHash[:], d.bytes(32))
	if d.err == nil {
		x, n := binary.Varint(d.b)
		if n <= 0 {
			d.err = errShort
		} else {
			m.CreatedUnix = x
			d.b = d.b[n:]
		}
	}
	m.Changes = d.str()
}

func decodeLists(m *Manifest, body []byte) error {
	d := &decoder{b: body}
	np := d.num()
	if np > uint64(len(d.b)) { // each pack name takes at least one byte
		d.fail("pack count %d", np)
	}
	if d.err == nil {
		m.Packs = make([]string, 0, np)
		for i := uint64(0); i < np && d.err == nil; i++ {
			m.Packs = append(m.Packs, d.str())
		}
	}
	nc := d.num()
	if nc > uint64(len(d.b))/54 { // each entry takes at least 54 bytes
		d.fail("chunk count %d", nc)
	}
	if d.err == nil {
		m.Chunks = make([]ChunkRef, 0, nc)
	}
	prev := ""
	var streamLen uint64
	for i := uint64(0); i < nc && d.err == nil; i++ {
		var c ChunkRef
		copy(c.ID[:], d.bytes(16))
		copy(c.Sum[:], d.bytes(32))
		size := d.num()
		recs := d.num()
		flags := d.bytes(1)
		shared := d.num()
		suffix := d.str()
		pack := d.num()
		c.Offset = d.num()
		stored := d.num()
		if d.err != nil {
			break
		}
		switch {
		case size == 0 || size > MaxDecodedSize:
			d.fail("chunk %d: size %d", i, size)
		case stored == 0 || stored > MaxDecodedSize:
			d.fail("chunk %d: stored length %d", i, stored)
		case recs > size:
			d.fail("chunk %d: record count %d", i, recs)
		case flags[0]&^1 != 0:
			d.fail("chunk %d: flags %#x", i, flags[0])
		case shared > uint64(len(prev)):
			d.fail("chunk %d: key prefix %d", i, shared)
		case pack >= uint64(len(m.Packs)):
			d.fail("chunk %d: pack index %d of %d", i, pack, len(m.Packs))
		}
		if d.err != nil {
			break
		}
		c.Size, c.Records, c.StoredLen, c.Pack = uint32(size), uint32(recs), uint32(stored), uint32(pack)
		c.Continued = flags[0]&1 != 0
		c.FirstKey = prev[:shared] + suffix
		prev = c.FirstKey
		streamLen += size
		m.Chunks = append(m.Chunks, c)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err == nil && streamLen != m.StreamLen {
		d.fail("chunk sizes sum to %d, stream length is %d", streamLen, m.StreamLen)
	}
	if d.err == nil && m.computeStreamHash() != m.StreamHash {
		d.fail("stream hash does not match the chunk list")
	}
	if d.err != nil && !errors.Is(d.err, ErrCorrupt) {
		return fmt.Errorf("%v: %w", d.err, ErrCorrupt)
	}
	return d.err
}

// SameContent reports whether two manifests describe the same stream with the
// same chunk list (ignoring version numbers, timestamps and pack placement).
func (m *Manifest) SameContent(o *Manifest) bool {
	if m.StreamHash != o.StreamHash || len(m.Chunks) != len(o.Chunks) || m.StreamLen != o.StreamLen {
		return false
	}
	for i := range m.Chunks {
		if m.Chunks[i].ID != o.Chunks[i].ID {
			return false
		}
	}
	return true
}

// The stream hash of a version is SHA-256 over the SHA-256 digests of its
// chunks, in order: a hash list of the canonical stream. It pins the exact
// bytes and order of the stream as strongly as a plain SHA-256 of the stream
// would, and unlike one it can be recomputed after a patch from the chunk
// list alone, so applying a small patch to a big data set does not have to
// read and hash the whole stream (see issue "Diffs and patches", item 7).
func (m *Manifest) computeStreamHash() [32]byte {
	h := sha256.New()
	for i := range m.Chunks {
		h.Write(m.Chunks[i].Sum[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// SetStreamHash recomputes StreamHash from the chunk list.
func (m *Manifest) SetStreamHash() { m.StreamHash = m.computeStreamHash() }

// StreamHashOf computes the stream hash of a canonical stream cut into the
// given chunks (each chunk's SHA-256, hashed in order).
func StreamHashOf(chunks [][]byte) [32]byte {
	h := sha256.New()
	for _, c := range chunks {
		s := sha256.Sum256(c)
		h.Write(s[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
