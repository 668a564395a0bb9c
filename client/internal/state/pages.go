package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// A slot's chunk list is kept in pages, so that a delta rewrites the pages
// it changes and not the whole list: a one-record delta of a 64 MB data
// set wrote its 480 KB in full (data format 1), now one page of about 15
// KB and the small header.
//
//	skManifest: "DSLM", format byte 2, uvarint length, header JSON
//	  (localHeader: the manifest without its chunk list; Chunks counts it)
//	sbPages: order key (big-endian uint64) -> page: uvarint count, then per
//	  chunk the entry of the format-1 encoding (ID, SHA-256, size, records,
//	  flags, shared prefix with the page's previous first key, suffix)
//	  followed by uvarint seq
//
// Pages are read in key order. Keys leave gaps (a full write spaces them
// 2^32 apart), so a delta puts the pages it rewrites between the unchanged
// ones around them; when a gap is used up, the list is written in full
// again.
const pagedManifestFormat = 2

// pageChunks is the most chunks a page holds (about 15 KB: four of
// bbolt's pages); Store.pageChunks, which tests make small.
const pageChunks = 256

// maxPageChunks bounds a stored page's count (a damaged count must not
// make a reader allocate without bound).
const maxPageChunks = 1 << 16

// pageKeyStep spaces the keys of a full write.
const pageKeyStep = 1 << 32

var sbPages = []byte("pages")

// errNoRoom: no key is left between two pages (a full write follows).
var errNoRoom = errors.New("no page key left")

// marshalHeader encodes m's header for a list of n chunks.
func marshalHeader(m *snapshot.Manifest, n int) ([]byte, error) {
	hj, err := json.Marshal(localHeader{m.Org, m.User, m.Version, m.Parent, m.ChunkerName, m.ChunkerVersion,
		m.Chunker, m.Records, m.StreamLen, m.StreamHash, m.CreatedUnix, n})
	if err != nil {
		return nil, err
	}
	b := append([]byte(localManifestMagic), pagedManifestFormat)
	b = binary.AppendUvarint(b, uint64(len(hj)))
	return append(b, hj...), nil
}

// unmarshalHeader decodes a header, with room in Chunks for its list.
func unmarshalHeader(data []byte) (*snapshot.Manifest, error) {
	m, n, err := unmarshalHeaderOnly(data)
	if err != nil {
		return nil, err
	}
	m.Chunks = make([]snapshot.ChunkRef, 0, min(n, 1<<20))
	return m, nil
}

// unmarshalHeaderOnly decodes a header and returns the length of its list
// (Chunks is nil: a Base reads the list page by page).
func unmarshalHeaderOnly(data []byte) (*snapshot.Manifest, int, error) {
	if len(data) < 5 || string(data[:4]) != localManifestMagic || data[4] != pagedManifestFormat {
		return nil, 0, fmt.Errorf("manifest header: magic: %w", ErrCorrupt)
	}
	hl, n := binary.Uvarint(data[5:])
	if n <= 0 || hl != uint64(len(data)-5-n) {
		return nil, 0, fmt.Errorf("manifest header: length: %w", ErrCorrupt)
	}
	var h localHeader
	if err := json.Unmarshal(data[5+n:], &h); err != nil || h.Chunks < 0 {
		return nil, 0, fmt.Errorf("manifest header: %w", ErrCorrupt)
	}
	return &snapshot.Manifest{Org: h.Org, User: h.User, Version: h.Version, Parent: h.Parent,
		ChunkerName: h.ChunkerName, ChunkerVersion: h.ChunkerVersion, Chunker: h.Chunker,
		Records: h.Records, StreamLen: h.StreamLen, StreamHash: h.StreamHash, CreatedUnix: h.CreatedUnix,
		Packs: []string{"local"}}, h.Chunks, nil
}

// encodePage encodes chunks and their seqs as one page.
func encodePage(chunks []snapshot.ChunkRef, seqs []uint64) []byte {
	b := binary.AppendUvarint(make([]byte, 0, 8+len(chunks)*64), uint64(len(chunks)))
	prev := ""
	for i := range chunks {
		c := &chunks[i]
		b = appendChunkRef(b, c, prev)
		b = binary.AppendUvarint(b, seqs[i])
		prev = c.FirstKey
	}
	return b
}

// pageCount reads a page's chunk count.
func pageCount(page []byte) (int, error) {
	n, k := binary.Uvarint(page)
	if k <= 0 || n > maxPageChunks {
		return 0, fmt.Errorf("chunk list page: count: %w", ErrCorrupt)
	}
	return int(n), nil
}

// decodePage appends a page's chunks (nil: not wanted) and seqs.
func decodePage(page []byte, chunks *[]snapshot.ChunkRef, seqs *[]uint64) error {
	return new(entryReader).page(page, chunks, seqs)
}

// page is decodePage with r's buffers (reused for a list's pages).
func (r *entryReader) page(page []byte, chunks *[]snapshot.ChunkRef, seqs *[]uint64) error {
	bad := func(what string) error { return fmt.Errorf("chunk list page: %s: %w", what, ErrCorrupt) }
	count, err := pageCount(page)
	if err != nil {
		return err
	}
	_, k := binary.Uvarint(page)
	*r = entryReader{d: page[k:], keys: chunks != nil, buf: r.buf[:0], ends: r.ends[:0]}
	first := 0
	if chunks != nil {
		first = len(*chunks)
		*chunks = slices.Grow(*chunks, min(count, len(r.d)/50))
	}
	for range count {
		var c snapshot.ChunkRef
		if what := r.entry(&c); what != "" {
			return bad(what)
		}
		seq := r.num()
		if r.d == nil {
			return bad("seq")
		}
		if chunks != nil {
			*chunks = append(*chunks, c)
		}
		*seqs = append(*seqs, seq)
	}
	if len(r.d) != 0 {
		return bad("trailing data")
	}
	if chunks != nil {
		r.setKeys((*chunks)[first:])
	}
	return nil
}

// readSlot returns a slot's manifest and the seqs of its chunks, in
// either layout (pages, or format 1's one value of each).
func readSlot(slot *bolt.Bucket) (*snapshot.Manifest, []uint64, error) {
	pages := slot.Bucket(sbPages)
	if pages == nil {
		m, err := unmarshalManifest(slot.Get(skManifest))
		if err != nil {
			return nil, nil, err
		}
		seqs, err := seqList(slot.Get(skSeqs), len(m.Chunks))
		return m, seqs, err
	}
	m, err := unmarshalHeader(slot.Get(skManifest))
	if err != nil {
		return nil, nil, err
	}
	want := cap(m.Chunks)
	seqs := make([]uint64, 0, want)
	r := &entryReader{}
	err = pages.ForEach(func(_, page []byte) error { return r.page(page, &m.Chunks, &seqs) })
	if err == nil && len(m.Chunks) != want {
		err = fmt.Errorf("chunk list of %d entries for %d chunks: %w", len(m.Chunks), want, ErrCorrupt)
	}
	if err != nil {
		return nil, nil, err
	}
	return m, seqs, nil
}

// slotSeqs returns the seqs of a slot's chunks, want of them.
func slotSeqs(slot *bolt.Bucket, want int) ([]uint64, error) {
	pages := slot.Bucket(sbPages)
	if pages == nil {
		return seqList(slot.Get(skSeqs), want)
	}
	seqs := make([]uint64, 0, want)
	err := pages.ForEach(func(_, page []byte) error { return decodePage(page, nil, &seqs) })
	if err == nil && len(seqs) != want {
		err = fmt.Errorf("chunk list of %d entries for %d chunks: %w", len(seqs), want, ErrCorrupt)
	}
	return seqs, err
}

// slotSeqsLenient returns the seqs it can read of a slot's chunks (cleanup
// drops what it can read).
func slotSeqsLenient(slot *bolt.Bucket) []uint64 {
	pages := slot.Bucket(sbPages)
	if pages == nil {
		return seqsOf(slot.Get(skSeqs))
	}
	var seqs []uint64
	_ = pages.ForEach(func(_, page []byte) error { return decodePage(page, nil, &seqs) })
	return seqs
}

// writeSlot writes a slot's manifest and chunk list in full.
func writeSlot(slot *bolt.Bucket, m *snapshot.Manifest, seqs []uint64, per int) error {
	if slot.Bucket(sbPages) != nil {
		if err := slot.DeleteBucket(sbPages); err != nil {
			return err
		}
	}
	pages, err := slot.CreateBucket(sbPages)
	if err != nil {
		return err
	}
	pages.FillPercent = 1
	for i, key := 0, uint64(0); i < len(seqs); i += per {
		key += pageKeyStep
		end := min(i+per, len(seqs))
		if err := pages.Put(u64(key), encodePage(m.Chunks[i:end], seqs[i:end])); err != nil {
			return err
		}
	}
	if err := slot.Delete(skSeqs); err != nil {
		return err
	}
	return putHeader(slot, m)
}

func putHeader(slot *bolt.Bucket, m *snapshot.Manifest) error {
	return putHeaderN(slot, m, len(m.Chunks))
}

// putHeaderN writes m's header for a list of n chunks (m.Chunks may not
// hold them).
func putHeaderN(slot *bolt.Bucket, m *snapshot.Manifest, n int) error {
	hb, err := marshalHeader(m, n)
	if err != nil {
		return err
	}
	return slot.Put(skManifest, hb)
}

// oldPage is a page of the chunk list a delta replaces.
type oldPage struct {
	key          uint64
	start, count int
	dirty        bool
}

// updateSlot writes the chunk list of m, a delta's version, over the old
// one in slot: only the pages holding a chunk the delta changed (or next
// to a change: a page of a few chunks joins its neighbour) are rewritten.
// script is the delta's edit script (old version → m).
func updateSlot(slot *bolt.Bucket, script *diff.Script, m *snapshot.Manifest, seqs []uint64, per int) error {
	pages := slot.Bucket(sbPages)
	if pages == nil {
		return writeSlot(slot, m, seqs, per)
	}
	old, err := listPages(pages)
	if err != nil {
		return err
	}
	oldToNew := make([]int, len(script.A.Chunks))
	for i := range oldToNew {
		oldToNew[i] = -1
	}
	keptFromOld(script, func(i, j int) { oldToNew[i] = j })
	for i := range old {
		p := &old[i]
		if p.start+p.count > len(oldToNew) {
			return fmt.Errorf("chunk list pages hold more than %d chunks: %w", len(oldToNew), ErrCorrupt)
		}
		p.dirty = !keptPage(p, oldToNew)
	}
	for joinSmall(old, oldToNew, len(seqs), per) {
	}
	err = rewritePages(pages, old, oldToNew, m, seqs, per)
	if errors.Is(err, errNoRoom) {
		return writeSlot(slot, m, seqs, per)
	}
	if err != nil {
		return err
	}
	return putHeader(slot, m)
}

// listPages reads the keys and counts of a chunk list's pages.
func listPages(pages *bolt.Bucket) ([]oldPage, error) {
	var out []oldPage
	start := 0
	err := pages.ForEach(func(k, v []byte) error {
		n, err := pageCount(v)
		if err != nil || len(k) != 8 {
			return fmt.Errorf("chunk list page %x: %w", k, ErrCorrupt)
		}
		out = append(out, oldPage{key: binary.BigEndian.Uint64(k), start: start, count: n})
		start += n
		return nil
	})
	return out, err
}

// keptPage: the delta keeps the page's chunks, together and in order.
func keptPage(p *oldPage, oldToNew []int) bool {
	if p.count == 0 {
		return false
	}
	first := oldToNew[p.start]
	for i := p.start; i < p.start+p.count; i++ {
		if oldToNew[i] < 0 || oldToNew[i] != first+(i-p.start) {
			return false
		}
	}
	return true
}

// joinSmall marks dirty a kept page next to a stretch of new chunks
// shorter than a quarter page, so that stretch joins it instead of making
// a small page of its own (over many deltas the list would crumble into
// pages of one chunk). It reports whether it marked one.
func joinSmall(old []oldPage, oldToNew []int, total, per int) bool {
	next := 0 // the new list's position after the last kept page
	for i := 0; i <= len(old); i++ {
		if i < len(old) && old[i].dirty {
			continue
		}
		end := total
		if i < len(old) {
			end = oldToNew[old[i].start]
		}
		if gap := end - next; gap > 0 && gap < per/4 {
			if j := neighbour(old, i); j >= 0 {
				old[j].dirty = true
				return true
			}
		}
		if i < len(old) {
			next = end + old[i].count
		}
	}
	return false
}

// neighbour is the kept page i (or, at the end, the last kept page before
// it), -1 if none.
func neighbour(old []oldPage, i int) int {
	if i < len(old) {
		return i
	}
	for j := len(old) - 1; j >= 0; j-- {
		if !old[j].dirty {
			return j
		}
	}
	return -1
}

// rewritePages deletes the dirty pages and writes the new chunks between
// the kept ones into new pages keyed between theirs.
func rewritePages(pages *bolt.Bucket, old []oldPage, oldToNew []int, m *snapshot.Manifest, seqs []uint64, per int) error {
	for _, p := range old {
		if p.dirty {
			if err := pages.Delete(u64(p.key)); err != nil {
				return err
			}
		}
	}
	next, lo := 0, uint64(0)
	for i := 0; i <= len(old); i++ {
		if i < len(old) && old[i].dirty {
			continue
		}
		end, hi := len(seqs), uint64(math.MaxUint64)
		if i < len(old) {
			end, hi = oldToNew[old[i].start], old[i].key
		}
		if err := fillGap(pages, lo, hi, m.Chunks[next:end], seqs[next:end], per); err != nil {
			return err
		}
		if i < len(old) {
			next, lo = end+old[i].count, hi
		}
	}
	return nil
}

// fillGap writes chunks as pages of at most per each, evenly
// filled, with keys strictly between lo and hi.
func fillGap(pages *bolt.Bucket, lo, hi uint64, chunks []snapshot.ChunkRef, seqs []uint64, per int) error {
	if len(seqs) == 0 {
		return nil
	}
	n := (len(seqs) + per - 1) / per
	step := (hi - lo) / uint64(n+1)
	if step == 0 {
		return errNoRoom
	}
	each := (len(seqs) + n - 1) / n
	for k, i := 0, 0; i < len(seqs); k, i = k+1, i+each {
		end := min(i+each, len(seqs))
		if err := pages.Put(u64(lo+step*uint64(k+1)), encodePage(chunks[i:end], seqs[i:end])); err != nil {
			return err
		}
	}
	return nil
}

// migrateData1 rewrites the chunk lists of a data file of format 1 as
// pages, in one transaction: the file holds both layouts' until it
// commits, then only the new one.
func migrateData1(tx *bolt.Tx) error {
	for _, name := range slotNames {
		slot := tx.Bucket(name)
		if slot.Get(skManifest) == nil || slot.Bucket(sbPages) != nil {
			continue
		}
		m, seqs, err := readSlot(slot)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
		if err := writeSlot(slot, m, seqs, pageChunks); err != nil {
			return err
		}
	}
	return tx.Bucket(dataMeta).Put(dmFormat, u64(dataFormat))
}

// slotCache keeps the last chunk list read or installed, so that the next
// delta neither decodes it again (three times: its manifest, the chunks
// its base is read from, the seqs its install keeps) nor reads its pages:
// some 8,000 entries on 64 MB, a few ms of a one-record delta. An entry
// is a version of one data file (gen): a version's list never changes in
// its file. It holds one list, what a pull holds anyway.
//
// The list is shared, not copied: a 64 MB data set's is some 800 KB of
// chunk entries, and each copy cost a one-record delta page faults and
// garbage collection (in a new process, where the first pull runs, more
// than decoding it). Nothing modifies a cached list: Store.Manifest hands
// it out read-only, and an install caches the list it was given (Finish
// takes it over) and makes a new one for the next version.
type slotCache struct {
	mu      sync.Mutex
	gen     uint32
	version uint64
	m       *snapshot.Manifest // read-only
	seqs    []uint64           // read-only
}

// get returns the cached list of version v of file gen (read-only).
func (c *slotCache) get(gen uint32, v uint64) (*snapshot.Manifest, []uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.gen != gen || c.version != v {
		return nil, nil, false
	}
	return c.m, c.seqs, true
}

// seqsOf returns the cached seqs of version v of file gen (only read).
func (c *slotCache) seqsOf(gen uint32, v uint64) ([]uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.gen != gen || c.version != v {
		return nil, false
	}
	return c.seqs, true
}

// put caches version v's list as readSlot would read it back (what the
// local encoding keeps, no more), taking over m.Chunks and seqs: their
// entries are trimmed to what the encoding keeps, in place, and neither
// may be modified afterwards.
func (c *slotCache) put(gen uint32, v uint64, m *snapshot.Manifest, seqs []uint64) {
	cp := snapshot.Manifest{Org: m.Org, User: m.User, Version: m.Version, Parent: m.Parent,
		ChunkerName: m.ChunkerName, ChunkerVersion: m.ChunkerVersion, Chunker: m.Chunker,
		Records: m.Records, StreamLen: m.StreamLen, StreamHash: m.StreamHash, CreatedUnix: m.CreatedUnix,
		Packs: []string{"local"}, Chunks: m.Chunks[:len(m.Chunks):len(m.Chunks)]}
	for i := range cp.Chunks {
		ch := &cp.Chunks[i]
		ch.Pack, ch.Offset, ch.StoredLen = 0, 0, ch.Size
	}
	c.mu.Lock()
	c.gen, c.version, c.m, c.seqs = gen, v, &cp, seqs
	c.mu.Unlock()
}

// readLive returns the live slot's manifest and seqs (version v, in file
// gen), from the cache when it holds them; both are read-only.
func (s *Store) readLive(slot *bolt.Bucket, gen uint32, v uint64) (*snapshot.Manifest, []uint64, error) {
	if m, seqs, ok := s.synced.get(gen, v); ok {
		return m, seqs, nil
	}
	m, seqs, err := readSlot(slot)
	if err != nil || m.Version != v {
		return m, seqs, err
	}
	s.synced.mu.Lock()
	s.synced.gen, s.synced.version, s.synced.m, s.synced.seqs = gen, v, m, seqs
	s.synced.mu.Unlock()
	return m, seqs, nil
}

// liveSeqs returns the live slot's seqs, want of them, from the cache when
// it holds them.
func (s *Store) liveSeqs(slot *bolt.Bucket, gen uint32, v uint64, want int) ([]uint64, error) {
	if seqs, ok := s.synced.seqsOf(gen, v); ok && len(seqs) == want {
		return seqs, nil
	}
	return slotSeqs(slot, want)
}
