package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// Format 3 sends only what the client cannot derive, and compresses the
// chunks it lacks in groups, each group one zstd frame:
//
//	"DSDP" 0x03
//	uvarint len, zstd frame: header JSON (SyncHeader), raw dictionary
//	    headerDict
//	uvarint len, zstd frame: manifest delta (raw dictionary headerDict too),
//	    ops until opEnd:
//	    copy:  0, uvarint gap, uvarint n: the next n chunks are the old
//	           chunks from (old position + gap) on
//	    new:   1, uvarint n, n x uvarint (size<<2 | explicit<<1 | continued)
//	           [if explicit: uvarint len, first key]: chunks this pack
//	           carries, in this order
//	    known: 2, uvarint n, n x (ID, uvarint size, uvarint records, flags,
//	           front-coded first key): chunks the client holds elsewhere
//	           (moved or repeated, or received before a resume)
//	    end:   3
//	sections, until the pack's chunks are all sent:
//	    group: 0x01, uvarint chunks, uvarint runs, runs x (uvarint gap,
//	           uvarint count) of old chunks, uvarint len, zstd frame of the
//	           group's chunks concatenated, whose raw dictionary is those old
//	           chunks concatenated (none if no runs)
//	    abort: 0x80, uvarint len, JSON AbortError
//	end byte 0xff
//
// A new chunk's keyed ID, SHA-256, record count and first key follow from
// its bytes (and, for a piece of an oversize record, from the chunk before
// it), so the manifest delta carries its size and one bit; the stream hash
// of the header, which the client checks before it installs the version,
// pins all of it. The totals of the header (chunks, stream length, records)
// are checked by the reader.
//
// A group holds consecutive chunks of the pack: a 24th of a full sync
// (between 1 MiB and 8 MiB, so a resumed download repeats little; at
// klauspost/compress's highest level from 8 MiB of pack on), about 1 MiB
// for a delta, compressed against the old chunks whose keys overlap the
// group's, so a repeated edit (a renamed field in many records) is paid for
// about once per group, not once per chunk. The first two groups are a
// quarter and a half of that. A group is sent once it is read and
// compressed; an interrupted download resumes after the last whole group.
const (
	sectionGroup = 0x01
	sectionAbort = 0x80
	sectionEnd   = 0xff

	op3Copy  = 0
	op3New   = 1
	op3Known = 2
	op3End   = 3

	// Group and dictionary sizes: targets the writer aims at, and limits
	// the reader enforces (a single chunk may reach maxChunk).
	plainGroupTarget = 8 << 20
	deltaGroupTarget = 1 << 20
	dictTarget       = 4 << 20
	maxGroupBytes    = maxChunk
	maxDictBytes     = 16 << 20
	// maxRunChunks bounds the old chunks one new chunk adds to a dictionary.
	maxRunChunks = 16
	groupWindow  = 8 << 20
	headerWindow = 1 << 20
	bestFrom     = plainGroupTarget
	maxManifest3 = 48 << 20
	maxHeader3   = 64 << 10
)

// headerDict is the raw dictionary of a format-3 header frame: a typical
// header, so that the field names cost nothing and a small edit's pack stays
// small. It is part of the format: changing it needs a new format number.
const headerDict = `{"org":"","user":"","from":0,"to":0,"skip":0,"total":{"chunks":0,"bytes":0},` +
	`"manifest":{"parent":0,"records":0,"stream_len":0,"stream_hash":"","chunks":0,"chunker":"fastcdc-record",` +
	`"chunker_version":1,"min":2048,"avg":8192,"max":65536,"created_unix":1700000000},"id_seeds":[0,0],` +
	`"policy":{"offline_mode":true,"conflict_policy":"client-wins","max_offline_seconds":0,"max_pending_bytes":0,` +
	`"max_patch_ops":0,"max_patch_bytes":8388608}}`

// Format 3's encoders, pooled. klauspost/compress recreates an encoder's
// tables when a reset adds or removes its dictionary, so each pool's
// encoders always have one or never have one:
//   - headerEncoders (zstd -3's level, small window, dictionary headerDict)
//     compress the header and the manifest delta;
//   - deltaEncoders (a higher level) the groups of a delta, against old chunks;
//   - plainEncoders (the same level) the groups of a delta whose old chunks
//     could not be read;
//   - fullEncoders (the highest level) the groups of a full sync of at least
//     bestFrom bytes: the biggest download a device makes, made once, where
//     the highest level saves megabytes (about 6% of the pack; on a small
//     full sync it would save little and cost the same CPU per byte). Such
//     an encoder costs about 40 MiB and compresses at about a fifth of
//     zstd -3's speed, so at most GOMAXPROCS full syncs compress at a time
//     (fullSlots); more wait. A smaller full sync uses plainEncoders.
var (
	headerEncoders = encoderPool(zstd.SpeedDefault, headerWindow)
	deltaEncoders  = encoderPool(zstd.SpeedBetterCompression, groupWindow)
	plainEncoders  = encoderPool(zstd.SpeedBetterCompression, groupWindow)
	fullEncoders   = encoderPool(zstd.SpeedBestCompression, groupWindow)
	fullSlots      = make(chan struct{}, runtime.GOMAXPROCS(0))
)

// fullEncoder takes a slot and an encoder for a full sync; release gives
// both back.
func fullEncoder(ctx context.Context) (enc *zstd.Encoder, release func(), err error) {
	select {
	case fullSlots <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	enc = fullEncoders.Get().(*zstd.Encoder)
	return enc, func() {
		fullEncoders.Put(enc)
		<-fullSlots
	}, nil
}

// encoderPool's encoders Huffman-code blocks without matches at every level
// (the higher ones do by default; this pins it): see streamEncoders.
func encoderPool(level zstd.EncoderLevel, window int) *sync.Pool {
	return &sync.Pool{New: func() any {
		e, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(true), zstd.WithWindowSize(window), zstd.WithLowerEncoderMem(true),
			zstd.WithAllLitEntropyCompression(true))
		return e
	}}
}

// group is a run of the pack's chunks sent as one frame.
type group struct {
	idx  []int // chunks of the new version, in pack order
	olds []int // old chunks of the dictionary, ascending
	raw  int
	dict int
}

func writeDelta3(ctx context.Context, w io.Writer, src DeltaSource, h SyncHeader, needed []int) error {
	b, err := appendHead3(src, h, needed)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	gw := groupWriter{w: bw, src: src}
	defer gw.release()
	if src.Script.A == nil && rawBytes(src.Script.B, needed[h.Skip:]) >= bestFrom {
		full, release, err := fullEncoder(ctx)
		if err != nil {
			return err
		}
		defer release()
		gw.plain = full
	}
	for _, g := range planGroups(src.Script, needed[h.Skip:]) {
		if err := gw.write(ctx, g); err != nil {
			var rf *readFailure
			if errors.As(err, &rf) && ctx.Err() == nil {
				return writeAbort3(bw, src, rf)
			}
			return err
		}
	}
	if err := bw.WriteByte(sectionEnd); err != nil {
		return err
	}
	return bw.Flush()
}

func rawBytes(m *snapshot.Manifest, idx []int) int64 {
	var n int64
	for _, j := range idx {
		n += int64(m.Chunks[j].Size)
	}
	return n
}

// appendHead3 returns the magic, the header frame and the manifest frame.
func appendHead3(src DeltaSource, h SyncHeader, needed []int) ([]byte, error) {
	enc := headerEncoders.Get().(*zstd.Encoder)
	defer headerEncoders.Put(enc)
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b := append([]byte(DeltaMagic), DeltaFormat)
	if b, err = appendFrame(b, enc, hj, []byte(headerDict)); err != nil {
		return nil, err
	}
	return appendFrame(b, enc, appendManifest3(nil, src.Script, needed, h.Skip), []byte(headerDict))
}

// appendFrame appends uvarint len and a zstd frame of content, compressed
// against dict. enc must be an encoder that always has a dictionary when
// dict is not nil, and never has one when it is.
func appendFrame(b []byte, enc *zstd.Encoder, content, dict []byte) ([]byte, error) {
	if dict != nil {
		if err := enc.ResetWithOptions(nil, zstd.WithEncoderDictRaw(dictID, dict)); err != nil {
			return b, err
		}
	}
	frame := enc.EncodeAll(content, nil)
	b = binary.AppendUvarint(b, uint64(len(frame)))
	return append(b, frame...), nil
}

// writeAbort3 ends the pack with an abort section and the end mark.
func writeAbort3(bw *bufio.Writer, src DeltaSource, rf *readFailure) error {
	b := append([]byte{sectionAbort}, abortJSON(src, rf)...)
	b = append(b, sectionEnd)
	if _, err := bw.Write(b); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrDeltaAborted, rf)
}

// abortJSON returns uvarint len and the JSON of the abort for rf.
func abortJSON(src DeltaSource, rf *readFailure) []byte {
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
	return append(binary.AppendUvarint(nil, uint64(len(js))), js...)
}

// appendManifest3 appends the manifest delta: copies of old runs, the
// chunks of needed[skip:] as new entries, every other chunk as a known one.
func appendManifest3(b []byte, s *diff.Script, needed []int, skip int) []byte {
	sent := make(map[int]bool, len(needed)-skip)
	for _, j := range needed[skip:] {
		sent[j] = true
	}
	bc := s.B.Chunks
	var pendNew, pendKnown []int
	prevKey := ""
	flush := func() {
		if len(pendNew) > 0 {
			b = append(b, op3New)
			b = binary.AppendUvarint(b, uint64(len(pendNew)))
			for _, j := range pendNew {
				b = appendNewEntry(b, bc, j)
			}
			pendNew = pendNew[:0]
		}
		if len(pendKnown) > 0 {
			b = append(b, op3Known)
			b = binary.AppendUvarint(b, uint64(len(pendKnown)))
			for _, j := range pendKnown {
				b = appendKnownEntry(b, &bc[j], prevKey)
				prevKey = bc[j].FirstKey
			}
			pendKnown = pendKnown[:0]
		}
	}
	oldPos := 0
	copyRun := func(from, to int) {
		if to > from {
			b = append(b, op3Copy)
			b = binary.AppendUvarint(b, uint64(from-oldPos))
			b = binary.AppendUvarint(b, uint64(to-from))
			oldPos = to
		}
	}
	lastOld := 0
	for _, r := range s.Regions {
		copyRun(lastOld, r.OldFrom)
		for j := r.NewFrom; j < r.NewTo; j++ {
			if sent[j] {
				if len(pendKnown) > 0 {
					flush()
				}
				pendNew = append(pendNew, j)
			} else {
				if len(pendNew) > 0 {
					flush()
				}
				pendKnown = append(pendKnown, j)
			}
		}
		flush()
		lastOld = r.OldTo
	}
	if s.A != nil {
		copyRun(lastOld, len(s.A.Chunks))
	}
	return append(b, op3End)
}

// appendNewEntry appends what the client cannot derive of chunk j: its
// size, whether it continues a record, and its first key only when the
// bytes cannot give it (a piece too short to hold its record's key, or a
// continuation whose predecessor names another record).
func appendNewEntry(b []byte, bc []snapshot.ChunkRef, j int) []byte {
	c := &bc[j]
	v := uint64(c.Size) << 2
	explicit := false
	if c.Continued {
		v |= 1
		explicit = j == 0 || bc[j-1].FirstKey != c.FirstKey
	} else {
		explicit = int(c.Size) < uvarintLen(len(c.FirstKey))+len(c.FirstKey)+binary.MaxVarintLen64
	}
	if explicit {
		v |= 2
	}
	b = binary.AppendUvarint(b, v)
	if explicit {
		b = binary.AppendUvarint(b, uint64(len(c.FirstKey)))
		b = append(b, c.FirstKey...)
	}
	return b
}

func appendKnownEntry(b []byte, c *snapshot.ChunkRef, prevKey string) []byte {
	b = append(b, c.ID[:]...)
	b = binary.AppendUvarint(b, uint64(c.Size))
	b = binary.AppendUvarint(b, uint64(c.Records))
	var flags byte
	if c.Continued {
		flags = 1
	}
	b = append(b, flags)
	shared := commonPrefix(prevKey, c.FirstKey)
	b = binary.AppendUvarint(b, uint64(shared))
	b = binary.AppendUvarint(b, uint64(len(c.FirstKey)-shared))
	return append(b, c.FirstKey[shared:]...)
}

func uvarintLen(x int) int { return len(binary.AppendUvarint(nil, uint64(x))) }

// planGroups splits the chunks to send into groups and chooses each
// group's dictionary: the old chunks whose key ranges overlap those of its
// chunks (and the one diff paired with each), so a changed record is
// compressed against its previous value and an inserted one against its
// neighbours.
func planGroups(s *diff.Script, idx []int) []group {
	delta := s.A != nil && len(s.A.Chunks) > 0
	target := deltaGroupTarget
	if !delta {
		target = fullGroupTarget(rawBytes(s.B, idx))
	}
	var out []group
	var g group
	inDict := map[int]bool{}
	closeGroup := func() {
		if len(g.idx) > 0 {
			slices.Sort(g.olds)
			out = append(out, g)
		}
		g = group{}
		clear(inDict)
	}
	for _, j := range idx {
		size := int(s.B.Chunks[j].Size)
		var add []int
		addBytes := 0
		if delta {
			lo, hi := dictRange3(s, j)
			for i := lo; i < hi; i++ {
				if !inDict[i] {
					add = append(add, i)
					addBytes += int(s.A.Chunks[i].Size)
				}
			}
		}
		if len(g.idx) > 0 && (g.raw+size > maxGroupBytes || g.dict+addBytes > dictTarget) {
			closeGroup()
			add, addBytes = add[:0], 0
			if delta {
				lo, hi := dictRange3(s, j)
				for i := lo; i < hi; i++ {
					add = append(add, i)
				}
			}
		}
		g.idx = append(g.idx, j)
		g.raw += size
		for _, i := range add {
			if sz := int(s.A.Chunks[i].Size); g.dict+sz <= maxDictBytes && !inDict[i] {
				inDict[i] = true
				g.olds = append(g.olds, i)
				g.dict += sz
			}
		}
		// The first groups are a quarter and a half of the target, so the
		// first chunks (and progress) arrive soon and a download cut early
		// loses little; a group's context matters more without dictionary,
		// so a full sync's start big enough to hold a small data set whole.
		if g.raw >= min(target, target/4<<len(out)) {
			closeGroup()
		}
	}
	closeGroup()
	return out
}

// fullGroupTarget is the group size of a full sync of total raw bytes: at
// most a 24th of it (an interrupted download resumes after the last whole
// group, so a cut costs at most about 4% of the pack again), between 1 MiB
// and plainGroupTarget (the first two groups are a quarter and a half of
// it). Record data has few matches farther back
// than 1 MiB, so smaller groups cost little.
func fullGroupTarget(total int64) int {
	return int(min(plainGroupTarget, max(1<<20, total/24)))
}

// dictRange3 returns the old chunks [lo,hi) whose key ranges overlap that
// of new chunk j, widened to the chunk diff paired it with, at most
// maxRunChunks of them.
func dictRange3(s *diff.Script, j int) (lo, hi int) {
	ac, bc := s.A.Chunks, s.B.Chunks
	k0 := bc[j].FirstKey
	lo = max(sort.Search(len(ac), func(i int) bool { return ac[i].FirstKey > k0 })-1, 0)
	hi = len(ac)
	if j+1 < len(bc) {
		k1 := bc[j+1].FirstKey
		hi = sort.Search(len(ac), func(i int) bool { return ac[i].FirstKey >= k1 })
	}
	if b, ok := s.Base[j]; ok && b >= 0 && b < len(ac) {
		lo, hi = min(lo, b), max(hi, b+1)
	}
	hi = min(max(hi, lo+1), len(ac), lo+maxRunChunks)
	return lo, hi
}

// groupWriter reads, compresses and writes the groups of one pack.
type groupWriter struct {
	w       *bufio.Writer
	dictEnc *zstd.Encoder // from deltaEncoders, once needed
	plain   *zstd.Encoder // from plainEncoders once needed, or a full sync's
	pooled  bool          // plain is from plainEncoders
	src     DeltaSource
	content []byte
	dict    []byte
	hdr     []byte
}

// write sends group g. A chunk of the new version that cannot be read ends
// the group early (the chunks before it are sent) with *readFailure.
func (gw *groupWriter) write(ctx context.Context, g group) error {
	olds := gw.readDict(ctx, g)
	n, rerr := gw.readChunks(ctx, g)
	if rerr != nil {
		var rf *readFailure
		if !errors.As(rerr, &rf) || n == 0 {
			return rerr
		}
	}
	hdr := append(gw.hdr[:0], sectionGroup)
	hdr = binary.AppendUvarint(hdr, uint64(n))
	hdr = appendRuns(hdr, olds)
	var err error
	if hdr, err = appendFrame(hdr, gw.encoder(len(olds) > 0), gw.content, dictOrNil(gw.dict, olds)); err != nil {
		return err
	}
	gw.hdr = hdr
	if _, err := gw.w.Write(hdr); err != nil {
		return err
	}
	return rerr
}

// encoder returns the encoder for a group with or without a dictionary.
func (gw *groupWriter) encoder(dict bool) *zstd.Encoder {
	if dict {
		if gw.dictEnc == nil {
			gw.dictEnc = deltaEncoders.Get().(*zstd.Encoder)
		}
		return gw.dictEnc
	}
	if gw.plain == nil {
		gw.plain, gw.pooled = plainEncoders.Get().(*zstd.Encoder), true
	}
	return gw.plain
}

// release gives the encoders taken from pools back.
func (gw *groupWriter) release() {
	if gw.dictEnc != nil {
		deltaEncoders.Put(gw.dictEnc)
	}
	if gw.pooled {
		plainEncoders.Put(gw.plain)
	}
}

func dictOrNil(dict []byte, olds []int) []byte {
	if len(olds) == 0 {
		return nil
	}
	return dict
}

// readDict reads g's dictionary into gw.dict and returns its old chunks;
// none if they cannot be read (the group goes without, told to
// OldChunkError).
func (gw *groupWriter) readDict(ctx context.Context, g group) []int {
	gw.dict = gw.dict[:0]
	if len(g.olds) == 0 || gw.src.OldChunks == nil {
		return nil
	}
	err := gw.src.OldChunks.Chunks(ctx, g.olds, func(_ int, raw []byte) error {
		gw.dict = append(gw.dict, raw...)
		return nil
	})
	if err != nil {
		gw.dict = gw.dict[:0]
		if ctx.Err() == nil && gw.src.OldChunkError != nil {
			gw.src.OldChunkError(err)
		}
		return nil
	}
	return g.olds
}

// readChunks reads g's chunks into gw.content and returns how many it read.
func (gw *groupWriter) readChunks(ctx context.Context, g group) (int, error) {
	gw.content = gw.content[:0]
	n := 0
	err := gw.src.NewChunks.Chunks(ctx, g.idx, func(j int, raw []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if n >= len(g.idx) || j != g.idx[n] {
			return fmt.Errorf("chunk %d read out of order: %w", j, snapshot.ErrInvalid)
		}
		gw.content = append(gw.content, raw...)
		n++
		return nil
	})
	if err != nil {
		if ctx.Err() != nil || n == len(g.idx) {
			return n, err
		}
		return n, &readFailure{index: g.idx[n], err: err}
	}
	return n, nil
}

// appendRuns appends the ascending old chunk indexes as runs.
func appendRuns(b []byte, olds []int) []byte {
	var runs [][2]int
	for _, i := range olds {
		if k := len(runs) - 1; k >= 0 && runs[k][0]+runs[k][1] == i {
			runs[k][1]++
		} else {
			runs = append(runs, [2]int{i, 1})
		}
	}
	b = binary.AppendUvarint(b, uint64(len(runs)))
	end := 0
	for _, r := range runs {
		b = binary.AppendUvarint(b, uint64(r[0]-end))
		b = binary.AppendUvarint(b, uint64(r[1]))
		end = r[0] + r[1]
	}
	return b
}
