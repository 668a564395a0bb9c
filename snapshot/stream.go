package snapshot

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The canonical stream of a version is its records sorted by key (bytewise),
// each written as uvarint(len key) key uvarint(len value) value. Its SHA-256
// identifies a version's content independently of how it was chunked.

// AppendRecord appends the canonical encoding of one record to dst.
func AppendRecord(dst []byte, key string, value []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendUvarint(dst, uint64(len(value)))
	return append(dst, value...)
}

// EncodedLen is the length of a record's canonical encoding.
func EncodedLen(key string, value []byte) int {
	return uvarintLen(uint64(len(key))) + len(key) + uvarintLen(uint64(len(value))) + len(value)
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// DecodeRecord decodes the record at the start of buf. It returns the number
// of bytes consumed; n == 0 with a nil error means buf holds an incomplete
// record (more bytes needed). The returned slices alias buf.
func DecodeRecord(buf []byte) (key, value []byte, n int, err error) {
	kl, a := binary.Uvarint(buf)
	if a == 0 {
		return nil, nil, 0, nil
	}
	if a < 0 || a != uvarintLen(kl) || kl == 0 || kl > MaxKeyLen {
		return nil, nil, 0, fmt.Errorf("record key length: %w", ErrCorrupt)
	}
	if uint64(len(buf)-a) < kl {
		return nil, nil, 0, nil
	}
	key = buf[a : a+int(kl)]
	rest := buf[a+int(kl):]
	vl, b := binary.Uvarint(rest)
	if b == 0 {
		return nil, nil, 0, nil
	}
	if b < 0 || b != uvarintLen(vl) || vl > MaxValueLen {
		return nil, nil, 0, fmt.Errorf("record value length: %w", ErrCorrupt)
	}
	if uint64(len(rest)-b) < vl {
		return nil, nil, 0, nil
	}
	value = rest[b : b+int(vl)]
	return key, value, a + int(kl) + b + int(vl), nil
}

// StreamReader decodes a canonical stream, checking that keys are valid and
// strictly increasing.
type StreamReader struct {
	r    *bufio.Reader
	prev []byte
	key  []byte
	val  []byte
	n    int64 // records read
}

// NewStreamReader reads a canonical stream from r.
func NewStreamReader(r io.Reader) *StreamReader {
	return &StreamReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next returns the next record, or io.EOF after the last one. The returned
// slices are valid until the next call.
func (s *StreamReader) Next() (key, value []byte, err error) {
	kl, err := readUvarint(s.r)
	if err == io.EOF {
		return nil, nil, io.EOF
	}
	if err != nil {
		return nil, nil, s.corrupt("key length", err)
	}
	if kl == 0 || kl > MaxKeyLen {
		return nil, nil, s.corrupt("key length", nil)
	}
	s.prev, s.key = s.key, s.prev
	s.key = grow(s.key, int(kl))
	if _, err := io.ReadFull(s.r, s.key); err != nil {
		return nil, nil, s.corrupt("key", err)
	}
	vl, err := readUvarint(s.r)
	if err != nil {
		return nil, nil, s.corrupt("value length", err)
	}
	if vl > MaxValueLen {
		return nil, nil, s.corrupt("value length", nil)
	}
	s.val = grow(s.val, int(vl))
	if _, err := io.ReadFull(s.r, s.val); err != nil {
		return nil, nil, s.corrupt("value", err)
	}
	if s.n > 0 && string(s.key) <= string(s.prev) {
		return nil, nil, s.corrupt("key order", nil)
	}
	s.n++
	return s.key, s.val, nil
}

func (s *StreamReader) corrupt(what string, err error) error {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("stream record %d: bad %s: %w", s.n+1, what, ErrCorrupt)
	}
	return fmt.Errorf("stream record %d: %s: %w", s.n+1, what, err)
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// readUvarint is binary.ReadUvarint that also rejects non-minimal encodings,
// so every stream has exactly one encoding.
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return x, err
		}
		if b < 0x80 {
			if i > 0 && b == 0 || i == binary.MaxVarintLen64-1 && b > 1 {
				return x, ErrCorrupt
			}
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return x, ErrCorrupt
}
