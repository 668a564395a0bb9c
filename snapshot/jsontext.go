package snapshot

import (
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// ValidateJSONText checks that every string of a JSON text is Unicode as
// written: its raw bytes are valid UTF-8 and no \u escape is a lone
// surrogate (I-JSON, RFC 7493 §2.1). encoding/json decodes both silently to
// U+FFFD, so two different keys (or values) would become one; callers run
// this on the raw bytes before they decode. It does not check the rest of
// the syntax: the decoder that runs next does. Errors match ErrInvalid and
// name the byte offset.
func ValidateJSONText(b []byte) error {
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '\\':
			n, err := escapeLen(b, i)
			if err != nil {
				return err
			}
			i += n
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				return fmt.Errorf("JSON text is not valid UTF-8 at byte %d: %w", i, ErrInvalid)
			}
			i += size
		}
	}
	return nil
}

// escapeLen returns the length of the escape at b[i] ('\\'): a surrogate
// pair's two escapes count as one. A malformed escape is left to the decoder
// (its two bytes are skipped); a lone surrogate is an error.
func escapeLen(b []byte, i int) (int, error) {
	r, ok := hexEscape(b, i)
	if !ok {
		return 2, nil
	}
	if !utf16.IsSurrogate(r) {
		return 6, nil
	}
	if r < 0xdc00 { // a high surrogate needs a low one right after it
		if lo, ok := hexEscape(b, i+6); ok && lo >= 0xdc00 && lo <= 0xdfff {
			return 12, nil
		}
	}
	return 0, fmt.Errorf("JSON text has a lone surrogate \\u%04x at byte %d: %w", r, i, ErrInvalid)
}

// hexEscape decodes the \uXXXX escape at b[i], if there is one.
func hexEscape(b []byte, i int) (rune, bool) {
	if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[i+2 : i+6] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
