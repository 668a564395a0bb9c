package snapshot

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// NDJSONOptions configure ReadNDJSON.
type NDJSONOptions struct {
	// RunBytes bounds the records held in memory; beyond it, sorted runs
	// spill to temporary files and are merged. Default 64 MiB.
	RunBytes int
	// TempDir for spilled runs; os.TempDir() if empty.
	TempDir string
}

// maxLine bounds one NDJSON line: a maximal value plus escaping overhead.
const maxLine = 4*MaxValueLen + MaxKeyLen + 1024

// ndjsonLine is one line of the interchange format.
type ndjsonLine struct {
	Key   *string         `json:"key"`
	Value json.RawMessage `json:"value"`
}

// ParseNDJSONLine parses and validates one line {"key":…,"value":…},
// returning the key and the canonical value (which may alias line).
func ParseNDJSONLine(line []byte) (string, []byte, error) {
	if key, value, ok := parseLineFast(line); ok {
		if err := ValidateKey(key); err != nil {
			return "", nil, err
		}
		if len(value) > MaxValueLen {
			return "", nil, fmt.Errorf("record %q: value of %d bytes exceeds %d: %w", key, len(value), MaxValueLen, ErrInvalid)
		}
		return key, value, nil
	}
	// The decoder would turn a key that is not Unicode into one with
	// U+FFFD (two keys into one): the raw bytes are checked first.
	if err := ValidateJSONText(line); err != nil {
		return "", nil, fmt.Errorf("bad record: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var l ndjsonLine
	if err := dec.Decode(&l); err != nil {
		return "", nil, fmt.Errorf("bad record: %v: %w", err, ErrInvalid)
	}
	if dec.More() {
		return "", nil, fmt.Errorf("bad record: trailing data: %w", ErrInvalid)
	}
	if l.Key == nil {
		return "", nil, fmt.Errorf("bad record: missing \"key\": %w", ErrInvalid)
	}
	if l.Value == nil {
		return "", nil, fmt.Errorf("record %q: missing \"value\": %w", *l.Key, ErrInvalid)
	}
	if err := ValidateKey(*l.Key); err != nil {
		return "", nil, err
	}
	v, err := CanonicalJSON(l.Value)
	if err != nil {
		return "", nil, fmt.Errorf("record %q: %w", *l.Key, err)
	}
	if len(v) > MaxValueLen {
		return "", nil, fmt.Errorf("record %q: value of %d bytes exceeds %d: %w", *l.Key, len(v), MaxValueLen, ErrInvalid)
	}
	return *l.Key, v, nil
}

// AppendNDJSONLine appends {"key":…,"value":…}\n for a canonical value.
func AppendNDJSONLine(dst []byte, key string, value []byte) []byte {
	k, _ := json.Marshal(key) // a string always marshals
	dst = append(dst, `{"key":`...)
	dst = append(dst, k...)
	dst = append(dst, `,"value":`...)
	dst = append(dst, value...)
	return append(dst, "}\n"...)
}

// SortedRecords is a RecordSource over a validated, sorted NDJSON input.
// Close removes its temporary files.
type SortedRecords struct {
	runs    []*runReader
	h       runHeap
	single  *memRun
	records int64
	files   []string
	started bool
}

// Records is the number of records.
func (s *SortedRecords) Records() int64 { return s.records }

// ReadNDJSON reads an NDJSON data set in any key order, validates every line
// and sorts it with bounded memory. Any bad line, over-long key, oversize
// value or duplicate key fails the whole input with a *LineError naming the
// line; nothing is returned to build from, so nothing gets written.
func ReadNDJSON(r io.Reader, opts NDJSONOptions) (_ *SortedRecords, err error) {
	if opts.RunBytes <= 0 {
		opts.RunBytes = 64 << 20
	}
	out := &SortedRecords{}
	defer func() {
		if err != nil {
			out.Close()
		}
	}()
	br := bufio.NewReaderSize(r, 1<<20)
	run := &memRun{}
	var lineNo int64
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long[:0], line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
				if len(long) > maxLine {
					return nil, &LineError{Line: lineNo + 1, Err: fmt.Errorf("line longer than %d bytes: %w", maxLine, ErrInvalid)}
				}
			}
			line = long
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read input: %w", err)
		}
		if len(line) > 0 {
			lineNo++
			if t := bytes.TrimSpace(line); len(t) > 0 {
				key, value, perr := ParseNDJSONLine(t)
				if perr != nil {
					return nil, &LineError{Line: lineNo, Err: perr}
				}
				run.add(lineNo, key, value)
				out.records++
				if run.size() >= opts.RunBytes {
					if err := out.spill(run, opts.TempDir); err != nil {
						return nil, err
					}
					run = &memRun{}
				}
			}
		}
		if err == io.EOF {
			break
		}
	}
	if len(out.files) == 0 {
		if err := run.sort(); err != nil {
			return nil, err
		}
		out.single = run
		return out, nil
	}
	if len(run.ents) > 0 {
		if err := out.spill(run, opts.TempDir); err != nil {
			return nil, err
		}
	}
	// Duplicates across runs only show up while merging: merge once to
	// validate, so that a duplicate fails before anything is built.
	if err := out.openRuns(); err != nil {
		return nil, err
	}
	for {
		if _, _, err := out.Next(); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
	}
	return out, out.openRuns()
}

// memRun holds records in an arena of fixed-size blocks (no copying as it
// grows, so memory stays close to the data held), sorted on demand.
type memRun struct {
	blocks [][]byte
	bytes  int
	ents   []runEnt
	pos    int
}

type runEnt struct {
	line       int64
	block      int32
	off        int32
	klen, vlen int32
}

const arenaBlock = 1 << 20

func (m *memRun) add(line int64, key string, value []byte) {
	n := len(key) + len(value)
	if len(m.blocks) == 0 || cap(m.blocks[len(m.blocks)-1])-len(m.blocks[len(m.blocks)-1]) < n {
		m.blocks = append(m.blocks, make([]byte, 0, max(arenaBlock, n)))
	}
	bi := len(m.blocks) - 1
	b := m.blocks[bi]
	m.ents = append(m.ents, runEnt{line: line, block: int32(bi), off: int32(len(b)), klen: int32(len(key)), vlen: int32(len(value))})
	b = append(b, key...)
	m.blocks[bi] = append(b, value...)
	m.bytes += n
}

func (m *memRun) size() int { return m.bytes + 40*len(m.ents) }

func (m *memRun) key(e *runEnt) []byte {
	return m.blocks[e.block][e.off : e.off+e.klen]
}

func (m *memRun) value(e *runEnt) []byte {
	return m.blocks[e.block][e.off+e.klen : e.off+e.klen+e.vlen]
}

func (m *memRun) sort() error {
	slices.SortStableFunc(m.ents, func(a, b runEnt) int { return bytes.Compare(m.key(&a), m.key(&b)) })
	for i := 1; i < len(m.ents); i++ {
		a, b := &m.ents[i-1], &m.ents[i]
		if bytes.Equal(m.key(a), m.key(b)) {
			first, second := min(a.line, b.line), max(a.line, b.line)
			return &LineError{Line: second, Err: fmt.Errorf("duplicate key %q (first at line %d): %w", m.key(a), first, ErrInvalid)}
		}
	}
	return nil
}

func (s *SortedRecords) spill(run *memRun, dir string) error {
	if err := run.sort(); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "deltasync-run-*")
	if err != nil {
		return fmt.Errorf("spill sorted run: %w", err)
	}
	s.files = append(s.files, f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	var hdr []byte
	for i := range run.ents {
		e := &run.ents[i]
		hdr = binary.AppendUvarint(hdr[:0], uint64(e.line))
		w.Write(hdr)
		w.Write(AppendRecord(hdr[:0], string(run.key(e)), run.value(e)))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("spill sorted run: %w", err)
	}
	return f.Close()
}

func (s *SortedRecords) openRuns() error {
	for _, r := range s.runs {
		r.f.Close()
	}
	s.runs, s.h = nil, nil
	for _, name := range s.files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		r := &runReader{f: f, r: bufio.NewReaderSize(f, 256<<10)}
		s.runs = append(s.runs, r)
		if err := r.next(); err == nil {
			s.h = append(s.h, r)
		} else if err != io.EOF {
			return err
		}
	}
	heap.Init(&s.h)
	s.started = false
	return nil
}

// Next implements RecordSource.
func (s *SortedRecords) Next() (string, []byte, error) {
	if s.single != nil {
		m := s.single
		if m.pos >= len(m.ents) {
			return "", nil, io.EOF
		}
		e := &m.ents[m.pos]
		m.pos++
		return string(m.key(e)), m.value(e), nil
	}
	if len(s.h) == 0 {
		return "", nil, io.EOF
	}
	top := s.h[0]
	key, line := top.key, top.line
	value := append([]byte(nil), top.value...)
	if err := top.next(); err == io.EOF {
		heap.Pop(&s.h)
	} else if err != nil {
		return "", nil, err
	} else {
		heap.Fix(&s.h, 0)
	}
	if len(s.h) > 0 && s.h[0].key == key {
		first, second := min(line, s.h[0].line), max(line, s.h[0].line)
		return "", nil, &LineError{Line: second, Err: fmt.Errorf("duplicate key %q (first at line %d): %w", key, first, ErrInvalid)}
	}
	return key, value, nil
}

// Close removes temporary files.
func (s *SortedRecords) Close() error {
	var errs []error
	for _, r := range s.runs {
		r.f.Close()
	}
	for _, name := range s.files {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	s.files, s.runs = nil, nil
	return errors.Join(errs...)
}

type runReader struct {
	f     *os.File
	r     *bufio.Reader
	line  int64
	key   string
	value []byte
}

func (r *runReader) next() error {
	line, err := binary.ReadUvarint(r.r)
	if err != nil {
		return err // io.EOF at a clean end
	}
	kl, err := binary.ReadUvarint(r.r)
	if err != nil {
		return fmt.Errorf("read run: %w", err)
	}
	var sb strings.Builder
	sb.Grow(int(kl))
	if _, err := io.CopyN(&sb, r.r, int64(kl)); err != nil {
		return fmt.Errorf("read run: %w", err)
	}
	vl, err := binary.ReadUvarint(r.r)
	if err != nil {
		return fmt.Errorf("read run: %w", err)
	}
	r.value = grow(r.value, int(vl))
	if _, err := io.ReadFull(r.r, r.value); err != nil {
		return fmt.Errorf("read run: %w", err)
	}
	r.line, r.key = int64(line), sb.String()
	return nil
}

type runHeap []*runReader

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return h[i].key < h[j].key }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
