package diff

import (
	"bytes"
	"context"
	"sort"

	"github.com/deltasync/deltasync/snapshot"
)

// group returns the chunks [from,to) of m that hold key's record, if m has
// it: the record-start chunk whose key range covers key plus the pieces
// continuing its last record. ok is false when no chunk can hold key.
func group(m *snapshot.Manifest, key string) (from, to int, ok bool) {
	if m == nil {
		return 0, 0, false
	}
	c := m.Chunks
	i := sort.Search(len(c), func(i int) bool { return c[i].FirstKey > key }) - 1
	if i < 0 {
		return 0, 0, false
	}
	for i > 0 && c[i].Continued {
		i--
	}
	j := i + 1
	for j < len(c) && c[j].Continued {
		j++
	}
	return i, j, true
}

// sameGroup reports whether the chunks that would hold key are identical in
// a and b, which proves key has the same value (or is absent) in both
// without reading anything.
func sameGroup(a, b *snapshot.Manifest, key string) bool {
	af, at, aok := group(a, key)
	bf, bt, bok := group(b, key)
	if aok != bok {
		return false
	}
	if !aok {
		return true
	}
	if at-af != bt-bf {
		return false
	}
	for k := 0; k < at-af; k++ {
		if a.Chunks[af+k].ID != b.Chunks[bf+k].ID {
			return false
		}
	}
	return true
}

// lookup reads the values of keys (sorted, unique) in version m (nil for
// version 0). Only the chunk groups holding them are read, in one call that
// coalesces neighbouring frames, so the cost follows the number of keys and
// not the size of the data set. Absent keys are missing from the map.
func lookup(ctx context.Context, g snapshot.ChunkGetter, m *snapshot.Manifest, keys []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(keys))
	if m == nil || len(keys) == 0 {
		return out, nil
	}
	type span struct{ from, to int }
	var spans []span
	var idx []int
	want := make(map[string]bool, len(keys))
	for _, k := range keys {
		from, to, ok := group(m, k)
		if !ok {
			continue
		}
		want[k] = true
		if n := len(spans); n > 0 && spans[n-1].from == from {
			continue
		}
		spans = append(spans, span{from, to})
		for i := from; i < to; i++ {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return out, nil
	}
	k := 0
	var dec *snapshot.RecordDecoder
	err := g.Chunks(ctx, idx, func(i int, raw []byte) error {
		for i >= spans[k].to {
			k++
		}
		if i == spans[k].from {
			dec = &snapshot.RecordDecoder{}
		}
		err := dec.Feed(raw, func(key, value []byte) error {
			if want[string(key)] {
				out[string(key)] = bytes.Clone(value)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if i == spans[k].to-1 {
			return dec.Close()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
