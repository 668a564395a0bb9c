package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"sort"
)

// Edit is one record-level change for ApplyEdits.
type Edit struct {
	Key    string
	Value  []byte // canonical JSON; ignored for deletes
	Delete bool
}

// ApplyEdits builds the next version from parent by applying edits (sorted
// by key, one per key). Only the neighbourhood of the edited keys is read and
// re-chunked: chunking restarts fresh at every chunk boundary, so starting at
// the boundary before an edit and stopping where the new boundaries rejoin
// the old ones yields exactly the chunk list a full Build of the edited data
// set would, at a cost that follows the edit, not the data set. New chunks go
// into one pack (more only if they exceed the pack size).
func ApplyEdits(ctx context.Context, s CreateStore, opts BuildOptions, parent *Manifest, edits []Edit) (*BuildResult, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	for i := range edits {
		if err := ValidateKey(edits[i].Key); err != nil {
			return nil, err
		}
		if i > 0 && edits[i].Key <= edits[i-1].Key {
			return nil, fmt.Errorf("edit %q: keys not sorted or duplicated: %w", edits[i].Key, ErrInvalid)
		}
		if !edits[i].Delete && len(edits[i].Value) > MaxValueLen {
			return nil, fmt.Errorf("edit %q: value of %d bytes exceeds %d: %w", edits[i].Key, len(edits[i].Value), MaxValueLen, ErrInvalid)
		}
	}
	if parent != nil && parent.Chunker != opts.Chunker {
		// Different chunking: no old boundary can be reused.
		return nil, fmt.Errorf("apply edits: parent chunked with %+v, options say %+v: %w", parent.Chunker, opts.Chunker, ErrInvalid)
	}
	a := &applier{b: newBuild(s, opts, parent), r: nil, edits: edits}
	if parent != nil {
		a.r = NewReader(s, parent, opts.Secret)
		a.chunks = parent.Chunks
		a.b.m.Chunks = make([]ChunkRef, 0, len(parent.Chunks)+len(edits)+8)
		// Chunks are sorted by first key: a new chunk equal to an old one
		// is found by binary search, without indexing the whole parent.
		a.b.known = func(id ChunkID, firstKey string) *ChunkRef {
			i := sort.Search(len(a.chunks), func(i int) bool { return a.chunks[i].FirstKey >= firstKey })
			for ; i < len(a.chunks) && a.chunks[i].FirstKey == firstKey; i++ {
				if a.chunks[i].ID == id {
					return &a.chunks[i]
				}
			}
			return nil
		}
	}
	if err := a.run(ctx); err != nil {
		return nil, err
	}
	if err := a.b.flushPack(ctx); err != nil {
		return nil, err
	}
	for i := range a.b.m.Chunks {
		a.b.m.StreamLen += uint64(a.b.m.Chunks[i].Size)
		a.b.m.Records += uint64(a.b.m.Chunks[i].Records)
	}
	return a.b.result(), nil
}

type applier struct {
	b      *build
	r      *Reader
	chunks []ChunkRef
	edits  []Edit
	e      int // next edit
	ch     *Chunker
	seq    int
}

// chunkFor returns the index of the record-start chunk whose records hold
// (or would hold) key.
func (a *applier) chunkFor(key string) int {
	i := sort.Search(len(a.chunks), func(i int) bool { return a.chunks[i].FirstKey > key }) - 1
	for i > 0 && a.chunks[i].Continued {
		i--
	}
	return max(i, 0)
}

// group returns the end of the chunk group starting at i: a record-start
// chunk plus the pieces continuing its last record.
func (a *applier) group(i int) int {
	j := i + 1
	for j < len(a.chunks) && a.chunks[j].Continued {
		j++
	}
	return j
}

// keep reuses the parent's chunks [from,to) as they are.
func (a *applier) keep(from, to int) {
	for i := from; i < to; i++ {
		ref := a.chunks[i]
		ref.Pack = a.b.parentPackIndex(ref.Pack)
		a.b.m.Chunks = append(a.b.m.Chunks, ref)
	}
}

func (a *applier) run(ctx context.Context) error {
	var err error
	a.ch, err = NewChunker(a.b.opts.Chunker, func(c ChunkData) error { return a.emit(ctx, c) })
	if err != nil {
		return err
	}
	i := 0
	active := false
	regionStart := 0
	for i < len(a.chunks) {
		if !active {
			if a.e == len(a.edits) {
				a.keep(i, len(a.chunks))
				return nil
			}
			c := max(a.chunkFor(a.edits[a.e].Key), i)
			a.keep(i, c)
			i, active, regionStart = c, true, c
		}
		end := a.group(i)
		data, err := a.fetch(ctx, i, end)
		if err != nil {
			return err
		}
		if i > regionStart && (a.e == len(a.edits) || a.chunkFor(a.edits[a.e].Key) > i) {
			// The rest of this stretch is unedited up to the next edit's
			// chunk. If the new chunking has a boundary right here, it has
			// rejoined the old one: everything from chunk i on is reused.
			_, _, n, err := DecodeRecord(data)
			if err != nil || n == 0 {
				return &ObjectError{Op: "read chunk group", Key: ManifestKey(a.b.parent.Org, a.b.parent.User, a.b.parent.Version),
					Err: fmt.Errorf("chunk %d does not start with a whole record: %w", i, ErrCorrupt)}
			}
			if a.ch.StartsChunk(n) {
				if err := a.ch.Close(); err != nil {
					return err
				}
				active = false
				continue
			}
		}
		if err := a.feed(data); err != nil {
			return err
		}
		i = end
	}
	// Past the old data: remaining edits append at the end.
	for ; a.e < len(a.edits); a.e++ {
		if err := a.add(&a.edits[a.e]); err != nil {
			return err
		}
	}
	return a.ch.Close()
}

// fetch returns the raw bytes of chunks [from,to), verified.
func (a *applier) fetch(ctx context.Context, from, to int) ([]byte, error) {
	idx := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		idx = append(idx, i)
	}
	var data []byte
	err := a.r.Chunks(ctx, idx, func(_ int, raw []byte) error {
		data = append(data, raw...)
		return nil
	})
	return data, err
}

// feed decodes old records and feeds them, merged with the pending edits,
// to the chunker.
func (a *applier) feed(data []byte) error {
	d := &RecordDecoder{}
	err := d.Feed(data, func(key, value []byte) error {
		k := string(key)
		for a.e < len(a.edits) && a.edits[a.e].Key < k {
			if err := a.add(&a.edits[a.e]); err != nil {
				return err
			}
			a.e++
		}
		if a.e < len(a.edits) && a.edits[a.e].Key == k {
			err := a.add(&a.edits[a.e])
			a.e++
			return err
		}
		return a.ch.Add(k, value)
	})
	if err != nil {
		return err
	}
	return d.Close()
}

func (a *applier) add(e *Edit) error {
	if e.Delete {
		return nil
	}
	return a.ch.Add(e.Key, e.Value)
}

func (a *applier) emit(ctx context.Context, c ChunkData) error {
	j := &chunkJob{seq: a.seq, data: bytes.Clone(c.Data), first: c.FirstKey, cont: c.Continued, recs: c.Records}
	a.seq++
	j.id = a.b.hasher.Sum(j.data)
	j.sum = sha256.Sum256(j.data)
	if a.b.known(j.id, j.first) == nil {
		j.stored = Compress(nil, j.data)
	}
	return a.b.collect(ctx, j)
}
