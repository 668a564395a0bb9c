package wire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// state3 is where the reader of a format-3 pack is.
type state3 struct {
	old      []snapshot.ChunkRef // the client's chunk list (dictionary sizes)
	base     Base                // or the client's list, read on demand (edit mode)
	edit     *ManifestEdit       // edit mode: the new list as regions of entries
	newLen   int                 // edit mode: chunks of the new list so far
	entryJ   []int               // edit mode: per entry (d.chunks), its index in the new list
	prevOld  []int               // edit mode: per entry, the old chunk copied just before it, or -1
	lastOld  int                 // edit mode: the last old chunk copied
	newIdx   []int               // chunks the pack carries, in order (positions in d.chunks)
	explicit []bool              // per newIdx: the manifest gave its first key
	next     int                 // of newIdx: the next chunk Next returns
	groupEnd int                 // of newIdx: the end of the decoded group
	group    []byte              // the decoded group
	off      int                 // of the next chunk in group
	frame    []byte              // reused input buffer
	err      error               // sticky
}

// Base is the chunk list a delta applies to, read on demand: a device
// keeps it in pages, and a one-record delta should read the few entries
// around its change, not the list. Errors of Chunk (the local copy cannot
// be read) are returned as they are, not as ErrBadDelta.
type Base interface {
	Len() int
	Chunk(i int) (snapshot.ChunkRef, error)
	// Totals are the version's stream length and record count.
	Totals() (streamLen, records uint64)
}

// BaseLister is a Base that can give its list whole (read-only), which
// a pack read in list mode needs (format 2): faster than entry by entry.
type BaseLister interface {
	AllChunks() ([]snapshot.ChunkRef, error)
}

// ManifestEdit is the new chunk list of a format-3 delta read against a
// Base: the regions where it differs from the old list (outside them,
// new chunk NewFrom+k is old chunk OldFrom+k of the run) and the new
// list's entries in the regions, in order. An entry of a chunk the pack
// carries is complete once Next has returned it.
type ManifestEdit struct {
	Regions []diff.Region
	Entries []snapshot.ChunkRef
	// Len is the new list's length.
	Len int
}

// NewDeltaReaderBase is NewDeltaReader for a client that keeps its chunk
// list where reading it whole costs: a format-3 delta is read without
// materialising the new list (Edit gives it, Chunks is nil), and the old
// one is read through base, entry by entry, where the change needs it.
// Other packs (format 2, a full sync) are read as NewDeltaReader reads
// them, with base's list read whole (Chunks gives the new list).
func NewDeltaReaderBase(r io.Reader, base Base) (*DeltaReader, error) {
	magic, err := readMagic(r)
	if err != nil {
		return nil, err
	}
	if magic[4] == DeltaFormat {
		return newReader3Base(r, base)
	}
	var old []snapshot.ChunkRef
	if l, ok := base.(BaseLister); ok {
		var err error
		if old, err = l.AllChunks(); err != nil {
			return nil, err
		}
	} else {
		for i := range base.Len() {
			c, err := base.Chunk(i)
			if err != nil {
				return nil, err
			}
			old = append(old, c)
		}
	}
	return NewDeltaReader(io.MultiReader(bytes.NewReader(magic[:]), r), old)
}

// Edit returns the new chunk list of a delta read in edit mode (see
// NewDeltaReaderBase), nil otherwise.
func (d *DeltaReader) Edit() *ManifestEdit {
	if d.v3 == nil {
		return nil
	}
	return d.v3.edit
}

func newReader3(r io.Reader, old []snapshot.ChunkRef) (*DeltaReader, error) {
	return newReader3On(r, old, nil)
}

func newReader3Base(r io.Reader, base Base) (*DeltaReader, error) {
	return newReader3On(r, nil, base)
}

func newReader3On(r io.Reader, old []snapshot.ChunkRef, base Base) (*DeltaReader, error) {
	// Every frame decodes into a buffer sized from what the pack declared
	// (WithDecodeAllCapLimit): a frame claiming more is refused before it
	// is decoded.
	opts := []zstd.DOption{zstd.WithDecoderMaxMemory(MaxDeltaMemory), zstd.WithDecoderMaxWindow(MaxDeltaMemory),
		zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true)}
	dec, err := zstd.NewReader(nil, opts...)
	if err != nil {
		return nil, err
	}
	groups, err := zstd.NewReader(nil, opts...)
	if err != nil {
		dec.Close()
		return nil, err
	}
	d := &DeltaReader{dec: dec, dictD: groups, r: bufio.NewReaderSize(r, 64<<10), lastJ: -1, v3: &state3{base: base}}
	if err := d.open3(old); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// open3 reads the header and the manifest delta.
func (d *DeltaReader) open3(old []snapshot.ChunkRef) error {
	hb, err := d.readFrame(maxHeader3, []byte(headerDict))
	if err != nil {
		return err
	}
	if err := d.parseHeader(hb); err != nil {
		return err
	}
	if d.header.From == 0 {
		old, d.v3.base = nil, nil
	}
	d.oldLen, d.v3.old = len(old), old
	if d.v3.base != nil {
		d.oldLen = d.v3.base.Len()
		d.v3.edit = &ManifestEdit{}
	}
	// A chunk takes at most an entry (an ID, four numbers, a flag and a
	// key) and an op (a byte and two numbers).
	perChunk := 16 + 4*binary.MaxVarintLen64 + 1 + snapshot.MaxKeyLen + 1 + 2*binary.MaxVarintLen64
	mb, err := d.readFrame(min(maxManifest3, 64+d.header.Manifest.Chunks*perChunk), []byte(headerDict))
	if err != nil {
		return err
	}
	if err := d.readManifest3(mb, old); err != nil {
		return err
	}
	d.hasher = snapshot.HasherFromSeeds(d.header.IDSeeds)
	d.left = d.header.Total.Chunks - d.header.Skip
	if len(d.v3.newIdx) != d.left {
		return d.bad("manifest delta lists %d chunks to send, header says %d", len(d.v3.newIdx), d.left)
	}
	return nil
}

// readFrame reads uvarint len and a zstd frame of at most limit bytes
// whose content is at most limit bytes, compressed against dict, and
// returns the content.
func (d *DeltaReader) readFrame(limit int, dict []byte) ([]byte, error) {
	n, err := d.num()
	if err != nil {
		return nil, err
	}
	if n > uint64(limit) {
		return nil, d.bad("frame of %d bytes", n)
	}
	// Read what arrives rather than allocate what the length claims.
	frame, err := io.ReadAll(io.LimitReader(d.r, int64(n)))
	if err != nil || uint64(len(frame)) != n {
		return nil, d.bad("truncated frame")
	}
	if err := d.dec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(dictID, dict)); err != nil {
		return nil, err
	}
	// The buffer is the size the frame declares, or (a small frame does
	// not declare it) a small one first, within limit: its capacity is the
	// limit the decoder keeps to (WithDecodeAllCapLimit). Allocating limit
	// itself cost a one-record delta of 64 MB a 4.8 MB buffer for a
	// manifest delta of a few bytes.
	size, sized := min(limit, smallFrame), false
	var fh zstd.Header
	if fh.Decode(frame) == nil && fh.HasFCS {
		if fh.FrameContentSize > uint64(limit) {
			return nil, d.bad("frame of %d bytes decoded, at most %d", fh.FrameContentSize, limit)
		}
		size, sized = int(fh.FrameContentSize), true
	}
	out, err := d.dec.DecodeAll(frame, make([]byte, 0, size))
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) && !sized && size < limit {
		out, err = d.dec.DecodeAll(frame, make([]byte, 0, limit))
	}
	if err != nil {
		return nil, d.bad("frame: %v", err)
	}
	return out, nil
}

// smallFrame is the buffer a frame that does not declare its size is
// first decoded into (the encoder declares the size of all but the
// smallest frames).
const smallFrame = 16 << 10

// bytesReader reads the fields of a decoded manifest delta.
type bytesReader struct {
	b   []byte
	bad bool
}

func (r *bytesReader) num() uint64 {
	x, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad, r.b = true, nil
		return 0
	}
	r.b = r.b[n:]
	return x
}

func (r *bytesReader) bytes(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.bad, r.b = true, nil
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *bytesReader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

// readManifest3 rebuilds the new chunk list from the manifest delta and
// checks it against the header's totals.
func (d *DeltaReader) readManifest3(b []byte, old []snapshot.ChunkRef) error {
	if d.v3.edit != nil {
		return d.readEdit3(b)
	}
	err := d.manifestOps3(b, uint64(len(old)), func() int { return len(d.chunks) }, func(from, n uint64) {
		d.chunks = append(d.chunks, old[from:from+n]...)
	})
	if err != nil {
		return err
	}
	var streamLen uint64
	for i := range d.chunks {
		streamLen += uint64(d.chunks[i].Size)
	}
	if streamLen != d.header.Manifest.StreamLen {
		return d.bad("manifest delta gives a stream of %d bytes, header says %d", streamLen, d.header.Manifest.StreamLen)
	}
	return nil
}

// manifestOps3 walks the ops of a manifest delta, the one reader of its
// syntax for both modes: each copy of old entries [from, from+n) of oldLen,
// checked, goes to copied; new and known entries are read by sentEntries3.
// made tells how many entries of the new list the ops gave so far; the ops
// must give exactly the header's count and fill b.
func (d *DeltaReader) manifestOps3(b []byte, oldLen uint64, made func() int, copied func(from, n uint64)) error {
	want := uint64(d.header.Manifest.Chunks)
	r := &bytesReader{b: b}
	oldPos := uint64(0)
	prevKnown := ""
	for {
		op := r.byte()
		if r.bad {
			return d.bad("truncated manifest delta")
		}
		if op == op3End {
			break
		}
		n := r.num() // a count, or for a copy the gap before it
		left := want - uint64(made())
		var err error
		switch op {
		case op3Copy:
			from := oldPos + n
			n = r.num()
			if r.bad || from < oldPos || from > oldLen || n == 0 || n > oldLen-from || n > left {
				return d.bad("copy %d+%d of %d old chunks", from, n, oldLen)
			}
			copied(from, n)
			oldPos = from + n
		case op3New, op3Known:
			prevKnown, err = d.sentEntries3(r, op, n, left, prevKnown)
		default:
			return d.bad("manifest op %d", op)
		}
		if err != nil {
			return err
		}
	}
	if len(r.b) != 0 || uint64(made()) != want {
		return d.bad("manifest delta gives %d chunks, header says %d", made(), want)
	}
	return nil
}

// newEntries3 reads n entries of chunks the pack carries.
func (d *DeltaReader) newEntries3(r *bytesReader, n uint64) error {
	st := d.v3
	var err error
	for range n {
		v := r.num()
		size := v >> 2
		if r.bad || size == 0 || size > maxChunk {
			return d.bad("chunk entry of %d bytes", size)
		}
		c := snapshot.ChunkRef{Size: uint32(size), StoredLen: uint32(size), Continued: v&1 != 0}
		explicit := v&2 != 0
		if explicit {
			kl := r.num()
			if r.bad || kl == 0 || kl > snapshot.MaxKeyLen {
				return d.bad("first key of %d bytes", kl)
			}
			if c.FirstKey, err = d.newKey("", r.bytes(kl)); err != nil {
				return err
			}
		}
		first := len(d.chunks) == 0
		if st.edit != nil {
			first = st.newLen == 0
		}
		if r.bad || c.Continued && !explicit && first {
			return d.bad("chunk entry")
		}
		st.newIdx = append(st.newIdx, len(d.chunks))
		st.explicit = append(st.explicit, explicit)
		d.appendEntry(c)
	}
	return nil
}

// appendEntry appends an entry of the new list: to the list, or in edit
// mode to the entries, noting its place.
func (d *DeltaReader) appendEntry(c snapshot.ChunkRef) {
	if st := d.v3; st.edit != nil {
		prev := -1
		if n := len(st.entryJ); st.newLen > 0 && (n == 0 || st.entryJ[n-1] != st.newLen-1) {
			prev = st.lastOld
		}
		st.entryJ = append(st.entryJ, st.newLen)
		st.prevOld = append(st.prevOld, prev)
		st.newLen++
	}
	d.chunks = append(d.chunks, c)
}

// sentEntries3 reads the n entries of a new or known op (op3New,
// op3Known) of at most left; prevKnown is the last known entry's first key,
// returned updated.
func (d *DeltaReader) sentEntries3(r *bytesReader, op byte, n, left uint64, prevKnown string) (string, error) {
	if r.bad || n == 0 || n > left {
		return prevKnown, d.bad("manifest op %d of %d chunks", op, n)
	}
	if op == op3New {
		return prevKnown, d.newEntries3(r, n)
	}
	return d.knownEntries3(r, n, prevKnown)
}

// knownEntries3 reads n complete entries (front-coded first keys) and
// returns the last first key.
func (d *DeltaReader) knownEntries3(r *bytesReader, n uint64, prev string) (string, error) {
	for range n {
		var c snapshot.ChunkRef
		copy(c.ID[:], r.bytes(uint64(len(c.ID))))
		size, recs, flags := r.num(), r.num(), r.byte()
		shared, sl := r.num(), r.num()
		if r.bad || size == 0 || size > maxChunk || recs > size || flags > 1 || shared > uint64(len(prev)) || sl > snapshot.MaxKeyLen {
			return "", d.bad("chunk entry")
		}
		suffix := r.bytes(sl)
		if r.bad {
			return "", d.bad("truncated chunk entry")
		}
		var err error
		if c.FirstKey, err = d.newKey(prev[:shared], suffix); err != nil {
			return "", err
		}
		c.Size, c.Records, c.Continued, c.StoredLen = uint32(size), uint32(recs), flags == 1, uint32(size)
		prev = c.FirstKey
		d.appendEntry(c)
	}
	return prev, nil
}

func (d *DeltaReader) next3(base func(oldIndex int) ([]byte, error)) (int, []byte, error) {
	st := d.v3
	switch {
	case d.aborted != nil:
		return 0, nil, d.aborted
	case st.err != nil:
		return 0, nil, st.err
	case d.done:
		return 0, nil, io.EOF
	}
	if st.next == st.groupEnd {
		if st.next == len(st.newIdx) {
			st.err = d.end3()
			if st.err == nil {
				d.done = true
				return 0, nil, io.EOF
			}
			return 0, nil, st.err
		}
		if err := d.readSection(base); err != nil {
			if d.aborted == nil {
				st.err = err
			}
			return 0, nil, err
		}
	}
	e := st.newIdx[st.next]
	raw := st.group[st.off : st.off+int(d.chunks[e].Size)]
	if err := d.derive(st.next, raw); err != nil {
		st.err = err
		return 0, nil, err
	}
	st.off += len(raw)
	st.next++
	d.left--
	j := e
	if st.edit != nil {
		j = st.entryJ[e]
	}
	d.lastJ = j
	return j, raw, nil
}

// end3 checks the end mark, that nothing follows it, and the record total.
func (d *DeltaReader) end3() error {
	b, err := d.r.ReadByte()
	if err != nil || b != sectionEnd {
		return d.bad("missing end mark")
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return d.bad("trailing data")
	}
	var recs uint64
	for i := range d.chunks {
		recs += uint64(d.chunks[i].Records)
	}
	if st := d.v3; st.edit != nil {
		st.edit.Entries = d.chunks
		_, oldRecs := st.base.Totals()
		var gone uint64
		err := d.forRegionsOld(func(c snapshot.ChunkRef) { gone += uint64(c.Records) })
		if err != nil {
			return err
		}
		recs = oldRecs - gone + recs
	}
	if recs != d.header.Manifest.Records {
		return d.bad("the chunks hold %d records, header says %d", recs, d.header.Manifest.Records)
	}
	return nil
}

// readSection reads the next group (decoding it into st.group) or an
// abort section.
func (d *DeltaReader) readSection(base func(oldIndex int) ([]byte, error)) error {
	kind, err := d.r.ReadByte()
	if err != nil {
		return d.bad("truncated pack")
	}
	switch kind {
	case sectionGroup:
		return d.readGroup(base)
	case sectionAbort:
		return d.readAbort()
	}
	return d.bad("section %d", kind)
}

// readGroup reads and decodes one group.
func (d *DeltaReader) readGroup(base func(oldIndex int) ([]byte, error)) error {
	st := d.v3
	n, err := d.num()
	if err != nil {
		return err
	}
	if n == 0 || n > uint64(len(st.newIdx)-st.next) {
		return d.bad("group of %d chunks, %d left", n, len(st.newIdx)-st.next)
	}
	end := st.next + int(n)
	raw := 0
	for _, j := range st.newIdx[st.next:end] {
		raw += int(d.chunks[j].Size)
	}
	if raw > maxGroupBytes {
		return d.bad("group of %d bytes", raw)
	}
	runs, err := d.readRuns()
	if err != nil {
		return err
	}
	flen, err := d.num()
	if err != nil {
		return err
	}
	if flen > uint64(raw+raw>>8+1024) {
		return d.bad("group frame of %d bytes for %d", flen, raw)
	}
	st.frame = slices.Grow(st.frame[:0], int(flen))[:flen]
	if _, err := io.ReadFull(d.r, st.frame); err != nil {
		return d.bad("truncated group")
	}
	if err := d.groupDict(runs, base); err != nil {
		return err
	}
	out, err := d.dictD.DecodeAll(st.frame, slices.Grow(st.group[:0], raw))
	if err != nil {
		return d.bad("group: %v", err)
	}
	if len(out) != raw {
		return d.bad("group of %d bytes, want %d", len(out), raw)
	}
	st.group, st.off, st.groupEnd = out, 0, end
	return nil
}

// readRuns reads a group's dictionary runs of old chunks.
func (d *DeltaReader) readRuns() ([][2]int, error) {
	nr, err := d.num()
	if err != nil {
		return nil, err
	}
	if nr > uint64(d.oldLen) {
		return nil, d.bad("%d dictionary runs of %d old chunks", nr, d.oldLen)
	}
	runs := make([][2]int, 0, nr)
	pos, size := uint64(0), 0
	for range nr {
		gap, err := d.num()
		if err != nil {
			return nil, err
		}
		cnt, err := d.num()
		if err != nil {
			return nil, err
		}
		old := uint64(d.oldLen)
		if gap > old-pos || cnt == 0 || cnt > old-pos-gap {
			return nil, d.bad("dictionary run %d+%d of %d old chunks", pos+gap, cnt, old)
		}
		first := pos + gap
		for i := first; i < first+cnt; i++ {
			c, err := d.oldChunk(int(i))
			if err != nil {
				return nil, err
			}
			size += int(c.Size)
		}
		if size > maxDictBytes {
			return nil, d.bad("dictionary of more than %d bytes", maxDictBytes)
		}
		runs = append(runs, [2]int{int(first), int(cnt)})
		pos = first + cnt
	}
	return runs, nil
}

// groupDict assembles the dictionary from the client's old chunks and
// points the group decoder at it.
func (d *DeltaReader) groupDict(runs [][2]int, base func(oldIndex int) ([]byte, error)) error {
	if len(runs) == 0 {
		return d.dictD.ResetWithOptions(nil, zstd.WithDecoderDictDelete())
	}
	d.dict = d.dict[:0]
	for _, r := range runs {
		for i := r[0]; i < r[0]+r[1]; i++ {
			b, err := base(i)
			if err != nil {
				return fmt.Errorf("dictionary chunk %d: %w", i, err)
			}
			c, err := d.oldChunk(i)
			if err != nil {
				return err
			}
			if len(b) != int(c.Size) {
				return fmt.Errorf("dictionary chunk %d: %d bytes, want %d: %w", i, len(b), c.Size, snapshot.ErrCorrupt)
			}
			d.dict = append(d.dict, b...)
		}
	}
	return d.dictD.ResetWithOptions(nil, zstd.WithDecoderDictRaw(dictID, d.dict))
}

// derive fills in the entry of the k-th chunk the pack carries from its
// bytes: keyed ID, record count and (unless the manifest gave it) first key.
func (d *DeltaReader) derive(k int, raw []byte) error {
	st := d.v3
	j := st.newIdx[k]
	c := &d.chunks[j]
	c.ID = d.hasher.Sum(raw)
	if c.Continued {
		c.Records = 0
		if !st.explicit[k] {
			if st.edit != nil && st.prevOld[j] >= 0 {
				prev, err := d.oldChunk(st.prevOld[j])
				if err != nil {
					return err
				}
				c.FirstKey = prev.FirstKey
			} else {
				c.FirstKey = d.chunks[j-1].FirstKey
			}
		}
		return nil
	}
	recs, key, err := parseRecords(raw)
	switch {
	case err != nil:
		return d.bad("chunk %d: %v", j, err)
	case key == "" && !st.explicit[k]:
		return d.bad("chunk %d: its first key is cut and the manifest does not give it", j)
	case key != "" && st.explicit[k] && key != c.FirstKey:
		return d.bad("chunk %d: first key %q, manifest says %q", j, key, c.FirstKey)
	}
	if key != "" && !st.explicit[k] {
		if err := d.countKey(len(key)); err != nil {
			return err
		}
		c.FirstKey = key
	}
	c.Records = uint32(recs)
	return nil
}

// parseRecords walks the records of a chunk that starts at a record
// boundary: either whole records filling it exactly, or the start of one
// record longer than the chunk (the first piece of an oversize record,
// whose key is "" when the chunk ends inside it).
func parseRecords(raw []byte) (int, string, error) {
	recs, first := 0, ""
	for off := 0; off < len(raw); {
		kl, n := binary.Uvarint(raw[off:])
		if n <= 0 || kl == 0 || kl > snapshot.MaxKeyLen {
			if n == 0 && recs == 0 {
				return 1, "", nil
			}
			return 0, "", fmt.Errorf("record %d: bad key length", recs)
		}
		off += n
		if kl > uint64(len(raw)-off) {
			if recs == 0 {
				return 1, "", nil
			}
			return 0, "", fmt.Errorf("record %d cut by the chunk end", recs)
		}
		key := string(raw[off : off+int(kl)])
		off += int(kl)
		vl, n := binary.Uvarint(raw[off:])
		if n < 0 || n > 0 && vl > snapshot.MaxValueLen {
			return 0, "", fmt.Errorf("record %d: bad value length", recs)
		}
		if recs == 0 {
			first = key
		}
		recs++
		if n == 0 || vl > uint64(len(raw)-off-n) {
			if recs == 1 {
				return 1, first, nil
			}
			return 0, "", fmt.Errorf("record %d cut by the chunk end", recs-1)
		}
		off += n + int(vl)
	}
	return recs, first, nil
}

// oldChunk returns entry i of the client's list.
func (d *DeltaReader) oldChunk(i int) (snapshot.ChunkRef, error) {
	if st := d.v3; st.base != nil {
		return st.base.Chunk(i)
	}
	return d.v3.old[i], nil
}

// readEdit3 reads the manifest delta in edit mode: copies become the gaps
// between regions, entries are kept, and the stream length is checked
// from the old list's total and the entries the regions replace.
func (d *DeltaReader) readEdit3(b []byte) error {
	st := d.v3
	regOld, regNew := 0, 0 // where the current region starts
	err := d.manifestOps3(b, uint64(d.oldLen), func() int { return st.newLen }, func(from, n uint64) {
		if int(from) > regOld || st.newLen > regNew {
			st.edit.Regions = append(st.edit.Regions, diff.Region{OldFrom: regOld, OldTo: int(from), NewFrom: regNew, NewTo: st.newLen})
		}
		st.newLen += int(n)
		st.lastOld = int(from+n) - 1
		regOld, regNew = int(from+n), st.newLen
	})
	if err != nil {
		return err
	}
	if d.oldLen > regOld || st.newLen > regNew {
		st.edit.Regions = append(st.edit.Regions, diff.Region{OldFrom: regOld, OldTo: d.oldLen, NewFrom: regNew, NewTo: st.newLen})
	}
	st.edit.Len, st.edit.Entries = st.newLen, d.chunks
	oldStream, _ := st.base.Totals()
	var gone, added uint64
	if err := d.forRegionsOld(func(c snapshot.ChunkRef) { gone += uint64(c.Size) }); err != nil {
		return err
	}
	for i := range d.chunks {
		added += uint64(d.chunks[i].Size)
	}
	if oldStream < gone || oldStream-gone+added != d.header.Manifest.StreamLen {
		return d.bad("manifest delta gives a stream of %d bytes, header says %d", oldStream-gone+added, d.header.Manifest.StreamLen)
	}
	return nil
}

// forRegionsOld calls fn with every old entry the regions replace.
func (d *DeltaReader) forRegionsOld(fn func(snapshot.ChunkRef)) error {
	for _, rg := range d.v3.edit.Regions {
		for i := rg.OldFrom; i < rg.OldTo; i++ {
			c, err := d.oldChunk(i)
			if err != nil {
				return err
			}
			fn(c)
		}
	}
	return nil
}
