package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// A delta pack is the answer to GET /v1/sync when the client is behind. It
// is versioned by its format byte; the server writes the format the client
// asks for (format=N in the query; a client that sends none gets format 2,
// the last one before the parameter existed), and the reader reads both.
// Format 3 is described in delta3.go. Format 2:
//
//	"DSDP" 0x02
//	one zstd stream {
//	    uvarint len, header JSON (SyncHeader)
//	    manifest delta: ops rebuilding the new chunk list from the old one
//	    chunk section: for each chunk the client lacks, from Skip on:
//	        uvarint index (in the new list), flags byte,
//	        [if flagDict: uvarint first, uvarint count: the old chunks
//	         first..first+count-1, concatenated, are the dictionary],
//	        uvarint length, payload (raw chunk, or a zstd frame compressed
//	        with the old chunk as raw dictionary)
//	    [abort frame: uvarint index, flags byte 0x80, uvarint length,
//	     JSON AbortError; in place of a chunk the server could not read]
//	    end byte 0xff
//	}
//
// The outer zstd stream compresses everything across chunk boundaries, so an
// initial sync costs about what zstd costs on the whole stream; a changed
// chunk is sent as a tiny frame against the chunk it replaces, which the
// client holds. Chunk order is fixed (stream order), so an interrupted
// download resumes with skip=<chunks already verified>.
//
// The server verifies the first chunks before it answers 200; a chunk that
// fails later (damaged in the store, its pack gone, the store down) ends the
// pack with an abort frame, so the client can tell a server failure from a
// cut connection and keeps the chunks it verified for the resume. The frame
// needs no new format number: a reader that does not know it rejects the
// pack as malformed, which it also counts as a server error.
const (
	DeltaMagic = "DSDP"
	// DeltaFormat is the newest format, written unless another is asked for.
	DeltaFormat = 3
	// DeltaFormat2 is the format of clients that do not ask for one.
	DeltaFormat2 = 2

	// ContentTypeDelta is the media type of a delta pack.
	ContentTypeDelta = "application/vnd.deltasync.delta"

	opCopy   = 0
	opInsert = 1
	opEnd    = 2

	flagDict  = 1
	flagAbort = 0x80
	// dictSpan is how many old chunks around the replaced one make the
	// dictionary: when an edit moves a boundary, the new chunk holds the
	// tail or head of a neighbour too.
	dictSpan = 3
	endMark  = 0xff

	maxHeader = 1 << 20
	maxAbort  = 4 << 10
	dictID    = 1
	maxChunk  = 16 << 20 // the chunker never emits more (ChunkerParams.Validate)
)

// SyncHeader opens a delta pack. Totals let the client show exact progress
// before any chunk arrives.
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
	IDSeeds [2]uint64 `json:"id_seeds"` // per-user chunk-ID seeds, to verify chunks
	Policy  Policy    `json:"policy"`
}

// UpToDate is the JSON answer of GET /v1/sync when the client has the head.
type UpToDate struct {
	UpToDate bool   `json:"up_to_date"`
	Version  uint64 `json:"version"`
	Policy   Policy `json:"policy"`
}

// DeltaSource is what the server needs to write a delta pack.
type DeltaSource struct {
	Header    SyncHeader
	Script    *diff.Script         // from the client's version (nil A for a full sync) to the new one
	NewChunks snapshot.ChunkGetter // reads the new version's chunks
	OldChunks snapshot.ChunkGetter // reads the old version's chunks (dictionaries); nil for a full sync
	Format    int                  // of the pack: DeltaFormat2, or DeltaFormat (also 0)

	// Abort describes a failure to read a chunk of the new version for the
	// abort frame that ends the pack (nil: 500 internal).
	Abort func(err error) *AbortError
	// OldChunkError is told when chunks of the old version cannot be read.
	// They only serve as dictionaries: the chunks that needed them are sent
	// whole and the pack stays complete, only bigger. Nil ignores it.
	OldChunkError func(err error)
}

// AbortError is the content of an abort frame: why the server could not
// finish a pack it had begun. Status is an HTTP status the answer would
// have had: 404 or 410 (the version being sent is gone: start again), or
// 5xx (a server failure: retry later, resuming).
type AbortError struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *AbortError) Error() string {
	return fmt.Sprintf("server aborted the delta pack: %d %s: %s", e.Status, e.Code, e.Message)
}

// ErrDeltaAborted is wrapped by WriteDelta's error when it ended the pack
// with an abort frame: the stream itself is well formed and complete.
var ErrDeltaAborted = errors.New("delta pack ended with an abort frame")

// Encoders are pooled: a delta pack needs one stream encoder, and dictionary
// compression re-targets an encoder per chunk with ResetWithOptions. Every
// encoder Huffman-codes the literals of blocks without matches
// (WithAllLitEntropyCompression; klauspost/compress skips that at its
// default level): base64 in a value (a photo) is 6 bits a character, so it
// costs 0.75x of itself instead of 1x. It is zstd: old readers decode it.
//
// The stream's window is 1 MiB, not the default 8: a decoder holds a
// window of history, and the device's memory is the budget (issue 13).
// On the 64 MiB generated data set the stream is 0.3318 of the canonical
// stream with it and 0.3320 without: matches farther back than 1 MiB are
// rare in record data, and chunks repeated whole are not sent twice.
const streamWindow = 1 << 20

var (
	streamEncoders = sync.Pool{New: func() any {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true),
			zstd.WithWindowSize(streamWindow), zstd.WithAllLitEntropyCompression(true))
		return e
	}}
	dictEncoders = sync.Pool{New: func() any {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true),
			zstd.WithLowerEncoderMem(true), zstd.WithAllLitEntropyCompression(true))
		return e
	}}
)

// WriteDelta writes a delta pack in format src.Format (0: DeltaFormat),
// starting at chunk src.Header.Skip.
func WriteDelta(ctx context.Context, w io.Writer, src DeltaSource) error {
	h, needed, err := packHeader(src)
	if err != nil {
		return err
	}
	switch src.Format {
	case 0, DeltaFormat:
		return writeDelta3(ctx, w, src, h, needed)
	case DeltaFormat2:
		return writeDelta2(ctx, w, src, h, needed)
	}
	return fmt.Errorf("delta format %d: %w", src.Format, snapshot.ErrUnsupportedVersion)
}

// packHeader completes the header of a pack from its script: totals and
// the new version's manifest fields.
func packHeader(src DeltaSource) (SyncHeader, []int, error) {
	s := src.Script
	needed := s.Needed()
	h := src.Header
	h.Total.Chunks, h.Total.Bytes = len(needed), 0
	for _, j := range needed {
		h.Total.Bytes += int64(s.B.Chunks[j].Size)
	}
	m := s.B
	h.Manifest.Parent, h.Manifest.Records, h.Manifest.StreamLen = m.Parent, m.Records, m.StreamLen
	h.Manifest.StreamHash, h.Manifest.Chunks = hex.EncodeToString(m.StreamHash[:]), len(m.Chunks)
	h.Manifest.ChunkerName, h.Manifest.ChunkerVersion = m.ChunkerName, m.ChunkerVersion
	h.Manifest.Min, h.Manifest.Avg, h.Manifest.Max = m.Chunker.Min, m.Chunker.Avg, m.Chunker.Max
	h.Manifest.CreatedUnix = m.CreatedUnix
	if h.Skip < 0 || h.Skip > len(needed) {
		return h, nil, fmt.Errorf("skip %d of %d chunks: %w", h.Skip, len(needed), snapshot.ErrInvalid)
	}
	return h, needed, nil
}

// writeDelta2 writes format 2: everything in one zstd stream, a changed
// chunk as its own frame against the old chunks around the one it replaces.
func writeDelta2(ctx context.Context, w io.Writer, src DeltaSource, h SyncHeader, needed []int) error {
	s := src.Script
	if _, err := io.WriteString(w, DeltaMagic+string(rune(DeltaFormat2))); err != nil {
		return err
	}
	enc := streamEncoders.Get().(*zstd.Encoder)
	defer streamEncoders.Put(enc)
	enc.Reset(w)
	bw := bufio.NewWriterSize(enc, 64<<10)
	hj, err := json.Marshal(h)
	if err != nil {
		return err
	}
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(hj)))
	b = append(b, hj...)
	b = appendManifestDelta(b, s)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	if err := writeChunks(ctx, bw, src, needed[h.Skip:]); err != nil {
		var rf *readFailure
		if errors.As(err, &rf) && ctx.Err() == nil {
			return writeAbort(bw, enc, src, rf)
		}
		enc.Close()
		return err
	}
	return finish(bw, enc)
}

func finish(bw *bufio.Writer, enc *zstd.Encoder) error {
	if err := bw.WriteByte(endMark); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return enc.Close()
}

// readFailure is a chunk of the new version that could not be read: the
// pack ends with an abort frame in its place.
type readFailure struct {
	index int
	err   error
}

func (e *readFailure) Error() string { return fmt.Sprintf("chunk %d: %v", e.index, e.err) }
func (e *readFailure) Unwrap() error { return e.err }

// writeAbort ends the pack with an abort frame for rf and the end mark.
func writeAbort(bw *bufio.Writer, enc *zstd.Encoder, src DeltaSource, rf *readFailure) error {
	ae := &AbortError{Status: 500, Code: CodeInternal, Message: "the server could not read your data"}
	if src.Abort != nil {
		if a := src.Abort(rf.err); a != nil {
			ae = a
		}
	}
	js, err := json.Marshal(ae)
	if err != nil || len(js) > maxAbort {
		js = []byte(`{"status":500,"code":"internal","message":"server error"}`)
	}
	b := binary.AppendUvarint(nil, uint64(rf.index))
	b = append(b, flagAbort)
	b = binary.AppendUvarint(b, uint64(len(js)))
	b = append(b, js...)
	if _, err := bw.Write(b); err != nil {
		enc.Close()
		return err
	}
	if err := finish(bw, enc); err != nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrDeltaAborted, rf)
}

func appendManifestDelta(b []byte, s *diff.Script) []byte {
	prevKey := ""
	oldPos := 0
	var ac []snapshot.ChunkRef
	if s.A != nil {
		ac = s.A.Chunks
	}
	copyRun := func(to int) {
		if to > oldPos {
			b = append(b, opCopy)
			b = binary.AppendUvarint(b, uint64(oldPos))
			b = binary.AppendUvarint(b, uint64(to-oldPos))
			prevKey = ac[to-1].FirstKey
		}
	}
	for _, r := range s.Regions {
		copyRun(r.OldFrom)
		if r.NewTo > r.NewFrom {
			b = append(b, opInsert)
			b = binary.AppendUvarint(b, uint64(r.NewTo-r.NewFrom))
			for j := r.NewFrom; j < r.NewTo; j++ {
				c := &s.B.Chunks[j]
				b = appendKnownEntry(b, c, prevKey)
				prevKey = c.FirstKey
			}
		}
		oldPos = r.OldTo
	}
	copyRun(len(ac))
	return append(b, opEnd)
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

// writeChunks sends the listed chunks of the new version in batches, each
// compressed against the old chunks around the one it replaces when that is
// clearly smaller. A chunk that cannot be read ends it with *readFailure.
func writeChunks(ctx context.Context, w *bufio.Writer, src DeltaSource, idx []int) error {
	const batch = 64
	var hdr, payload, dict []byte
	for len(idx) > 0 {
		n := min(batch, len(idx))
		part := idx[:n]
		idx = idx[n:]
		olds, err := readOlds(ctx, src, part)
		if err != nil {
			return err
		}
		sent := 0
		var werr error
		err = src.NewChunks.Chunks(ctx, part, func(j int, raw []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			hdr, payload, dict = encodeChunk(hdr[:0], dict, src.Script, olds, j, raw)
			if _, werr = w.Write(hdr); werr != nil {
				return werr
			}
			if _, werr = w.Write(payload); werr != nil {
				return werr
			}
			sent++
			return nil
		})
		if err != nil {
			if werr != nil || ctx.Err() != nil || sent == len(part) {
				return err
			}
			return &readFailure{index: part[sent], err: err}
		}
	}
	return nil
}

// readOlds reads the old chunks that the dictionaries of the new chunks
// part need. A failure is not fatal: the chunks whose dictionary is
// incomplete are sent whole.
func readOlds(ctx context.Context, src DeltaSource, part []int) (map[int][]byte, error) {
	olds := map[int][]byte{}
	if src.OldChunks == nil {
		return olds, nil
	}
	var want []int
	seen := map[int]bool{}
	for _, j := range part {
		lo, hi, ok := dictRange(src.Script, j)
		for i := lo; ok && i < hi; i++ {
			if !seen[i] {
				seen[i] = true
				want = append(want, i)
			}
		}
	}
	if len(want) == 0 {
		return olds, nil
	}
	err := src.OldChunks.Chunks(ctx, sortedInts(want), func(i int, raw []byte) error {
		olds[i] = append([]byte(nil), raw...)
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		if src.OldChunkError != nil {
			src.OldChunkError(err)
		}
	}
	return olds, nil
}

// encodeChunk returns the section entry of new chunk j: its header and
// payload, the raw chunk or, when clearly smaller, a zstd frame against the
// old chunks around the one it replaces (all of them in olds).
func encodeChunk(hdr, dict []byte, s *diff.Script, olds map[int][]byte, j int, raw []byte) ([]byte, []byte, []byte) {
	hdr = binary.AppendUvarint(hdr, uint64(j))
	if lo, hi, ok := dictRange(s, j); ok && haveAll(olds, lo, hi) {
		dict = dict[:0]
		for i := lo; i < hi; i++ {
			dict = append(dict, olds[i]...)
		}
		frame := dictCompress(raw, dict)
		// The raw chunk rides in the outer stream, which compresses it
		// too; a dictionary frame pays off only when clearly smaller.
		if len(frame) < len(raw)/4 {
			hdr = append(hdr, flagDict)
			hdr = binary.AppendUvarint(hdr, uint64(lo))
			hdr = binary.AppendUvarint(hdr, uint64(hi-lo))
			hdr = binary.AppendUvarint(hdr, uint64(len(frame)))
			return hdr, frame, dict
		}
	}
	hdr = append(hdr, 0)
	hdr = binary.AppendUvarint(hdr, uint64(len(raw)))
	return hdr, raw, dict
}

func haveAll(olds map[int][]byte, lo, hi int) bool {
	for i := lo; i < hi; i++ {
		if _, ok := olds[i]; !ok {
			return false
		}
	}
	return true
}

// dictRange returns the old chunks [lo,hi) whose concatenation is the
// dictionary of new chunk j: the chunk it replaces and its neighbours.
func dictRange(s *diff.Script, j int) (lo, hi int, ok bool) {
	b, ok := s.Base[j]
	if !ok || b < 0 || s.A == nil {
		return 0, 0, false
	}
	lo = max(b-(dictSpan-1)/2, 0)
	hi = min(lo+dictSpan, len(s.A.Chunks))
	return lo, hi, hi > lo
}

func sortedInts(a []int) []int {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
	return a
}

func dictCompress(raw, dict []byte) []byte {
	enc := dictEncoders.Get().(*zstd.Encoder)
	defer dictEncoders.Put(enc)
	if err := enc.ResetWithOptions(nil, zstd.WithEncoderDictRaw(dictID, dict)); err != nil {
		return raw // cannot happen for chunk-sized dictionaries; send plain
	}
	return enc.EncodeAll(raw, nil)
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
	payload []byte // reused chunk buffer (format 2)
	v3      *state3
	keys    int // bytes of first keys the reader allocated (MaxDeltaKeyBytes)
}

// newKey returns a first key made of prefix and suffix, within the budget
// of MaxDeltaKeyBytes.
func (d *DeltaReader) newKey(prefix string, suffix []byte) (string, error) {
	if err := d.countKey(len(prefix) + len(suffix)); err != nil {
		return "", err
	}
	return prefix + string(suffix), nil
}

// countKey counts a new first key of n bytes against MaxDeltaKeyBytes.
func (d *DeltaReader) countKey(n int) error {
	if n > snapshot.MaxKeyLen {
		return d.bad("first key of %d bytes", n)
	}
	if d.keys+n > MaxDeltaKeyBytes {
		return d.bad("first keys of more than %d bytes in all", MaxDeltaKeyBytes)
	}
	d.keys += n
	return nil
}

// MaxDeltaMemory bounds the zstd window and frames the client accepts.
const MaxDeltaMemory = 64 << 20

// maxStreamWindow2 bounds the window of a format-2 pack's zstd stream,
// which a streaming decoder allocates up front from the frame header:
// servers have written it with streamWindow (1 MiB) since, and zstd's
// default 8 MiB before; a pack claiming more (a 2 KB one could make a phone
// allocate 64 MiB) is refused.
const maxStreamWindow2 = 8 << 20

// The chunk list a pack makes the client build is bounded too, however
// compressible its manifest delta: at most MaxDeltaChunks chunks (4 GiB of
// data at the default 8 KiB average chunk, a list of about 50 MiB) with
// first keys of at most MaxDeltaKeyBytes in all.
const (
	MaxDeltaChunks   = 1 << 19
	MaxDeltaKeyBytes = 64 << 20
)

// readMagic reads a pack's magic and format byte (magic[4]).
func readMagic(r io.Reader) ([5]byte, error) {
	var magic [5]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return magic, fmt.Errorf("read delta magic: %v: %w", err, ErrBadDelta)
	}
	if string(magic[:4]) != DeltaMagic {
		return magic, fmt.Errorf("bad magic: %w", ErrBadDelta)
	}
	return magic, nil
}

// NewDeltaReader reads the header and the manifest delta. old is the chunk
// list of the version the client holds (ignored for a full sync).
func NewDeltaReader(r io.Reader, old []snapshot.ChunkRef) (*DeltaReader, error) {
	magic, err := readMagic(r)
	if err != nil {
		return nil, err
	}
	if magic[4] == DeltaFormat {
		return newReader3(r, old)
	}
	if magic[4] != DeltaFormat2 {
		return nil, fmt.Errorf("delta format %d: %w", magic[4], snapshot.ErrUnsupportedVersion)
	}
	dec, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(MaxDeltaMemory), zstd.WithDecoderMaxWindow(maxStreamWindow2), zstd.WithDecoderConcurrency(1))
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
	return d.parseHeader(b)
}

// parseHeader decodes the header JSON and checks its counts.
func (d *DeltaReader) parseHeader(b []byte) error {
	if err := json.Unmarshal(b, &d.header); err != nil {
		return d.bad("header: %v", err)
	}
	h := &d.header
	if h.Skip < 0 || h.Total.Chunks < 0 || h.Skip > h.Total.Chunks || h.Manifest.Chunks < 0 || h.Total.Chunks > h.Manifest.Chunks {
		return d.bad("header counts")
	}
	if h.Manifest.Chunks > MaxDeltaChunks {
		return d.bad("a version of %d chunks: at most %d", h.Manifest.Chunks, MaxDeltaChunks)
	}
	if d.v3 != nil && d.v3.base != nil && h.From != 0 {
		// Edit mode: the list is the entries the pack gives, not the
		// version's (a one-record delta's few, not 8,000 on 64 MB).
		d.chunks = make([]snapshot.ChunkRef, 0, min(h.Total.Chunks+8, 1<<16))
		return nil
	}
	d.chunks = make([]snapshot.ChunkRef, 0, min(h.Manifest.Chunks, 1<<16))
	return nil
}

// readManifest rebuilds the new chunk list from a format-2 manifest delta:
// runs copied from the old list and entries inserted, to the end mark.
func (d *DeltaReader) readManifest(old []snapshot.ChunkRef) error {
	want := d.header.Manifest.Chunks
	prev := "" // the first key of the entry before (inserted entries are front-coded)
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
			prev, err = d.copyOld(old, prev)
		case opInsert:
			prev, err = d.insertEntries(prev)
		default:
			return d.bad("manifest op %d", op)
		}
		if err != nil {
			return err
		}
	}
}

// copyOld reads a copy op (first old chunk, count) and appends that run of
// the old list; it returns the first key of the last entry.
func (d *DeltaReader) copyOld(old []snapshot.ChunkRef, prev string) (string, error) {
	from, err := d.num()
	if err != nil {
		return "", err
	}
	n, err := d.num()
	if err != nil {
		return "", err
	}
	if from > uint64(len(old)) || n > uint64(len(old))-from || uint64(len(d.chunks))+n > uint64(d.header.Manifest.Chunks) {
		return "", d.bad("copy %d+%d of %d old chunks", from, n, len(old))
	}
	d.chunks = append(d.chunks, old[from:from+n]...)
	if n > 0 {
		prev = old[from+n-1].FirstKey
	}
	return prev, nil
}

// insertEntries reads an insert op (a count, then the entries) and
// appends its entries; it returns the first key of the last entry.
func (d *DeltaReader) insertEntries(prev string) (string, error) {
	n, err := d.num()
	if err != nil {
		return "", err
	}
	if uint64(len(d.chunks))+n > uint64(d.header.Manifest.Chunks) {
		return "", d.bad("insert of %d chunks", n)
	}
	for range n {
		c, err := d.readEntry(prev)
		if err != nil {
			return "", err
		}
		prev = c.FirstKey
		d.chunks = append(d.chunks, c)
	}
	return prev, nil
}

// readEntry reads one entry (appendKnownEntry's encoding) whose first key
// is front-coded against prev.
func (d *DeltaReader) readEntry(prev string) (snapshot.ChunkRef, error) {
	var c snapshot.ChunkRef
	if _, err := io.ReadFull(d.r, c.ID[:]); err != nil {
		return c, d.bad("truncated chunk entry")
	}
	size, err := d.num()
	if err != nil {
		return c, err
	}
	recs, err := d.num()
	if err != nil {
		return c, err
	}
	flags, err := d.r.ReadByte()
	if err != nil {
		return c, d.bad("truncated chunk entry")
	}
	shared, err := d.num()
	if err != nil {
		return c, err
	}
	sl, err := d.num()
	if err != nil {
		return c, err
	}
	if size == 0 || size > maxChunk || recs > size || flags > 1 || shared > uint64(len(prev)) || sl > snapshot.MaxKeyLen {
		return c, d.bad("chunk entry")
	}
	suffix := make([]byte, sl)
	if _, err := io.ReadFull(d.r, suffix); err != nil {
		return c, d.bad("truncated chunk entry")
	}
	if c.FirstKey, err = d.newKey(prev[:shared], suffix); err != nil {
		return c, err
	}
	c.Size, c.Records, c.Continued, c.StoredLen = uint32(size), uint32(recs), flags == 1, uint32(size)
	return c, nil
}

// Header returns the pack's header.
func (d *DeltaReader) Header() SyncHeader { return d.header }

// Chunks returns the new version's chunk list (the same slice on every
// call). Entries copied from the old list keep their fields; other entries
// carry ID, size, records, continuation and first key (Sum is filled in by
// the client as chunks are verified). In format 3 the entries of the chunks
// the pack carries hold only their size and continuation until Next returns
// them; Next fills in the rest, derived from the bytes.
func (d *DeltaReader) Chunks() []snapshot.ChunkRef { return d.chunks }

// Next returns the next chunk: its index in the new list and its raw bytes
// (valid until the next call: a full sync passes the whole data set through
// Next, and a buffer per chunk would be that much garbage), checked against
// the entry's size and keyed ID (format 2), or given the ID of its bytes,
// its size checked (format 3, where the totals, and the client's stream
// hash, pin the result). base returns the raw bytes of an old chunk (the
// client's copy) for dictionary-compressed chunks. It returns io.EOF after
// the last chunk, once the end mark and totals are checked, and an
// *AbortError (on this and every later call) if the server ended the pack
// early with an abort frame.
func (d *DeltaReader) Next(base func(oldIndex int) ([]byte, error)) (int, []byte, error) {
	switch {
	case d.v3 != nil:
		return d.next3(base)
	case d.aborted != nil:
		return 0, nil, d.aborted
	case d.done:
		return 0, nil, io.EOF
	case d.left == 0:
		if err := d.end2(); err != nil {
			return 0, nil, err
		}
		d.done = true
		return 0, nil, io.EOF
	}
	j, run, err := d.chunkHead()
	if err != nil {
		return 0, nil, err
	}
	raw, err := d.chunkBody(j, run, base)
	if err != nil {
		return 0, nil, err
	}
	d.left--
	d.lastJ = j
	return j, raw, nil
}

// end2 checks a format-2 pack's end mark and that nothing follows it.
func (d *DeltaReader) end2() error {
	b, err := d.r.ReadByte()
	if err != nil || b != endMark {
		return d.bad("missing end mark")
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return d.bad("trailing data")
	}
	return nil
}

// dictRun is the old chunks a chunk is compressed against (count 0: none).
type dictRun struct{ first, count int }

// chunkHead reads a format-2 chunk's index, flags and dictionary run, or
// an abort frame (as *AbortError).
func (d *DeltaReader) chunkHead() (int, dictRun, error) {
	j, err := d.num()
	if err != nil {
		return 0, dictRun{}, err
	}
	if j >= uint64(len(d.chunks)) || int(j) <= d.lastJ {
		return 0, dictRun{}, d.bad("chunk index %d", j)
	}
	flags, err := d.r.ReadByte()
	if err != nil {
		return 0, dictRun{}, d.bad("truncated chunk")
	}
	switch {
	case flags == flagAbort:
		return 0, dictRun{}, d.readAbort()
	case flags == 0:
		return int(j), dictRun{}, nil
	case flags&flagDict == 0:
		return 0, dictRun{}, d.bad("chunk flags %d", flags)
	}
	bi, err := d.num()
	if err != nil {
		return 0, dictRun{}, err
	}
	bn, err := d.num()
	if err != nil {
		return 0, dictRun{}, err
	}
	if bn == 0 || bn > dictSpan || bi > uint64(d.oldLen) || bn > uint64(d.oldLen)-bi {
		return 0, dictRun{}, d.bad("dictionary chunks %d+%d of %d", bi, bn, d.oldLen)
	}
	return int(j), dictRun{int(bi), int(bn)}, nil
}

// chunkBody reads chunk j's payload, decodes it against the old chunks of
// run (base returns them) and checks it against its entry.
func (d *DeltaReader) chunkBody(j int, run dictRun, base func(oldIndex int) ([]byte, error)) ([]byte, error) {
	n, err := d.num()
	if err != nil {
		return nil, err
	}
	c := &d.chunks[j]
	if n > maxChunk || (run.count == 0 && n != uint64(c.Size)) {
		return nil, d.bad("chunk %d length %d", j, n)
	}
	if uint64(cap(d.payload)) < n {
		d.payload = make([]byte, n)
	}
	payload := d.payload[:n]
	if _, err := io.ReadFull(d.r, payload); err != nil {
		return nil, d.bad("truncated chunk %d", j)
	}
	raw := payload
	if run.count > 0 {
		d.dict = d.dict[:0]
		for i := run.first; i < run.first+run.count; i++ {
			b, err := base(i)
			if err != nil {
				return nil, fmt.Errorf("dictionary chunk %d for chunk %d: %w", i, j, err)
			}
			d.dict = append(d.dict, b...)
		}
		if raw, err = d.dictDecode(payload, d.dict, int(c.Size)); err != nil {
			return nil, d.bad("chunk %d: %v", j, err)
		}
	}
	if len(raw) != int(c.Size) || d.hasher.Sum(raw) != c.ID {
		return nil, fmt.Errorf("chunk %d (%s): content does not match its ID: %w", j, c.ID, snapshot.ErrCorrupt)
	}
	return raw, nil
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
	if d.dec != nil {
		d.dec.Close()
	}
	if d.dictD != nil {
		d.dictD.Close()
	}
}
