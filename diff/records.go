package diff

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/deltasync/deltasync/snapshot"
)

// Change is one record-level change between two versions. Old is nil for a
// new key, New is nil for a deleted key.
type Change struct {
	Key string          `json:"key"`
	Old json.RawMessage `json:"old,omitempty"`
	New json.RawMessage `json:"new,omitempty"`
}

// Deleted reports whether the change removes its key.
func (c *Change) Deleted() bool { return c.New == nil }

// WidenSpans widens every region of an edit script to whole records (a
// region starting or ending inside an oversize record takes its other
// pieces) and merges the regions that then touch: the stretches Records
// reads. oldCont and newCont tell whether chunk i (< oldLen, < newLen) of
// either list continues the record of the chunk before it; a holder of
// lists it reads lazily (a device's stored pages) passes their errors on.
func WidenSpans(regions []Region, oldLen, newLen int, oldCont, newCont func(i int) (bool, error)) ([]Span, error) {
	continued := func(at func(int) (bool, error), i, n int) (bool, error) {
		if i >= n {
			return false, nil
		}
		return at(i)
	}
	var out []Span
	for _, r := range regions {
		sp := Span(r)
		for sp.OldFrom > 0 && sp.NewFrom > 0 {
			ca, err := continued(oldCont, sp.OldFrom, oldLen)
			if err != nil {
				return nil, err
			}
			cb, err := continued(newCont, sp.NewFrom, newLen)
			if err != nil {
				return nil, err
			}
			if !ca && !cb {
				break
			}
			sp.OldFrom--
			sp.NewFrom--
		}
		for sp.OldTo < oldLen && sp.NewTo < newLen {
			cb, err := continued(newCont, sp.NewTo, newLen)
			if err != nil {
				return nil, err
			}
			if !cb {
				break
			}
			sp.OldTo++
			sp.NewTo++
		}
		if n := len(out); n > 0 && (sp.OldFrom <= out[n-1].OldTo || sp.NewFrom <= out[n-1].NewTo) {
			out[n-1].OldTo, out[n-1].NewTo = sp.OldTo, sp.NewTo
			continue
		}
		out = append(out, sp)
	}
	return out, nil
}

// Records computes the record-level changes from A to B by reading only the
// chunks in changed regions (plus, for oversize records, their other pieces):
// the cost is proportional to the change, not to the data set. ga reads A's
// chunks and gb B's (they may share a store).
func (s *Script) Records(ctx context.Context, ga, gb snapshot.ChunkGetter) ([]Change, error) {
	spans := s.Spans()
	var oldIdx, newIdx []int
	for _, sp := range spans {
		for i := sp.OldFrom; i < sp.OldTo; i++ {
			oldIdx = append(oldIdx, i)
		}
		for i := sp.NewFrom; i < sp.NewTo; i++ {
			newIdx = append(newIdx, i)
		}
	}
	oldRecs, err := decodeSpans(ctx, ga, oldIdx, func(sp Span) (int, int) { return sp.OldFrom, sp.OldTo }, spans)
	if err != nil {
		return nil, fmt.Errorf("read version %d: %w", s.A.Version, err) // ga is never used when A is nil
	}
	newRecs, err := decodeSpans(ctx, gb, newIdx, func(sp Span) (int, int) { return sp.NewFrom, sp.NewTo }, spans)
	if err != nil {
		return nil, fmt.Errorf("read version %d: %w", s.B.Version, err)
	}
	var out []Change
	for k := range spans {
		out = appendChanges(out, oldRecs[k], newRecs[k])
	}
	return out, nil
}

type kv struct {
	key   string
	value []byte
}

// decodeSpans reads the listed chunks and decodes each span's records.
func decodeSpans(ctx context.Context, g snapshot.ChunkGetter, idx []int, bounds func(Span) (int, int), spans []Span) ([][]kv, error) {
	out := make([][]kv, len(spans))
	if len(idx) == 0 {
		return out, nil
	}
	k := 0
	var dec *snapshot.RecordDecoder
	err := g.Chunks(ctx, idx, func(i int, raw []byte) error {
		for {
			from, to := bounds(spans[k])
			if i >= from && i < to {
				if i == from {
					dec = &snapshot.RecordDecoder{}
				}
				break
			}
			if dec != nil {
				if err := dec.Close(); err != nil {
					return err
				}
				dec = nil
			}
			k++
		}
		return dec.Feed(raw, func(key, value []byte) error {
			out[k] = append(out[k], kv{string(key), bytes.Clone(value)})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if dec != nil {
		if err := dec.Close(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// appendChanges merges two sorted record lists into changes.
func appendChanges(out []Change, a, b []kv) []Change {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j >= len(b) || i < len(a) && a[i].key < b[j].key:
			out = append(out, Change{Key: a[i].key, Old: a[i].value})
			i++
		case i >= len(a) || b[j].key < a[i].key:
			out = append(out, Change{Key: b[j].key, New: b[j].value})
			j++
		default:
			if !bytes.Equal(a[i].value, b[j].value) {
				out = append(out, Change{Key: a[i].key, Old: a[i].value, New: b[j].value})
			}
			i++
			j++
		}
	}
	return out
}

// Span is a stretch where two versions differ, widened to whole records:
// the records of A's chunks [OldFrom, OldTo) and of B's chunks [NewFrom,
// NewTo) are the same keys' records but for the changes, and every other
// record of B is in a chunk A holds at the same place in key order.
type Span struct{ OldFrom, OldTo, NewFrom, NewTo int }

// Spans returns the stretches Records reads, in stream order: every
// region widened to record boundaries (an oversize record's pieces span
// several chunks), the regions that then touch merged. A holder of both
// versions' chunks can compute the record changes itself from them (a
// device does, streaming, with memory bounded by a chunk).
func (s *Script) Spans() []Span {
	var ac []snapshot.ChunkRef
	if s.A != nil {
		ac = s.A.Chunks
	}
	bc := s.B.Chunks
	continued := func(c []snapshot.ChunkRef) func(int) (bool, error) {
		return func(i int) (bool, error) { return c[i].Continued, nil }
	}
	wide, _ := WidenSpans(s.Regions, len(ac), len(bc), continued(ac), continued(bc)) // no errors to return
	return wide
}
