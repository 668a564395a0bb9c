package snapshot

import (
	"bytes"
	"unicode/utf8"
)

// Canonicalising a value means decoding it into maps and re-encoding it,
// which costs far more than reading it. Most inputs are already canonical
// (exports from a backend that writes compact JSON with sorted keys, and
// anything this package wrote), so a scanner first checks whether the
// bytes are canonical as they are; only values it cannot vouch for take the
// slow path. The scanner is conservative: any string with an escape, any
// whitespace, any unsorted or duplicate key sends the value down the slow
// path, which is the definition of canonical.

// canonicalPrefix reports whether b starts with one canonical JSON value
// and returns its length; ok is false if the scanner cannot vouch for it.
func canonicalPrefix(b []byte) (n int, ok bool) {
	s := scanner{b: b}
	if !s.value(0) {
		return 0, false
	}
	return s.i, true
}

// isCanonical reports whether b is exactly one canonical JSON value.
func isCanonical(b []byte) bool {
	n, ok := canonicalPrefix(b)
	return ok && n == len(b)
}

type scanner struct {
	b []byte
	i int
}

const maxDepth = 1000

func (s *scanner) value(depth int) bool {
	if s.i >= len(s.b) || depth > maxDepth {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object(depth)
	case c == '[':
		return s.array(depth)
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	}
	return false
}

func (s *scanner) lit(w string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(w)) {
		return false
	}
	s.i += len(w)
	return true
}

// str scans a string without escapes or control characters, in valid UTF-8
// without U+2028/U+2029 (which the encoder escapes), and returns its content.
func (s *scanner) str() ([]byte, bool) {
	start := s.i + 1
	j := start
	ascii := true
	for ; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			break
		}
		if c == '\\' || c < 0x20 {
			return nil, false
		}
		if c >= 0x80 {
			ascii = false
		}
	}
	if j >= len(s.b) {
		return nil, false
	}
	content := s.b[start:j]
	if !ascii && (!utf8.Valid(content) || bytes.Contains(content, []byte("\u2028")) || bytes.Contains(content, []byte("\u2029"))) {
		return nil, false
	}
	s.i = j + 1
	return content, true
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, which the
// encoder writes back exactly as read.
func (s *scanner) number() bool {
	if s.b[s.i] == '-' {
		s.i++
	}
	if s.i < len(s.b) && s.b[s.i] == '0' {
		s.i++
	} else if s.digits() == 0 {
		return false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *scanner) object(depth int) bool {
	s.i++ // {
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return true
	}
	var prev []byte
	for n := 0; ; n++ {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false
		}
		key, ok := s.str()
		if !ok || n > 0 && bytes.Compare(prev, key) >= 0 {
			return false
		}
		prev = key
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		if !s.value(depth + 1) {
			return false
		}
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

func (s *scanner) array(depth int) bool {
	s.i++ // [
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		return true
	}
	for {
		if !s.value(depth+1) || s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// parseLineFast parses {"key":K,"value":V} (members in either order) when
// the key needs no unescaping and V is canonical; ok is false otherwise.
func parseLineFast(line []byte) (key string, value []byte, ok bool) {
	s := scanner{b: line}
	if len(line) < 2 || line[0] != '{' {
		return "", nil, false
	}
	s.i = 1
	var k, v []byte
	for n := 0; n < 2; n++ {
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return "", nil, false
		}
		name, ok := s.str()
		if !ok || s.i >= len(s.b) || s.b[s.i] != ':' {
			return "", nil, false
		}
		s.i++
		switch {
		case string(name) == "key" && k == nil:
			if s.i >= len(s.b) || s.b[s.i] != '"' {
				return "", nil, false
			}
			if k, ok = s.str(); !ok {
				return "", nil, false
			}
		case string(name) == "value" && v == nil:
			start := s.i
			if !s.value(0) {
				return "", nil, false
			}
			v = s.b[start:s.i]
		default:
			return "", nil, false
		}
		if s.i >= len(s.b) {
			return "", nil, false
		}
		if n == 0 && s.b[s.i] == ',' {
			s.i++
		}
	}
	if s.i != len(s.b)-1 || s.b[s.i] != '}' || k == nil || v == nil {
		return "", nil, false
	}
	return string(k), v, true
}
