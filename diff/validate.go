package diff

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/deltasync/deltasync/snapshot"
)

// MaxPatchIDLen is the longest patch id accepted, in bytes.
const MaxPatchIDLen = 128

// Limits bound what one patch may hold. A zero field takes its value from
// DefaultLimits, so Limits{} is the default.
//
// How they relate: MaxOps and MaxBytes bound a patch of several edits, and
// a client splits its queue to fit them, so they never cost an edit.
// MaxRecordBytes bounds one value; a patch of a single edit may always be as
// large as one such value needs (MaxBodyBytes), whatever MaxBytes says, so
// an edit whose value fits MaxRecordBytes always gets through on its own.
type Limits struct {
	MaxOps   int   // ops per patch
	MaxBytes int64 // canonical body (EncodePatch) of a patch of several ops
	// MaxRecordBytes bounds a put's value and a merge patch (canonical
	// JSON) and the value a merge produces. At most snapshot.MaxValueLen.
	MaxRecordBytes int64
}

// DefaultLimits allows 10,000 ops and 8 MiB per patch, and values up to
// snapshot.MaxValueLen (16 MiB).
func DefaultLimits() Limits {
	return Limits{MaxOps: 10_000, MaxBytes: 8 << 20, MaxRecordBytes: snapshot.MaxValueLen}
}

// SingleEditOverhead bounds what a patch of one edit holds beyond its value
// or merge patch: id, base, op, the key (escaped, twice with Seen) and JSON
// punctuation.
const SingleEditOverhead = 16 << 10

// Fill returns l with every zero (or out of range) field taken from
// DefaultLimits.
func (l Limits) Fill() Limits {
	d := DefaultLimits()
	if l.MaxOps <= 0 {
		l.MaxOps = d.MaxOps
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxRecordBytes <= 0 || l.MaxRecordBytes > snapshot.MaxValueLen {
		l.MaxRecordBytes = d.MaxRecordBytes
	}
	return l
}

func (l Limits) fill() Limits { return l.Fill() }

// MaxBodyBytes is the largest patch body l allows: MaxBytes, or what a
// patch of one edit of MaxRecordBytes needs, whichever is larger.
func (l Limits) MaxBodyBytes() int64 {
	l = l.fill()
	return max(l.MaxBytes, l.MaxRecordBytes+SingleEditOverhead)
}

// ErrTooLarge matches a *LimitError: a patch or one of its ops over a limit
// of Limits. Nothing was applied. Over MaxOps or MaxBytes, smaller patches
// fit; over MaxRecordBytes, the op can never apply as it is.
var ErrTooLarge = errors.New("over a patch limit")

// Names of the limits, as a LimitError and the wire policy name them.
const (
	LimitPatchOps    = "max_patch_ops"
	LimitPatchBytes  = "max_patch_bytes"
	LimitRecordBytes = "max_record_bytes"
)

// LimitError reports a patch (or one op of it) over one of its Limits. It
// matches ErrTooLarge and snapshot.ErrInvalid.
type LimitError struct {
	Limit string // LimitPatchOps, LimitPatchBytes or LimitRecordBytes
	Max   int64  // the limit
	Got   int64  // what the patch or op has
	Index int    // the op over LimitRecordBytes; -1 for the whole patch
	Key   string // that op's key
	What  string // what is measured, for the message ("ops", "bytes", "value")
}

func (e *LimitError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("op %d (%q): %s of %d bytes is over the limit of %d bytes per record (%s)",
			e.Index, e.Key, e.What, e.Got, e.Max, e.Limit)
	}
	return fmt.Sprintf("patch of %d %s is over the limit of %d %s per patch (%s)",
		e.Got, e.What, e.Max, e.What, e.Limit)
}

// Is makes a LimitError match ErrTooLarge and snapshot.ErrInvalid (the
// client is at fault either way).
func (e *LimitError) Is(target error) bool {
	return target == ErrTooLarge || target == snapshot.ErrInvalid
}

// Errors of patch replay; the patch-specific ones also match
// snapshot.ErrInvalid where the client is at fault.
var (
	// ErrConflict matches a *RejectedError: the patch conflicts with what
	// the server changed since its base and the policy is reject.
	ErrConflict = errors.New("patch conflicts with server changes")
	// ErrContended reports a patch that kept losing the race for a new
	// version to other writers of the same data set: nothing was applied,
	// and the same patch may be sent again later.
	ErrContended = errors.New("too many concurrent writers for this data set")
	// ErrPatchIDReused reports a patch id that was already applied with a
	// different body. The error also matches snapshot.ErrInvalid.
	ErrPatchIDReused = errors.New("patch id already used for a different patch")
)

// OpError names the op of a patch that failed validation.
type OpError struct {
	Index int    // position in Ops
	Op    string // as received (may be unknown)
	Key   string
	Err   error
}

func (e *OpError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("op %d (%q): %v", e.Index, e.Op, e.Err)
	}
	return fmt.Sprintf("op %d (%s %q): %v", e.Index, e.Op, e.Key, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// DecodePatch parses a patch body strictly (unknown fields and trailing data
// are rejected), then validates it (see Validate). A body longer than
// lim.MaxBodyBytes is refused unread. Every error matches
// snapshot.ErrInvalid; one over a limit is a *LimitError.
func DecodePatch(body []byte, lim Limits) (*Patch, error) {
	lim = lim.fill()
	if n, most := int64(len(body)), lim.MaxBodyBytes(); n > most {
		return nil, &LimitError{Limit: LimitPatchBytes, Max: most, Got: n, Index: -1, What: "bytes"}
	}
	// Keys must be checked as sent: decoding turns bytes that are not
	// UTF-8, and lone surrogates, into U+FFFD (two keys into one).
	if err := snapshot.ValidateJSONText(body); err != nil {
		return nil, fmt.Errorf("decode patch: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var p Patch
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("decode patch: %v: %w", err, snapshot.ErrInvalid)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("decode patch: trailing data after the patch object: %w", snapshot.ErrInvalid)
	}
	if err := p.Validate(lim); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks a patch against the data model and lim, and canonicalises
// every value and merge patch in place (snapshot.CanonicalJSON), so equal
// patches have equal bytes. Errors match snapshot.ErrInvalid; an op's error
// is an *OpError naming it, a limit's a *LimitError (see CheckLimits).
//
// Several ops on one key are allowed and apply in order: an offline user
// edits a record many times.
func (p *Patch) Validate(lim Limits) error {
	if err := p.validateShape(); err != nil {
		return err
	}
	return p.CheckLimits(lim)
}

// validateShape is Validate without the limits.
func (p *Patch) validateShape() error {
	if err := validateID(p.ID); err != nil {
		return err
	}
	if len(p.Ops) == 0 {
		return fmt.Errorf("patch %q has no ops: %w", p.ID, snapshot.ErrInvalid)
	}
	for i := range p.Ops {
		op := &p.Ops[i]
		if err := op.validate(); err != nil {
			return &OpError{Index: i, Op: op.Op, Key: op.Key, Err: err}
		}
	}
	if len(p.Seen) > 0 {
		keys := make(map[string]bool, len(p.Ops))
		for i := range p.Ops {
			keys[p.Ops[i].Key] = true
		}
		for k, h := range p.Seen {
			if !keys[k] {
				return fmt.Errorf("patch %q: seen names %q, which no op edits: %w", p.ID, k, snapshot.ErrInvalid)
			}
			if !validSeen(h) {
				return fmt.Errorf("patch %q: seen[%q] = %q: want %q or 32 lowercase hex digits: %w", p.ID, k, h, SeenAbsent, snapshot.ErrInvalid)
			}
		}
	}
	return nil
}

// CheckLimits returns a *LimitError for the first limit of lim that the
// patch is over, nil if none: more than MaxOps ops; a value or merge patch
// over MaxRecordBytes; several ops whose canonical body (EncodePatch) is
// over MaxBytes. One op alone is never over MaxBytes: it is bounded by
// MaxRecordBytes. Values must be canonical (Validate makes them so).
func (p *Patch) CheckLimits(lim Limits) error {
	lim = lim.fill()
	if n := len(p.Ops); n > lim.MaxOps {
		return &LimitError{Limit: LimitPatchOps, Max: int64(lim.MaxOps), Got: int64(n), Index: -1, What: "ops"}
	}
	for i := range p.Ops {
		op := &p.Ops[i]
		what, n := "value", len(op.Value)
		if op.Op == OpMerge {
			what, n = "merge patch", len(op.Patch)
		}
		if int64(n) > lim.MaxRecordBytes {
			return &LimitError{Limit: LimitRecordBytes, Max: lim.MaxRecordBytes, Got: int64(n), Index: i, Key: op.Key, What: what}
		}
	}
	if len(p.Ops) > 1 {
		if n := EncodedSize(p); n > lim.MaxBytes {
			return &LimitError{Limit: LimitPatchBytes, Max: lim.MaxBytes, Got: n, Index: -1, What: "bytes"}
		}
	}
	return nil
}

// EncodedSize is len(EncodePatch(p)) for a patch with canonical values,
// computed without encoding it.
func EncodedSize(p *Patch) int64 {
	s := NewPatchSize(p.ID, p.Base)
	for i := range p.Ops {
		s.AddOp(p.Ops[i])
	}
	for k, h := range p.Seen {
		s.AddSeen(k, h)
	}
	return s.Bytes()
}

func validSeen(h string) bool {
	if h == SeenAbsent {
		return true
	}
	if len(h) != 32 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func validateID(id string) error {
	if len(id) == 0 || len(id) > MaxPatchIDLen {
		return fmt.Errorf("patch id must be 1..%d bytes, got %d: %w", MaxPatchIDLen, len(id), snapshot.ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return fmt.Errorf("patch id %q: byte %d is not printable ASCII: %w", id, i, snapshot.ErrInvalid)
		}
	}
	return nil
}

// maxEditTime is the latest device time an op may carry (Op.At): the end
// of year 9999, in unix milliseconds.
const maxEditTime = 253402300799999

func (op *Op) validate() error {
	if err := snapshot.ValidateKey(op.Key); err != nil {
		return err
	}
	if op.At < 0 || op.At > maxEditTime {
		return fmt.Errorf("at %d is not a time in unix milliseconds: %w", op.At, snapshot.ErrInvalid)
	}
	var err error
	switch op.Op {
	case OpPut:
		if len(op.Value) == 0 {
			return fmt.Errorf("put without a value: %w", snapshot.ErrInvalid)
		}
		if len(op.Patch) > 0 {
			return fmt.Errorf("put takes a value, not a patch: %w", snapshot.ErrInvalid)
		}
		if op.Value, err = snapshot.CanonicalJSON(op.Value); err != nil {
			return fmt.Errorf("value: %w", err)
		}
	case OpMerge:
		if len(op.Patch) == 0 {
			return fmt.Errorf("merge without a patch: %w", snapshot.ErrInvalid)
		}
		if len(op.Value) > 0 {
			return fmt.Errorf("merge takes a patch, not a value: %w", snapshot.ErrInvalid)
		}
		v, err := snapshot.DecodeJSON(op.Patch)
		if err != nil {
			return fmt.Errorf("patch: %w", err)
		}
		if _, ok := v.(map[string]any); !ok {
			return fmt.Errorf("merge patch must be a JSON object, got %s: %w", jsonKind(v), snapshot.ErrInvalid)
		}
		if op.Patch, err = snapshot.MarshalCanonical(v); err != nil {
			return err
		}
	case OpDelete:
		if len(op.Value) > 0 || len(op.Patch) > 0 {
			return fmt.Errorf("delete takes no value or patch: %w", snapshot.ErrInvalid)
		}
	default:
		return fmt.Errorf("unknown op %q (want put, merge or delete): %w", op.Op, snapshot.ErrInvalid)
	}
	return nil
}

// jsonKind names the JSON type of a decoded value, for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}

// encodePatch writes a validated patch as compact JSON without HTML
// escaping: the canonical body that identifies it.
func encodePatch(p *Patch) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		return nil, fmt.Errorf("encode patch: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// patchHash is the hex SHA-256 of a patch's canonical body. Values are
// canonicalised first, so a patch read back from a change set (where
// encoding/json may have escaped HTML characters) hashes the same as the
// patch that was received.
func patchHash(p *Patch) (string, error) {
	c := Patch{ID: p.ID, Base: p.Base, Ops: make([]Op, len(p.Ops))}
	copy(c.Ops, p.Ops)
	for i := range c.Ops {
		op := &c.Ops[i]
		// The edit time says when, not what: a patch in flight resent by
		// an upgraded device that now sends times is the same patch.
		op.At = 0
		var err error
		if len(op.Value) > 0 {
			if op.Value, err = snapshot.CanonicalJSON(op.Value); err != nil {
				return "", err
			}
		}
		if len(op.Patch) > 0 {
			if op.Patch, err = snapshot.CanonicalJSON(op.Patch); err != nil {
				return "", err
			}
		}
	}
	body, err := encodePatch(&c)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:]), nil
}

// idHash names a patch id in the store: any id maps to a safe object name.
func idHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// escapePointer escapes one JSON Pointer (RFC 6901) reference token.
func escapePointer(s string) string {
	if !strings.ContainsAny(s, "~/") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}
