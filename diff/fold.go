package diff

import (
	"fmt"

	"github.com/deltasync/deltasync/snapshot"
)

// Fold applies one key's ops, in order, to the value they start from. It
// is the one implementation of put, merge and delete: the server's replay
// folds a patch's ops onto the value the client saw with it, and a device
// lays its pending edits over its synced value with it, so what a device
// shows its user is what the server will apply (a drift between two
// copies would make them disagree exactly where it hurts: an edit the
// server refuses showing as applied on the device).
//
// A merge applies an RFC 7386 merge patch; an absent value counts as {}.
// A merge onto a present value that is not an object (including null), or
// one whose result is over MaxRecordBytes, cannot apply: Apply reports why
// and the value stays as it was (the server answers such an op
// "rejected"). The value is kept as canonical bytes and decoded once for a
// run of merges.
type Fold struct {
	// MaxRecordBytes, if positive, is the largest merged value accepted.
	MaxRecordBytes int64

	cur     []byte // canonical JSON; nil when absent
	doc     any    // cur decoded, when decoded
	decoded bool
	stale   bool // doc is newer than cur (a merge not yet encoded)
}

// NewFold starts a fold at value (canonical JSON; nil: absent).
func NewFold(value []byte, maxRecordBytes int64) *Fold {
	return &Fold{MaxRecordBytes: maxRecordBytes, cur: value}
}

// Apply applies op (its Key is not looked at). A put's value and a merge's
// patch must be canonical JSON, as validated patches and queued edits are.
// It returns a non-empty reason, changing nothing, when a merge cannot
// apply; an error when the value under a merge cannot be decoded (it
// matches snapshot.ErrCorrupt) or the op is malformed (snapshot.ErrInvalid).
func (f *Fold) Apply(op *Op) (reason string, err error) {
	switch op.Op {
	case OpPut:
		f.cur, f.doc, f.decoded, f.stale = op.Value, nil, false, false
	case OpDelete:
		f.cur, f.doc, f.decoded, f.stale = nil, nil, false, false
	case OpMerge:
		return f.merge(op.Patch)
	default:
		return "", fmt.Errorf("op %q: %w", op.Op, snapshot.ErrInvalid)
	}
	return "", nil
}

func (f *Fold) merge(patch []byte) (string, error) {
	present := f.cur != nil || f.stale
	if present && !f.decoded {
		d, err := snapshot.DecodeJSON(f.cur)
		if err != nil {
			return "", fmt.Errorf("value under merge: %v: %w", err, snapshot.ErrCorrupt)
		}
		f.doc, f.decoded = d, true
	}
	var target any
	if present {
		if _, ok := f.doc.(map[string]any); !ok {
			return fmt.Sprintf("merge on a non-object value (%s)", jsonKind(f.doc)), nil
		}
		target = f.doc
	}
	p, err := snapshot.DecodeJSON(patch)
	if err != nil {
		return "", fmt.Errorf("merge patch: %w", err)
	}
	merged := MergePatch(target, p)
	if f.MaxRecordBytes <= 0 {
		f.doc, f.decoded, f.stale = merged, true, true
		return "", nil
	}
	b, err := snapshot.MarshalCanonical(merged)
	if err != nil {
		return "", err
	}
	if most := f.MaxRecordBytes; int64(len(b)) > most {
		return fmt.Sprintf("merged value of %d bytes is over the limit of %d bytes per record (%s)", len(b), most, LimitRecordBytes), nil
	}
	f.cur, f.doc, f.decoded, f.stale = b, merged, true, false
	return "", nil
}

// Value returns the value as canonical JSON, nil when absent. The bytes
// may be shared with the ops applied: treat them as read-only.
func (f *Fold) Value() ([]byte, error) {
	if f.stale {
		b, err := snapshot.MarshalCanonical(f.doc)
		if err != nil {
			return nil, err
		}
		f.cur, f.stale = b, false
	}
	return f.cur, nil
}
