package diff

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// EncodePatch returns the canonical body of a patch: compact JSON without
// HTML escaping, fields in declaration order, Seen's keys sorted. It is what
// the patch limits measure (Limits.MaxBytes) and what a client should send:
// values and merge patches must already be canonical (Validate leaves them
// so), or the body is longer than PatchSize says.
func EncodePatch(p *Patch) ([]byte, error) { return encodePatch(p) }

// PatchSize measures the canonical body of a patch (EncodePatch) op by op,
// so that a client can fill a patch up to Limits.MaxBytes without encoding
// it again for every edit. Start with NewPatchSize; add each op with AddOp
// and each Seen entry with AddSeen. Values and merge patches are counted as
// they are, so they must be canonical.
type PatchSize struct {
	n    int64
	ops  int
	seen int
}

// NewPatchSize is the size of a patch with id and base and nothing else yet.
func NewPatchSize(id string, base uint64) PatchSize {
	n := len(`{"id":`) + jsonStringLen(id) + len(`,"base":`) + len(strconv.FormatUint(base, 10)) + len(`,"ops":[]}`)
	return PatchSize{n: int64(n)}
}

// Bytes is the length of the canonical body with what was added so far.
func (s PatchSize) Bytes() int64 { return s.n }

// Ops is the number of ops added.
func (s PatchSize) Ops() int { return s.ops }

// AddOp counts one more op.
func (s *PatchSize) AddOp(op Op) {
	s.n += OpSize(op)
	if s.ops > 0 {
		s.n++ // the comma before it
	}
	s.ops++
}

// AddSeen counts one more entry of Seen.
func (s *PatchSize) AddSeen(key, hash string) {
	s.n += SeenSize(key, hash)
	if s.seen == 0 {
		s.n += int64(len(`,"seen":{}`))
	} else {
		s.n++
	}
	s.seen++
}

// OpSize is the length of one op in a canonical body (without the comma
// that separates it from the previous one).
func OpSize(op Op) int64 {
	n := len(`{"op":`) + jsonStringLen(op.Op) + len(`,"key":`) + jsonStringLen(op.Key) + len(`}`)
	if len(op.Value) > 0 {
		n += len(`,"value":`) + len(op.Value)
	}
	if len(op.Patch) > 0 {
		n += len(`,"patch":`) + len(op.Patch)
	}
	if op.At != 0 {
		n += len(`,"at":`) + len(strconv.FormatInt(op.At, 10))
	}
	return int64(n)
}

// SeenSize is the length of one Seen entry in a canonical body (without the
// separating comma).
func SeenSize(key, hash string) int64 {
	return int64(jsonStringLen(key) + len(`:`) + jsonStringLen(hash))
}

// jsonStringLen is the length of s encoded as a JSON string the way
// encodePatch encodes it. Keys and ids are short, so asking the encoder
// itself is cheap and keeps the two from ever disagreeing.
func jsonStringLen(s string) int {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)    // a string always encodes
	return buf.Len() - 1 // Encode appends a newline
}
