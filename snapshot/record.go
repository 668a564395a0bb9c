package snapshot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Limits of the data model.
const (
	MaxKeyLen   = 512      // bytes
	MaxValueLen = 16 << 20 // bytes of canonical JSON
)

// Record is one key/value pair of a data set. Value holds canonical JSON
// (see CanonicalJSON).
type Record struct {
	Key   string
	Value []byte
}

// ValidateKey checks the key rules: valid UTF-8, 1..MaxKeyLen bytes, no NUL.
func ValidateKey(key string) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("empty key: %w", ErrInvalid)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("key of %d bytes exceeds %d: %w", len(key), MaxKeyLen, ErrInvalid)
	case !utf8.ValidString(key):
		return fmt.Errorf("key %q is not valid UTF-8: %w", key, ErrInvalid)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("key %q contains NUL: %w", key, ErrInvalid)
	}
	return nil
}

// CanonicalJSON returns the canonical form of one JSON value: compact, object
// keys sorted bytewise, numbers kept as written, no HTML escaping. Equal data
// gives equal bytes. The input must hold exactly one JSON value.
func CanonicalJSON(raw []byte) ([]byte, error) {
	if isCanonical(raw) {
		return bytes.Clone(raw), nil
	}
	v, err := DecodeJSON(raw)
	if err != nil {
		return nil, err
	}
	return MarshalCanonical(v)
}

// DecodeJSON parses exactly one JSON value, keeping numbers as json.Number.
// A string that is not Unicode as written is refused (see ValidateJSONText),
// not decoded to U+FFFD.
func DecodeJSON(raw []byte) (any, error) {
	if err := ValidateJSONText(raw); err != nil {
		return nil, fmt.Errorf("bad JSON value: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("bad JSON value: %v: %w", err, ErrInvalid)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("bad JSON value: trailing data: %w", ErrInvalid)
	}
	return v, nil
}

// MarshalCanonical encodes a value produced by DecodeJSON (maps, slices,
// strings, json.Number, bools, nil) canonically.
func MarshalCanonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode JSON: %v: %w", err, ErrInvalid)
	}
	b := buf.Bytes()
	return b[:len(b)-1], nil // drop Encode's newline
}
