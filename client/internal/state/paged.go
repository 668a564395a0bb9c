package state

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/snapshot"
)

// Base is the synced version's chunk list as a delta reads it: page by
// page, where the change is, not whole (issue 13: a one-record delta of 64
// MB decoded its 8,000 entries, and built a second list of them, for the
// one it changed). It knows the pages' places (one small read each) and
// decodes a page the first time an entry of it is asked for.
//
// A Base belongs to one pull: it reads version Version of the file it was
// made from, and fails with ErrCorrupt once that is no longer the live
// version.
type Base struct {
	s     *Store
	f     *dataFile
	m     *snapshot.Manifest // the header: Chunks is nil
	n     int                // the header's chunk count
	pages []oldPage
	// whole: a slot of format 1 (one list, no pages), read whole.
	whole   *snapshot.Manifest
	wseqs   []uint64
	decoded map[int]*basePage // by page index
}

type basePage struct {
	chunks []snapshot.ChunkRef
	seqs   []uint64
}

// Base returns the synced version's chunk list, read on demand, or nil at
// version 0.
func (s *Store) Base() (*Base, error) {
	var b *Base
	err := s.viewTx(func(f *dataFile, tx *bolt.Tx) error {
		slot := liveSlot(tx)
		if slot == nil {
			return nil
		}
		v := getU64(slot, skVersion)
		if v == 0 {
			return nil
		}
		b = &Base{s: s, f: f, decoded: map[int]*basePage{}}
		var err error
		if pages := slot.Bucket(sbPages); pages == nil {
			b.whole, b.wseqs, err = readSlot(slot)
			b.m = b.whole
		} else if b.m, b.n, err = unmarshalHeaderOnly(slot.Get(skManifest)); err == nil {
			b.pages, err = listPages(pages)
		}
		if err == nil && b.m.Version != v {
			err = fmt.Errorf("manifest of version %d stored for version %d: %w", b.m.Version, v, ErrCorrupt)
		}
		if err == nil && b.Len() != b.count() {
			err = fmt.Errorf("chunk list of %d entries for %d chunks: %w", b.Len(), b.count(), ErrCorrupt)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("local manifest: %w", err)
	}
	return b, nil
}

// count is how many entries the pages hold.
func (b *Base) count() int {
	if b.whole != nil {
		return len(b.whole.Chunks)
	}
	if len(b.pages) == 0 {
		return 0
	}
	p := b.pages[len(b.pages)-1]
	return p.start + p.count
}

// Header returns the version's manifest without its chunk list.
func (b *Base) Header() *snapshot.Manifest { return b.m }

// Version is the version the list is of.
func (b *Base) Version() uint64 { return b.m.Version }

// Len is the number of chunks.
func (b *Base) Len() int {
	if b.whole != nil {
		return len(b.whole.Chunks)
	}
	return b.n
}

// Totals are the version's stream length and record count.
func (b *Base) Totals() (streamLen, records uint64) { return b.m.StreamLen, b.m.Records }

// Chunk returns entry i.
func (b *Base) Chunk(i int) (snapshot.ChunkRef, error) {
	p, k, err := b.at(i)
	if err != nil {
		return snapshot.ChunkRef{}, err
	}
	return p.chunks[k], nil
}

// Seq returns the seq of chunk i.
func (b *Base) Seq(i int) (uint64, error) {
	p, k, err := b.at(i)
	if err != nil {
		return 0, err
	}
	return p.seqs[k], nil
}

// at returns the decoded page holding entry i and i's place in it.
func (b *Base) at(i int) (*basePage, int, error) {
	if i < 0 || i >= b.Len() {
		return nil, 0, fmt.Errorf("chunk %d of %d: %w", i, b.Len(), ErrInvalid)
	}
	if b.whole != nil {
		return &basePage{b.whole.Chunks, b.wseqs}, i, nil
	}
	n := sort.Search(len(b.pages), func(n int) bool { return b.pages[n].start+b.pages[n].count > i })
	if p := b.decoded[n]; p != nil {
		return p, i - b.pages[n].start, nil
	}
	p := &basePage{}
	err := b.view(func(pages *bolt.Bucket) error {
		raw := pages.Get(u64(b.pages[n].key))
		if raw == nil {
			return fmt.Errorf("chunk list page %x is missing: %w", b.pages[n].key, ErrCorrupt)
		}
		if err := decodePage(raw, &p.chunks, &p.seqs); err != nil {
			return err
		}
		if len(p.seqs) != b.pages[n].count {
			return fmt.Errorf("chunk list page %x changed: %w", b.pages[n].key, ErrCorrupt)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	b.decoded[n] = p
	return p, i - b.pages[n].start, nil
}

// view runs fn with the pages of the live slot, still of this version.
func (b *Base) view(fn func(pages *bolt.Bucket) error) error {
	return b.f.db.View(func(tx *bolt.Tx) error {
		live := liveSlot(tx)
		if live == nil || getU64(live, skVersion) != b.m.Version {
			return fmt.Errorf("the local version is no longer %d: %w", b.m.Version, ErrCorrupt)
		}
		pages := live.Bucket(sbPages)
		if pages == nil {
			return fmt.Errorf("the chunk list of version %d is not paged: %w", b.m.Version, ErrCorrupt)
		}
		return fn(pages)
	})
}

// Raw returns old chunk i's bytes, checked against its SHA-256 (valid
// until the next read of the chunk cache).
func (b *Base) Raw(ctx context.Context, i int) ([]byte, error) {
	c, err := b.Chunk(i)
	if err != nil {
		return nil, err
	}
	seq, err := b.Seq(i)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var raw []byte
	err = b.f.db.View(func(tx *bolt.Tx) error {
		raw, err = b.s.loadChunk(tx.Bucket(dataChunks), b.f.gen, seq)
		if err == nil && sha256.Sum256(raw) != c.Sum {
			err = fmt.Errorf("stored chunk %d fails its SHA-256: %w", seq, ErrCorrupt)
		}
		return err
	})
	if err != nil {
		return nil, &snapshot.ChunkError{Op: "read local", ID: c.ID, Err: err}
	}
	return raw, nil
}

// find returns the index of an old chunk with c's ID, -1 if none. The
// list is sorted by first key: a binary search reads a few pages.
func (b *Base) find(c *snapshot.ChunkRef) (int, error) {
	var err error
	i := sort.Search(b.Len(), func(i int) bool {
		o, e := b.Chunk(i)
		if e != nil {
			err = e
			return true
		}
		return o.FirstKey >= c.FirstKey
	})
	for ; err == nil && i < b.Len(); i++ {
		o, e := b.Chunk(i)
		if e != nil {
			return -1, e
		}
		if o.FirstKey != c.FirstKey {
			break
		}
		if o.ID == c.ID {
			return i, nil
		}
	}
	return -1, err
}

// All returns the whole list and its seqs, read-only (a big delta, an old
// pack format: what costs O(list) anyway). The store keeps the last list
// read (slotCache), so a running device reads it once.
func (b *Base) All() (*snapshot.Manifest, []uint64, error) {
	if b.whole != nil {
		return b.whole, b.wseqs, nil
	}
	var m *snapshot.Manifest
	var seqs []uint64
	err := b.f.db.View(func(tx *bolt.Tx) error {
		live := liveSlot(tx)
		if live == nil || getU64(live, skVersion) != b.m.Version {
			return fmt.Errorf("the local version is no longer %d: %w", b.m.Version, ErrCorrupt)
		}
		var err error
		m, seqs, err = b.s.readLive(live, b.f.gen, b.m.Version)
		return err
	})
	if err == nil && (len(seqs) != b.Len() || m.Version != b.m.Version) {
		err = fmt.Errorf("chunk list of %d entries for %d chunks: %w", len(seqs), b.Len(), ErrCorrupt)
	}
	if err != nil {
		return nil, nil, err
	}
	return m, seqs, nil
}

// AllChunks is All's list (wire.BaseLister).
func (b *Base) AllChunks() ([]snapshot.ChunkRef, error) {
	m, _, err := b.All()
	if err != nil {
		return nil, err
	}
	return m.Chunks, nil
}

// walk calls fn with the SHA-256 and seq of every entry, in order,
// without decoding the entries (no key is built): the stream hash of a
// version checks every chunk's hash, whatever a delta changed.
func (b *Base) walk(fn func(i int, sum *[32]byte, seq uint64)) error {
	if b.whole != nil {
		for i := range b.whole.Chunks {
			fn(i, &b.whole.Chunks[i].Sum, b.wseqs[i])
		}
		return nil
	}
	i := 0
	return b.view(func(pages *bolt.Bucket) error {
		for _, p := range b.pages {
			raw := pages.Get(u64(p.key))
			if raw == nil {
				return fmt.Errorf("chunk list page %x is missing: %w", p.key, ErrCorrupt)
			}
			n, err := scanPage(raw, func(sum *[32]byte, seq uint64) { fn(i, sum, seq); i++ })
			if err != nil {
				return err
			}
			if n != p.count {
				return fmt.Errorf("chunk list page %x changed: %w", p.key, ErrCorrupt)
			}
		}
		return nil
	})
}

var errBadEntry = fmt.Errorf("chunk list page: entry: %w", ErrCorrupt)

// scanPage calls fn with each entry's SHA-256 and seq of a page (the
// encoding of encodePage) and returns the count.
func scanPage(page []byte, fn func(sum *[32]byte, seq uint64)) (int, error) {
	bad := errBadEntry
	count, err := pageCount(page)
	if err != nil {
		return 0, err
	}
	_, k := binary.Uvarint(page)
	d := page[k:]
	num := func() uint64 {
		v, n := binary.Uvarint(d)
		if n <= 0 {
			d = nil
			return 0
		}
		d = d[n:]
		return v
	}
	var sum [32]byte
	for range count {
		if len(d) < 48 {
			return 0, bad
		}
		copy(sum[:], d[16:48])
		d = d[48:]
		num() // size
		num() // records
		if len(d) == 0 {
			return 0, bad
		}
		d = d[1:] // flags
		num()     // shared
		sl := num()
		if d == nil || sl > uint64(len(d)) {
			return 0, bad
		}
		d = d[sl:]
		seq := num()
		if d == nil {
			return 0, bad
		}
		fn(&sum, seq)
	}
	if len(d) != 0 {
		return 0, bad
	}
	return count, nil
}
