package state

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// ListEdit is a delta's new chunk list as the regions where it differs from
// the synced version's (a Base): outside the regions, new chunk j is the
// old chunk the run pairs it with; in them, the entries, in order. A delta
// given so is installed at a cost that follows the regions, not the list
// (StartDelta): the old list is read where the change is, the new one is
// never built, and the chunk list's pages are rewritten where it changed.
// Only the stream hash reads every entry's SHA-256, from the pages as they
// lie (no entry is decoded).
type ListEdit struct {
	Regions []diff.Region
	Entries []snapshot.ChunkRef
	Len     int // of the new list

	off []int // per region, its first entry
}

func (e *ListEdit) offsets() []int {
	if e.off == nil {
		e.off = make([]int, len(e.Regions))
		k := 0
		for r, rg := range e.Regions {
			e.off[r], k = k, k+rg.NewTo-rg.NewFrom
		}
	}
	return e.off
}

// pos returns new chunk j's entry, -1 if j is kept from the old list.
func (e *ListEdit) pos(j int) int {
	r := sort.Search(len(e.Regions), func(r int) bool { return e.Regions[r].NewTo > j })
	if r == len(e.Regions) || e.Regions[r].NewFrom > j {
		return -1
	}
	return e.offsets()[r] + j - e.Regions[r].NewFrom
}

// oldOf returns the old chunk that new chunk j (kept) is.
func (e *ListEdit) oldOf(j int) int {
	r := sort.Search(len(e.Regions), func(r int) bool { return e.Regions[r].NewTo > j })
	if r == 0 {
		return j
	}
	p := e.Regions[r-1]
	return p.OldTo + j - p.NewTo
}

// check verifies that the regions are ordered, within both lists, and
// hold the entries.
func (e *ListEdit) check(oldLen int) error {
	i, j, k := 0, 0, 0
	for _, r := range e.Regions {
		if r.OldFrom < i || r.OldTo < r.OldFrom || r.NewTo < r.NewFrom || r.NewFrom-j != r.OldFrom-i {
			return fmt.Errorf("edit region %+v after old %d, new %d: %w", r, i, j, ErrInvalid)
		}
		i, j, k = r.OldTo, r.NewTo, k+r.NewTo-r.NewFrom
	}
	if i > oldLen || e.Len-j != oldLen-i || k != len(e.Entries) {
		return fmt.Errorf("edit of %d entries to %d chunks from %d: %w", len(e.Entries), e.Len, oldLen, ErrInvalid)
	}
	return nil
}

// StartDelta begins (or, with resume, continues) storing a delta given as
// an edit of base, the synced version, into version to.
func (s *Store) StartDelta(base *Base, to uint64, e *ListEdit, resume *Marker) (*Download, error) {
	from := base.Version()
	if err := e.check(base.Len()); err != nil {
		return nil, fmt.Errorf("download %d→%d: %w", from, to, err)
	}
	d := &Download{s: s, chunks: e.Entries, base: base, edit: e, mk: Marker{From: from, To: to},
		seqs: make([]uint64, len(e.Entries)), limChunks: min(firstChunks, s.batchChunks), limBytes: min(firstBytes, s.batchBytes)}
	s.dataMu.RLock()
	d.f = s.data
	s.dataMu.RUnlock()
	var err error
	switch {
	case d.f != base.f:
		err = fmt.Errorf("the data file changed since version %d was read: %w", from, ErrCorrupt)
	case resume == nil:
		err = d.begin()
	default:
		d.mk = *resume
		err = d.resume()
	}
	if err != nil {
		return nil, fmt.Errorf("download %d→%d: %w", from, to, err)
	}
	return d, nil
}

// pos returns chunk j's place in d.chunks (the new list, or the entries of
// an edit), -1 if it has none.
func (d *Download) pos(j int) int {
	if d.edit != nil {
		return d.edit.pos(j)
	}
	if j < 0 || j >= len(d.chunks) {
		return -1
	}
	return j
}

// finishEdit is Finish for a delta given as an edit.
func (d *Download) finishEdit(ctx context.Context, m *snapshot.Manifest, announced [32]byte) (*Installed, error) {
	if err := d.resolveEdit(); err != nil {
		return nil, err
	}
	sum, drop, err := d.editHash()
	if err != nil {
		return nil, err
	}
	if sum != announced {
		return nil, fmt.Errorf("version %d rebuilt with stream hash %x, the server announced %x: %w", m.Version, sum, announced, ErrCorrupt)
	}
	m.StreamHash, m.Chunks = sum, nil
	in := &Installed{From: d.mk.From, Version: m.Version}
	spans, err := d.editSpans()
	if err != nil {
		return nil, err
	}
	var plan indexPlan
	err = d.f.db.View(func(tx *bolt.Tx) error {
		plan, err = d.planSpans(ctx, tx.Bucket(dataChunks), spans, d.base.Seq, d.newSeq, in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record changes %d→%d: %w", d.mk.From, m.Version, err)
	}
	if plan.overflow {
		return in, d.installBigEdit(ctx, m)
	}
	err = d.switchInPlace(d.mk.From, plan.writes, drop, func(live *bolt.Bucket) error {
		return d.updatePages(live, m)
	})
	return in, err
}

// newSeq returns the seq of new chunk j.
func (d *Download) newSeq(j int) (uint64, error) {
	if k := d.edit.pos(j); k >= 0 {
		return d.seqs[k], nil
	}
	return d.base.Seq(d.edit.oldOf(j))
}

// newChunk returns entry j of the new list.
func (d *Download) newChunk(j int) (snapshot.ChunkRef, error) {
	if k := d.edit.pos(j); k >= 0 {
		return d.chunks[k], nil
	}
	return d.base.Chunk(d.edit.oldOf(j))
}

// resolveEdit finds the seq and SHA-256 of the entries not received:
// repeats of received ones, or chunks the old version holds elsewhere
// (found by first key, as the server's diff finds them).
func (d *Download) resolveEdit() error {
	var byID map[snapshot.ChunkID]int
	for k := range d.chunks {
		if d.seqs[k] != 0 {
			continue
		}
		if byID == nil {
			byID = map[snapshot.ChunkID]int{}
			for k2, s := range d.seqs {
				if s != 0 {
					byID[d.chunks[k2].ID] = k2
				}
			}
		}
		ch := &d.chunks[k]
		if k2, ok := byID[ch.ID]; ok {
			d.seqs[k], ch.Sum = d.seqs[k2], d.chunks[k2].Sum
			continue
		}
		i, err := d.base.find(ch)
		if err != nil {
			return err
		}
		if i < 0 {
			return fmt.Errorf("chunk %s of version %d is neither received nor held: %w", ch.ID, d.mk.To, ErrCorrupt)
		}
		old, err := d.base.Chunk(i)
		if err != nil {
			return err
		}
		if d.seqs[k], err = d.base.Seq(i); err != nil {
			return err
		}
		ch.Sum = old.Sum
		byID[ch.ID] = k
	}
	return nil
}

// editHash computes the new version's stream hash (the old entries'
// SHA-256s read from the pages, the regions' from the entries) and the
// seqs of the old chunks the new version no longer uses.
func (d *Download) editHash() ([32]byte, []uint64, error) {
	e := d.edit
	cand := map[uint64]bool{}
	for _, r := range e.Regions {
		for i := r.OldFrom; i < r.OldTo; i++ {
			seq, err := d.base.Seq(i)
			if err != nil {
				return [32]byte{}, nil, err
			}
			cand[seq] = true
		}
	}
	for _, s := range d.seqs {
		delete(cand, s)
	}
	// The SHA-256s go to the hash in blocks: a Write per 32 bytes costs
	// 40% more (0.25 ms a MB of them, 256 MB of data).
	h := sha256.New()
	buf := make([]byte, 0, 8<<10)
	write := func(s []byte) {
		if len(buf)+len(s) > cap(buf) {
			h.Write(buf)
			buf = buf[:0]
		}
		buf = append(buf, s...)
	}
	off := e.offsets()
	r, skipTo := 0, 0
	emit := func(i int) {
		for ; r < len(e.Regions) && e.Regions[r].OldFrom == i; r++ {
			for _, c := range e.Entries[off[r] : off[r]+e.Regions[r].NewTo-e.Regions[r].NewFrom] {
				write(c.Sum[:])
			}
			skipTo = e.Regions[r].OldTo
		}
	}
	err := d.base.walk(func(i int, sum *[32]byte, seq uint64) {
		emit(i)
		if i >= skipTo {
			write(sum[:])
			if len(cand) > 0 {
				delete(cand, seq)
			}
		}
	})
	if err != nil {
		return [32]byte{}, nil, err
	}
	emit(d.base.Len())
	h.Write(buf)
	var sum [32]byte
	h.Sum(sum[:0])
	drop := make([]uint64, 0, len(cand))
	for s := range cand {
		drop = append(drop, s)
	}
	slices.Sort(drop)
	return sum, drop, nil
}

// editSpans is diff.Script.Spans for an edit: each region widened to whole
// records (a region starting or ending inside an oversize record takes its
// other pieces), overlapping ones merged (diff.WidenSpans), the chunks'
// flags read from the stored pages and the edit's entries.
func (d *Download) editSpans() ([]diff.Span, error) {
	flag := func(at func(int) (snapshot.ChunkRef, error)) func(int) (bool, error) {
		return func(i int) (bool, error) {
			c, err := at(i)
			return c.Continued, err
		}
	}
	return diff.WidenSpans(d.edit.Regions, d.base.Len(), d.edit.Len, flag(d.base.Chunk), flag(d.newChunk))
}

// installBigEdit installs an edit that changes more index entries than
// the live slot takes in place: its lists are built whole (what a change
// this size costs anyway) and it is installed as a big list delta is.
func (d *Download) installBigEdit(ctx context.Context, m *snapshot.Manifest) error {
	old, oldSeqs, err := d.base.All()
	if err != nil {
		return err
	}
	chunks := make([]snapshot.ChunkRef, 0, d.edit.Len)
	seqs := make([]uint64, 0, d.edit.Len)
	i, off := 0, d.edit.offsets()
	for r, rg := range d.edit.Regions {
		chunks, seqs = append(chunks, old.Chunks[i:rg.OldFrom]...), append(seqs, oldSeqs[i:rg.OldFrom]...)
		n := rg.NewTo - rg.NewFrom
		chunks, seqs = append(chunks, d.chunks[off[r]:off[r]+n]...), append(seqs, d.seqs[off[r]:off[r]+n]...)
		i = rg.OldTo
	}
	chunks, seqs = append(chunks, old.Chunks[i:]...), append(seqs, oldSeqs[i:]...)
	m.Chunks = chunks
	if err := d.Flush(); err != nil {
		return err
	}
	if err := d.rebuildIndex(ctx, m, seqs); err != nil {
		return err
	}
	return d.switchTo(m, seqs)
}

// updatePages writes the new list over the old one's pages in the live
// slot: the pages holding a changed chunk (or next to a change: a
// stretch of a few chunks joins its neighbour) are replaced by pages of
// the new chunks between the kept ones; then the header.
func (d *Download) updatePages(live *bolt.Bucket, m *snapshot.Manifest) error {
	pages := live.Bucket(sbPages)
	if pages == nil || d.base.whole != nil || len(d.base.pages) == 0 {
		return d.writeWhole(live, m)
	}
	old := slices.Clone(d.base.pages)
	d.markDirty(old)
	per := d.s.pageChunks
	for d.joinSmallEdit(old, per) {
	}
	err := d.rewriteEdit(pages, old, per)
	if err == errNoRoom {
		return d.writeWhole(live, m)
	}
	if err != nil {
		return err
	}
	return putHeaderN(live, m, d.edit.Len)
}

// writeWhole writes the new list in full (no gap left between two pages'
// keys, or a list not paged yet).
func (d *Download) writeWhole(live *bolt.Bucket, m *snapshot.Manifest) error {
	chunks, seqs, err := d.newRange(0, d.edit.Len)
	if err != nil {
		return err
	}
	full := *m
	full.Chunks = chunks
	return writeSlot(live, &full, seqs, d.s.pageChunks)
}

// newRange returns new chunks [from, to) and their seqs.
func (d *Download) newRange(from, to int) ([]snapshot.ChunkRef, []uint64, error) {
	chunks := make([]snapshot.ChunkRef, 0, to-from)
	seqs := make([]uint64, 0, to-from)
	for j := from; j < to; j++ {
		c, err := d.newChunk(j)
		if err != nil {
			return nil, nil, err
		}
		s, err := d.newSeq(j)
		if err != nil {
			return nil, nil, err
		}
		chunks, seqs = append(chunks, c), append(seqs, s)
	}
	return chunks, seqs, nil
}

// markDirty marks the pages a region touches: those holding a replaced
// chunk, and for an insertion between two chunks the page before it (the
// first page for one at the start).
func (d *Download) markDirty(old []oldPage) {
	for _, r := range d.edit.Regions {
		for n := range old {
			p := &old[n]
			end := p.start + p.count
			switch {
			case r.OldTo > r.OldFrom:
				p.dirty = p.dirty || r.OldFrom < end && r.OldTo > p.start
			case r.OldFrom == 0:
				p.dirty = p.dirty || n == 0
			default:
				p.dirty = p.dirty || r.OldFrom > p.start && r.OldFrom <= end
			}
		}
	}
}

// newPos maps an old position at the edge of a stretch of dirty pages to
// the new list: past every region that ends at or before it (0 stays 0).
func (d *Download) newPos(i int) int {
	if i == 0 {
		return 0
	}
	j := i
	for _, r := range d.edit.Regions {
		if r.OldTo <= i {
			j += (r.NewTo - r.NewFrom) - (r.OldTo - r.OldFrom)
		}
	}
	return j
}

// dirtyRuns calls fn for each stretch of dirty pages [a, b) (page
// indexes).
func dirtyRuns(old []oldPage, fn func(a, b int) error) error {
	for a := 0; a < len(old); {
		if !old[a].dirty {
			a++
			continue
		}
		b := a
		for b < len(old) && old[b].dirty {
			b++
		}
		if err := fn(a, b); err != nil {
			return err
		}
		a = b
	}
	return nil
}

// joinSmallEdit marks dirty a kept page next to a stretch of dirty pages
// whose new chunks fill less than a quarter page (the one after it, else
// the one before), so the list does not crumble into small pages over many
// deltas. It reports whether it marked one.
func (d *Download) joinSmallEdit(old []oldPage, per int) bool {
	marked := false
	_ = dirtyRuns(old, func(a, b int) error {
		if marked {
			return nil
		}
		end := old[b-1].start + old[b-1].count
		n := d.newPos(end) - d.newPos(old[a].start)
		if b == len(old) {
			n = d.edit.Len - d.newPos(old[a].start)
		}
		if n <= 0 || n >= per/4 {
			return nil
		}
		switch {
		case b < len(old):
			old[b].dirty, marked = true, true
		case a > 0:
			old[a-1].dirty, marked = true, true
		}
		return nil
	})
	return marked
}

// rewriteEdit replaces each stretch of dirty pages by pages of its new
// chunks, keyed between the kept pages around it.
func (d *Download) rewriteEdit(pages *bolt.Bucket, old []oldPage, per int) error {
	return dirtyRuns(old, func(a, b int) error {
		for _, p := range old[a:b] {
			if err := pages.Delete(u64(p.key)); err != nil {
				return err
			}
		}
		from, to := d.newPos(old[a].start), d.edit.Len
		if b < len(old) {
			to = d.newPos(old[b].start)
		}
		lo, hi := uint64(0), uint64(1<<64-1)
		if a > 0 {
			lo = old[a-1].key
		}
		if b < len(old) {
			hi = old[b].key
		}
		chunks, seqs, err := d.newRange(from, to)
		if err != nil {
			return err
		}
		return fillGap(pages, lo, hi, chunks, seqs, per)
	})
}
