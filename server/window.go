package server

import (
	"context"

	"github.com/deltasync/deltasync/snapshot"
)

// windowGetter serves a delta pack's chunks: the first ones (the window)
// from memory, read and verified before the answer was committed to 200,
// the rest from the store as the pack is written.
//
// The window is what lets a damaged or missing object become a JSON error
// instead of a stream cut after the 200: a delta of a few edits fits in it
// whole; a bigger one (an initial sync) is verified up to the window and
// ends with an abort frame if a later chunk fails. It costs each sync
// request up to the window's bytes of memory until they are sent, and the
// time to read them before the first byte goes out (the reads themselves
// are not extra: the pack needs them anyway).
type windowGetter struct {
	rest snapshot.ChunkGetter
	idx  []int    // chunk indexes read ahead, in the order the pack sends them
	raw  [][]byte // their bytes; an entry is released once sent
	next int      // position in idx of the next chunk to serve from memory
}

var _ snapshot.ChunkGetter = (*windowGetter)(nil)

// readWindow reads and verifies the chunks of m listed in order, from the
// first, until budget raw bytes are read (at least one chunk when budget
// is positive; none when it is not).
func readWindow(ctx context.Context, r snapshot.ChunkGetter, m *snapshot.Manifest, order []int, budget int64) (*windowGetter, error) {
	n, size := 0, int64(0)
	for n < len(order) && size < budget {
		size += int64(m.Chunks[order[n]].Size)
		n++
	}
	w := &windowGetter{rest: r, idx: order[:n], raw: make([][]byte, n)}
	k := 0
	err := r.Chunks(ctx, w.idx, func(_ int, raw []byte) error {
		w.raw[k] = append([]byte(nil), raw...)
		k++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return w, nil
}

// Chunks serves idx, which the pack asks for in order: the leading
// indexes that are in the window from memory, the others from the store.
func (w *windowGetter) Chunks(ctx context.Context, idx []int, fn func(i int, raw []byte) error) error {
	k := 0
	for k < len(idx) && w.next < len(w.idx) && idx[k] == w.idx[w.next] {
		raw := w.raw[w.next]
		w.raw[w.next] = nil
		w.next++
		if err := fn(idx[k], raw); err != nil {
			return err
		}
		k++
	}
	if k == len(idx) {
		return nil
	}
	return w.rest.Chunks(ctx, idx[k:], fn)
}
