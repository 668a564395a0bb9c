package state

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/deltasync/deltasync/snapshot"
)

// walker decodes the records of a run of consecutive chunks of one
// version's stream, fed one chunk at a time, with each record's location
// (appendLoc). A record bigger than a chunk is carried over its pieces;
// it is the only thing held beyond the chunk being fed.
type walker struct {
	carry []byte   // the unfinished record's bytes so far
	coff  int      // its offset in its first chunk
	cseqs []uint64 // the chunks it spans so far
	prev  []byte   // last key, for the order check
	n     uint64   // records decoded
	loc   []byte   // reused location buffer
	one   [1]uint64
}

// record is one decoded record. Key and value are valid until the next
// feed; loc until the next record.
type record struct {
	key, value, loc []byte
}

// feed decodes the records completed by chunk raw (stored as seq) and
// calls fn for each, in order.
func (w *walker) feed(seq uint64, raw []byte, fn func(r record) error) error {
	pos := 0
	if len(w.carry) > 0 {
		had := len(w.carry)
		w.carry = append(w.carry, raw...)
		w.cseqs = append(w.cseqs, seq)
		k, v, n, err := snapshot.DecodeRecord(w.carry)
		if err != nil {
			return fmt.Errorf("record %d: %w", w.n+1, err)
		}
		if n == 0 {
			return nil // still inside the record
		}
		if err := w.emit(k, v, w.coff, w.cseqs, fn); err != nil {
			return err
		}
		pos = n - had
		// The record's key and value live in carry: hand it over, the
		// next carried record gets a buffer of its own.
		w.carry, w.cseqs = nil, w.cseqs[:0]
	}
	for pos < len(raw) {
		k, v, n, err := snapshot.DecodeRecord(raw[pos:])
		if err != nil {
			return fmt.Errorf("record %d: %w", w.n+1, err)
		}
		if n == 0 {
			// A record bigger than the rest of the chunk: carry it, in a
			// buffer of its full size when its lengths are in this piece
			// (appending to a growing one would copy it over and over).
			w.carry = make([]byte, 0, max(recordLen(raw[pos:]), len(raw)-pos))
			w.carry = append(w.carry, raw[pos:]...)
			w.coff, w.cseqs = pos, append(w.cseqs[:0], seq)
			return nil
		}
		w.one[0] = seq
		if err := w.emit(k, v, pos, w.one[:], fn); err != nil {
			return err
		}
		pos += n
	}
	return nil
}

func (w *walker) emit(k, v []byte, off int, seqs []uint64, fn func(record) error) error {
	if w.n > 0 && bytes.Compare(k, w.prev) <= 0 {
		return fmt.Errorf("record %d: key %q after %q: %w", w.n+1, k, w.prev, ErrCorrupt)
	}
	if err := snapshot.ValidateKey(string(k)); err != nil {
		return fmt.Errorf("record %d: %v: %w", w.n+1, err, ErrCorrupt)
	}
	w.prev = append(w.prev[:0], k...)
	w.n++
	w.loc = appendLoc(w.loc[:0], off, seqs)
	return fn(record{key: k, value: v, loc: w.loc})
}

// recordLen is the encoded length of the record b starts with, from its
// length fields (0 if they are not all in b or out of bounds).
func recordLen(b []byte) int {
	kl, a := binary.Uvarint(b)
	if a <= 0 || kl > snapshot.MaxKeyLen || uint64(len(b)-a) < kl {
		return 0
	}
	vl, c := binary.Uvarint(b[a+int(kl):])
	if c <= 0 || vl > snapshot.MaxValueLen {
		return 0
	}
	return a + int(kl) + c + int(vl)
}

// pending reports whether the walker is inside a record.
func (w *walker) pending() bool { return len(w.carry) > 0 }

// close reports an error if the chunks ended inside a record.
func (w *walker) close() error {
	if w.pending() {
		return fmt.Errorf("stream ends inside record %d: %w", w.n+1, ErrCorrupt)
	}
	return nil
}

// recIter reads the records of chunks [from, to) of a version, pulling
// chunks from load one at a time.
type recIter struct {
	load     func(j int) (seq uint64, raw []byte, err error)
	j, to    int
	w        walker
	q        []record
	qi       int
	finished bool
}

func newRecIter(from, to int, load func(j int) (uint64, []byte, error)) *recIter {
	return &recIter{load: load, j: from, to: to}
}

// next returns the next record, or nil after the last. The record is
// valid until the following call.
func (it *recIter) next() (*record, error) {
	for it.qi >= len(it.q) {
		if it.j >= it.to {
			if !it.finished {
				it.finished = true
				if err := it.w.close(); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}
		seq, raw, err := it.load(it.j)
		if err != nil {
			return nil, err
		}
		it.j++
		it.q, it.qi = it.q[:0], 0
		err = it.w.feed(seq, raw, func(r record) error {
			// Keys and values stay valid: raw is not reused, and a carried
			// record's buffer is handed over, not overwritten.
			it.q = append(it.q, record{key: r.key, value: r.value, loc: bytes.Clone(r.loc)})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	r := &it.q[it.qi]
	it.qi++
	return r, nil
}
