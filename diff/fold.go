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
// "rejected"). The value is kept as canonical bytes, decoded once for a
// run of merges and encoded once after it: a merge costs what it touches,
// not the size of the record (see mergeInPlace).
type Fold struct {
	// MaxRecordBytes, if positive, is the largest merged value accepted.
	MaxRecordBytes int64

	cur     []byte // canonical JSON; nil when absent
	doc     any    // cur decoded, when decoded
	decoded bool
	stale   bool  // doc is newer than cur (a merge not yet encoded)
	size    int64 // length of doc's canonical encoding, when decoded
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
		f.doc, f.decoded, f.size = d, true, int64(len(f.cur))
	}
	var target map[string]any
	if present {
		t, ok := f.doc.(map[string]any)
		if !ok {
			return fmt.Sprintf("merge on a non-object value (%s)", jsonKind(f.doc)), nil
		}
		target = t
	}
	p, err := snapshot.DecodeJSON(patch)
	if err != nil {
		return "", fmt.Errorf("merge patch: %w", err)
	}
	var undo []undoEntry
	merged, size, err := mergeInPlace(target, f.size, p, &undo)
	if err != nil {
		return "", err
	}
	if most := f.MaxRecordBytes; most > 0 && size > most {
		rollback(undo)
		return fmt.Sprintf("merged value of %d bytes is over the limit of %d bytes per record (%s)", size, most, LimitRecordBytes), nil
	}
	f.doc, f.size, f.decoded, f.stale = merged, size, true, true
	return "", nil
}

// The merges of a Fold change its decoded value in place, and know the
// size of its canonical encoding without encoding it: a run of merges on
// one record costs what they touch, not the record's size per merge
// (else a patch of 10,000 tiny merges on a 16 MiB record would cost the
// server hours). The value is the Fold's own (decoded by it), and so is
// each decoded patch, whose parts it takes over. What a merge overwrote
// is logged, so that one over the record limit is undone.

// undoEntry is what a merge changed in one object member: m[k] was v
// (had: present).
type undoEntry struct {
	m   map[string]any
	k   string
	v   any
	had bool
}

// rollback undoes the changes of one merge, newest first.
func rollback(undo []undoEntry) {
	for i := len(undo) - 1; i >= 0; i-- {
		u := undo[i]
		if u.had {
			u.m[u.k] = u.v
		} else {
			delete(u.m, u.k)
		}
	}
}

// mergeInPlace applies merge patch p (decoded) to target (nil: absent),
// whose canonical encoding has size bytes, as MergePatch does but changing
// target in place (logging to undo). It returns the result and the size
// of its canonical encoding.
func mergeInPlace(target map[string]any, size int64, p any, undo *[]undoEntry) (any, int64, error) {
	pm, ok := p.(map[string]any)
	if !ok {
		n, err := canonicalSize(p)
		return p, n, err
	}
	if target == nil {
		v := dropNulls(pm)
		n, err := canonicalSize(v)
		return v, n, err
	}
	d, err := mergeObject(target, pm, undo)
	return target, size + d, err
}

// mergeObject merges object patch p into object t in place and returns the
// change in the size of t's canonical encoding. Only what the patch
// touches is measured: members it adds or replaces, and those it drops.
func mergeObject(t, p map[string]any, undo *[]undoEntry) (int64, error) {
	var d int64
	members := len(t)
	for k, v := range p {
		old, had := t[k]
		if om, ok := old.(map[string]any); ok {
			if vm, ok := v.(map[string]any); ok {
				dd, err := mergeObject(om, vm, undo)
				if err != nil {
					return 0, err
				}
				d += dd
				continue
			}
		}
		if v == nil && !had {
			continue
		}
		var oldSize, newSize int64
		var err error
		if had {
			if oldSize, err = memberSize(k, old); err != nil {
				return 0, err
			}
		}
		*undo = append(*undo, undoEntry{m: t, k: k, v: old, had: had})
		if v == nil {
			delete(t, k)
		} else {
			if vm, ok := v.(map[string]any); ok {
				v = dropNulls(vm) // MergePatch onto a non-object: the patch without its nulls
			}
			t[k] = v
			if newSize, err = memberSize(k, v); err != nil {
				return 0, err
			}
		}
		d += newSize - oldSize
	}
	return d + commas(len(t)) - commas(members), nil
}

// dropNulls removes the null members of object m and of the objects in it
// (not in arrays), in place: what MergePatch makes of a patch merged onto
// nothing.
func dropNulls(m map[string]any) map[string]any {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(v)
		}
	}
	return m
}

// memberSize is the size of an object member's canonical encoding
// ("k":v), without the comma that separates it from the next.
func memberSize(k string, v any) (int64, error) {
	kn, err := canonicalSize(k)
	if err != nil {
		return 0, err
	}
	vn, err := canonicalSize(v)
	return kn + 1 + vn, err
}

// canonicalSize is the length of v's canonical encoding: measured by
// encoding it, so that it is exact whatever the escaping rules.
func canonicalSize(v any) (int64, error) {
	b, err := snapshot.MarshalCanonical(v)
	return int64(len(b)), err
}

// commas is the number of separators between n members.
func commas(n int) int64 { return int64(max(n-1, 0)) }

// Value returns the value as canonical JSON, nil when absent. The bytes
// may be shared with the ops applied: treat them as read-only.
func (f *Fold) Value() ([]byte, error) {
	if f.stale {
		b, err := snapshot.MarshalCanonical(f.doc)
		if err != nil {
			return nil, err
		}
		f.cur, f.stale, f.size = b, false, int64(len(b))
	}
	return f.cur, nil
}
