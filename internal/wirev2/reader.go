// Package wirev2 is the delta-pack reader of format 2 exactly as clients
// built before format 3 have it (wire/delta.go at commit 5635388: its reader half
// and the types it uses, copied as they were). Tests use
// it as an old client, to prove that a new server still answers such a
// client in a format it reads. Do not change it to follow wire: it is a
// fixture of the past, like a golden file. (readInsert, readEnd and
// readDictRef were split out of readManifest and Next, unchanged in what
// they do, when the house rule on function length reached this package.)
package wirev2

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

const (
	DeltaMagic  = "DSDP"
	DeltaFormat = 2

	opCopy   = 0
	opInsert = 1
	opEnd    = 2

	flagDict  = 1
	flagAbort = 0x80
	dictSpan  = 3
	endMark   = 0xff

	maxHeader = 1 << 20
	maxAbort  = 4 << 10
	dictID    = 1
	maxChunk  = 16 << 20
)

// SyncHeader and AbortError are the old client's own copies of the types
// (the policy kept as the wire's: the JSON the old client read).
type SyncHeader struct {
	Org   string `json:"org"`
	User  string `json:"user"`
	From  uint64 `json:"from"` // 0: a full sync, the client replaces what it has
	To    uint64 `json:"to"`
	Skip  int    `json:"skip"` // chunks of the section left out (resume)
	Total struct {
		Chunks int   `json:"chunks"` // chunks the client lacks
		Bytes  int64 `json:"bytes"`  // their raw size
	} `json:"total"`
	Manifest struct {
		Parent         uint64 `json:"parent"`
		Records        uint64 `json:"records"`
		StreamLen      uint64 `json:"stream_len"`
		StreamHash     string `json:"stream_hash"` // hex
		Chunks         int    `json:"chunks"`
		ChunkerName    string `json:"chunker"`
		ChunkerVersion uint64 `json:"chunker_version"`
		Min            int    `json:"min"`
		Avg            int    `json:"avg"`
		Max            int    `json:"max"`
		CreatedUnix    int64  `json:"created_unix"`
	} `json:"manifest"`
	IDSeeds [2]uint64   `json:"id_seeds"` // per-user chunk-ID seeds, to verify chunks
	Policy  wire.Policy `json:"policy"`
}

// AbortError is the content of an abort frame.
type AbortError struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *AbortError) Error() string {
	return fmt.Sprintf("server aborted the delta pack: %d %s: %s", e.Status, e.Code, e.Message)
}

// ErrBadDelta is wrapped by every error about a malformed delta pack.
var ErrBadDelta = errors.New("malformed delta pack")

// DeltaReader decodes a delta pack on the client.
type DeltaReader struct {
	dec     *zstd.Decoder
	r       *bufio.Reader
	header  SyncHeader
	chunks  []snapshot.ChunkRef
	hasher  *snapshot.Hasher
	dictD   *zstd.Decoder
	left    int
	done    bool
	aborted *AbortError
	lastJ   int
	oldLen  int    // chunks in the client's old list (dictionary bounds)
	dict    []byte // reused dictionary buffer
}

// MaxDeltaMemory bounds the zstd window and frames the client accepts.
const MaxDeltaMemory = 64 << 20

// NewDeltaReader reads the header and the manifest delta. old is the chunk
// list of the version the client holds (ignored for a full sync).
func NewDeltaReader(r io.Reader, old []snapshot.ChunkRef) (*DeltaReader, error) {
	var magic [5]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, fmt.Errorf("read delta magic: %v: %w", err, ErrBadDelta)
	}
	if string(magic[:4]) != DeltaMagic {
		return nil, fmt.Errorf("bad magic: %w", ErrBadDelta)
	}
	if magic[4] != DeltaFormat {
		return nil, fmt.Errorf("delta format %d: %w", magic[4], snapshot.ErrUnsupportedVersion)
	}
	dec, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(MaxDeltaMemory), zstd.WithDecoderMaxWindow(MaxDeltaMemory), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	d := &DeltaReader{dec: dec, r: bufio.NewReaderSize(dec, 64<<10), lastJ: -1}
	if err := d.readHeader(); err != nil {
		dec.Close()
		return nil, err
	}
	if d.header.From == 0 {
		old = nil
	}
	d.oldLen = len(old)
	if err := d.readManifest(old); err != nil {
		dec.Close()
		return nil, err
	}
	d.hasher = snapshot.HasherFromSeeds(d.header.IDSeeds)
	d.left = d.header.Total.Chunks - d.header.Skip
	return d, nil
}

func (d *DeltaReader) bad(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrBadDelta)...)
}

func (d *DeltaReader) num() (uint64, error) {
	x, err := binary.ReadUvarint(d.r)
	if err != nil {
		return 0, d.bad("truncated (%v)", err)
	}
	return x, nil
}

func (d *DeltaReader) readHeader() error {
	n, err := d.num()
	if err != nil {
		return err
	}
	if n > maxHeader {
		return d.bad("header of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		return d.bad("truncated header")
	}
	if err := json.Unmarshal(b, &d.header); err != nil {
		return d.bad("header: %v", err)
	}
	h := &d.header
	if h.Skip < 0 || h.Total.Chunks < 0 || h.Skip > h.Total.Chunks || h.Manifest.Chunks < 0 || h.Total.Chunks > h.Manifest.Chunks {
		return d.bad("header counts")
	}
	return nil
}

func (d *DeltaReader) readManifest(old []snapshot.ChunkRef) error {
	want := d.header.Manifest.Chunks
	prev := ""
	for {
		op, err := d.r.ReadByte()
		if err != nil {
			return d.bad("truncated manifest delta")
		}
		switch op {
		case opEnd:
			if len(d.chunks) != want {
				return d.bad("manifest delta gives %d chunks, header says %d", len(d.chunks), want)
			}
			return nil
		case opCopy:
			from, err := d.num()
			if err != nil {
				return err
			}
			n, err := d.num()
			if err != nil {
				return err
			}
			if from > uint64(len(old)) || n > uint64(len(old))-from || uint64(len(d.chunks))+n > uint64(want) {
				return d.bad("copy %d+%d of %d old chunks", from, n, len(old))
			}
			d.chunks = append(d.chunks, old[from:from+n]...)
			if n > 0 {
				prev = old[from+n-1].FirstKey
			}
		case opInsert:
			if prev, err = d.readInsert(want, prev); err != nil {
				return err
			}
		default:
			return d.bad("manifest op %d", op)
		}
	}
}

// readInsert reads an insert op's chunk entries; prev is the first key of
// the chunk before them, and it returns the last one's.
func (d *DeltaReader) readInsert(want int, prev string) (string, error) {
	n, err := d.num()
	if err != nil {
		return prev, err
	}
	if uint64(len(d.chunks))+n > uint64(want) {
		return prev, d.bad("insert of %d chunks", n)
	}
	for range n {
		var c snapshot.ChunkRef
		if _, err := io.ReadFull(d.r, c.ID[:]); err != nil {
			return prev, d.bad("truncated chunk entry")
		}
		size, err := d.num()
		if err != nil {
			return prev, err
		}
		recs, err := d.num()
		if err != nil {
			return prev, err
		}
		flags, err := d.r.ReadByte()
		if err != nil {
			return prev, d.bad("truncated chunk entry")
		}
		shared, err := d.num()
		if err != nil {
			return prev, err
		}
		sl, err := d.num()
		if err != nil {
			return prev, err
		}
		if size == 0 || size > maxChunk || recs > size || flags > 1 || shared > uint64(len(prev)) || sl > snapshot.MaxKeyLen {
			return prev, d.bad("chunk entry")
		}
		suffix := make([]byte, sl)
		if _, err := io.ReadFull(d.r, suffix); err != nil {
			return prev, d.bad("truncated chunk entry")
		}
		c.Size, c.Records, c.Continued = uint32(size), uint32(recs), flags == 1
		c.FirstKey = prev[:shared] + string(suffix)
		c.StoredLen = c.Size
		prev = c.FirstKey
		d.chunks = append(d.chunks, c)
	}
	return prev, nil
}

// Header returns the pack's header.
func (d *DeltaReader) Header() SyncHeader { return d.header }

// Chunks returns the new version's chunk list. Entries copied from the old
// list keep their fields; new entries carry ID, size, records, continuation
// and first key (Sum is filled in by the client as chunks are verified).
func (d *DeltaReader) Chunks() []snapshot.ChunkRef { return d.chunks }

// Next returns the next chunk: its index in the new list and its raw bytes,
// verified against the entry's size and keyed ID. base returns the raw bytes
// of an old chunk (the client's copy) for dictionary-compressed chunks. It
// returns io.EOF after the last chunk, once the end mark is checked, and
// an *AbortError (on this and every later call) if the server ended the
// pack early with an abort frame.
func (d *DeltaReader) Next(base func(oldIndex int) ([]byte, error)) (int, []byte, error) {
	if d.aborted != nil {
		return 0, nil, d.aborted
	}
	if d.done {
		return 0, nil, io.EOF
	}
	if d.left == 0 {
		return 0, nil, d.readEnd()
	}
	j, err := d.num()
	if err != nil {
		return 0, nil, err
	}
	if j >= uint64(len(d.chunks)) || int(j) <= d.lastJ {
		return 0, nil, d.bad("chunk index %d", j)
	}
	flags, err := d.r.ReadByte()
	if err != nil {
		return 0, nil, d.bad("truncated chunk")
	}
	if flags == flagAbort {
		return 0, nil, d.readAbort()
	}
	baseIdx, baseCount, err := d.readDictRef(flags)
	if err != nil {
		return 0, nil, err
	}
	n, err := d.num()
	if err != nil {
		return 0, nil, err
	}
	c := &d.chunks[j]
	if n > maxChunk || (baseIdx < 0 && n != uint64(c.Size)) {
		return 0, nil, d.bad("chunk %d length %d", j, n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(d.r, payload); err != nil {
		return 0, nil, d.bad("truncated chunk %d", j)
	}
	raw := payload
	if baseIdx >= 0 {
		d.dict = d.dict[:0]
		for i := baseIdx; i < baseIdx+baseCount; i++ {
			b, err := base(i)
			if err != nil {
				return 0, nil, fmt.Errorf("dictionary chunk %d for chunk %d: %w", i, j, err)
			}
			d.dict = append(d.dict, b...)
		}
		var err error
		raw, err = d.dictDecode(payload, d.dict, int(c.Size))
		if err != nil {
			return 0, nil, d.bad("chunk %d: %v", j, err)
		}
	}
	if len(raw) != int(c.Size) || d.hasher.Sum(raw) != c.ID {
		return 0, nil, fmt.Errorf("chunk %d (%s): content does not match its ID: %w", j, c.ID, snapshot.ErrCorrupt)
	}
	d.left--
	d.lastJ = int(j)
	return int(j), raw, nil
}

// readEnd checks the end mark after the last chunk and that nothing
// follows it; it returns io.EOF when both hold.
func (d *DeltaReader) readEnd() error {
	b, err := d.r.ReadByte()
	if err != nil || b != endMark {
		return d.bad("missing end mark")
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return d.bad("trailing data")
	}
	d.done = true
	return io.EOF
}

// readDictRef reads the old chunks a chunk's dictionary is made of, when
// its flags say it has one (index -1 when not).
func (d *DeltaReader) readDictRef(flags byte) (int, int, error) {
	if flags&flagDict == 0 {
		if flags != 0 {
			return -1, 0, d.bad("chunk flags %d", flags)
		}
		return -1, 0, nil
	}
	bi, err := d.num()
	if err != nil {
		return -1, 0, err
	}
	bn, err := d.num()
	if err != nil {
		return -1, 0, err
	}
	if bn == 0 || bn > dictSpan || bi > uint64(d.oldLen) || bn > uint64(d.oldLen)-bi {
		return -1, 0, d.bad("dictionary chunks %d+%d of %d", bi, bn, d.oldLen)
	}
	return int(bi), int(bn), nil
}

// readAbort reads an abort frame and returns it as *AbortError; the pack
// ends there.
func (d *DeltaReader) readAbort() error {
	n, err := d.num()
	if err != nil {
		return err
	}
	if n > maxAbort {
		return d.bad("abort frame of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		return d.bad("truncated abort frame")
	}
	var ae AbortError
	if err := json.Unmarshal(b, &ae); err != nil {
		return d.bad("abort frame: %v", err)
	}
	if ae.Status != 404 && ae.Status != 410 && (ae.Status < 500 || ae.Status > 599) {
		return d.bad("abort frame with status %d", ae.Status)
	}
	d.aborted = &ae
	return d.aborted
}

func (d *DeltaReader) dictDecode(frame, dict []byte, size int) ([]byte, error) {
	var err error
	if d.dictD == nil {
		d.dictD, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxDeltaMemory), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
	}
	if err := d.dictD.ResetWithOptions(nil, zstd.WithDecoderDictRaw(dictID, dict)); err != nil {
		return nil, err
	}
	return d.dictD.DecodeAll(frame, make([]byte, 0, size))
}

// Close releases the decoders.
func (d *DeltaReader) Close() {
	d.dec.Close()
	if d.dictD != nil {
		d.dictD.Close()
	}
}
