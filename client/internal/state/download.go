package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/snapshot"
)

// Marker is the download in progress: the pack from From to To, of which
// the first Received chunks (Bytes raw bytes) are verified and stored in
// the staging slot, in the same transactions as the marker. Records counts
// the records a full sync indexed so far.
type Marker struct {
	From     uint64 `json:"from"`
	To       uint64 `json:"to"`
	Received int    `json:"received"`
	Bytes    int64  `json:"bytes"`
	Records  uint64 `json:"records,omitempty"`
}

// Batches: each is one write transaction (two fsyncs) of data.db. They
// bound what an install holds in memory (the batch and bbolt's dirty
// pages for it) and how long another writer of data.db waits; an
// interruption loses at most the batch being received. The first batch
// of a download is small (a small delta is one batch either way), later
// ones double up to the most.
const (
	firstChunks = 64
	firstBytes  = 1 << 20 // raw bytes
	flushChunks = 256
	flushBytes  = 2 << 20
	arenaBytes  = 2 << 20 // stored bytes
	firstArena  = 64 << 10
)

// Marker returns the download in progress, or nil. A marker that cannot be
// read is abandoned (it only costs a refetch).
func (s *Store) Marker() (*Marker, error) {
	s.dataMu.RLock()
	f := s.next
	if f == nil {
		f = s.data
	}
	var raw []byte
	err := f.db.View(func(tx *bolt.Tx) error {
		raw = bytes.Clone(tx.Bucket(dataMeta).Get(dmDownload))
		return nil
	})
	s.dataMu.RUnlock()
	if err != nil || raw == nil {
		return nil, err
	}
	var m Marker
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, s.AbandonDownload()
	}
	return &m, nil
}

// AbandonDownload forgets the download in progress and drops what it
// stored: a full download's file, a delta's staging slot.
func (s *Store) AbandonDownload() error {
	if err := s.dropNext(); err != nil {
		return fmt.Errorf("abandon download: %w", err)
	}
	err := s.updateData(func(tx *bolt.Tx) error {
		meta := tx.Bucket(dataMeta)
		if meta.Get(dmDownload) == nil {
			return nil
		}
		return meta.Delete(dmDownload)
	})
	if err != nil {
		return fmt.Errorf("abandon download: %w", err)
	}
	return s.Cleanup()
}

// Download stores the chunks of one delta pack as they arrive, in batches,
// into a staging slot that readers do not see, and then installs the new
// version (Finish).
type Download struct {
	s      *Store
	f      *dataFile // the file it writes: the data file (a delta), or a file of its own (a full sync)
	mk     Marker
	slot   byte
	chunks []snapshot.ChunkRef // the new version's list (an edit's entries); Sums filled as chunks arrive
	old    *snapshot.Manifest  // the version the pack applies to; nil for a full sync or an edit
	// A delta given as an edit of the synced version (StartDelta): chunks
	// are its entries, seqs theirs, and j of Add is placed by pos.
	base   *Base
	edit   *ListEdit
	seq    uint64   // last chunk seq assigned
	seqs   []uint64 // seq of each chunk of the new list stored (0: not received)
	batch  uint32   // batches written
	opened bool     // the staging slot exists (a batch was written)
	// This batch is written once it holds limChunks chunks or limBytes
	// raw bytes.
	limChunks, limBytes int

	// A full sync indexes records as chunks arrive (ix), so that the install
	// needs no second pass over the data.
	ix      *walker
	marked  Installed                   // a full sync's Marked and MarkedAll (addEntry)
	next    int                         // full sync: the next chunk to index
	byID    map[snapshot.ChunkID]uint64 // full sync: seqs of chunks received, for repeats
	pending []pendingChunk
	recs    []indexEntry
	bytes   int
	// Arenas for the batch's stored chunks and index entries: bbolt holds
	// on to what Put is given until the commit, after which both are
	// reused (a full sync of 64 MB would otherwise allocate a slice per
	// chunk and two per record).
	chunkArena, recArena []byte
}

type pendingChunk struct {
	j      int
	seq    uint64
	stored []byte
	sum    [32]byte
}

type indexEntry struct{ key, loc []byte }

// StartDownload begins (or, with resume, continues) storing the pack from
// from to to whose new chunk list is chunks; old is the synced version
// the pack applies to (nil for a full sync). A resumed download must be
// the marker's.
func (s *Store) StartDownload(from, to uint64, chunks []snapshot.ChunkRef, old *snapshot.Manifest, resume *Marker) (*Download, error) {
	d := &Download{s: s, chunks: chunks, old: old, mk: Marker{From: from, To: to}, seqs: make([]uint64, len(chunks)),
		limChunks: min(firstChunks, s.batchChunks), limBytes: min(firstBytes, s.batchBytes)}
	if from == 0 {
		d.old = nil
		d.ix, d.byID = &walker{}, map[snapshot.ChunkID]uint64{}
	}
	var err error
	switch {
	case from == 0 && resume == nil:
		if err = s.AbandonDownload(); err == nil {
			d.f, err = s.newNext()
		}
	case from == 0:
		s.dataMu.RLock()
		d.f = s.next
		s.dataMu.RUnlock()
		if d.f == nil {
			err = fmt.Errorf("no file for the full download to resume: %w", ErrCorrupt)
		}
	default:
		s.dataMu.RLock()
		d.f = s.data
		s.dataMu.RUnlock()
	}
	if err != nil {
		return nil, fmt.Errorf("download %d→%d: %w", from, to, err)
	}
	if resume == nil {
		err = d.begin()
	} else {
		d.mk = *resume
		d.marked.MarkedAll = true // the batches before were indexed by another process
		err = d.resume()
	}
	if err != nil {
		return nil, fmt.Errorf("download %d→%d: %w", from, to, err)
	}
	return d, nil
}

// begin drops what an earlier install left. The staging slot is opened
// by the first batch written: a small delta writes none before the one
// transaction that installs it.
func (d *Download) begin() error {
	if d.mk.From > 0 {
		if err := d.s.Cleanup(); err != nil {
			return err
		}
	}
	return d.f.db.View(func(tx *bolt.Tx) error {
		slot, n := otherSlot(tx)
		if st := slotState(slot); st != 0 {
			return fmt.Errorf("slot %d is still in state %c: %w", n, st, ErrCorrupt)
		}
		d.slot = n
		d.seq = getU64(tx.Bucket(dataMeta), dmChunkSeq)
		return nil
	})
}

// open makes the slot the download's staging slot, in the transaction of
// its first batch.
func (d *Download) open(tx *bolt.Tx) error {
	slot := tx.Bucket(slotNames[d.slot])
	if st := slotState(slot); st != 0 {
		return fmt.Errorf("slot %d is still in state %c: %w", d.slot, st, ErrCorrupt)
	}
	if err := slot.Put(skState, []byte{slotStaging}); err != nil {
		return err
	}
	if err := slot.Put(skVersion, u64(d.mk.To)); err != nil {
		return err
	}
	if _, err := slot.CreateBucket(sbRecv); err != nil {
		return err
	}
	_, err := slot.CreateBucket(sbIndex)
	return err
}

// resume checks that the staging slot holds what the marker says and, for
// a full sync, brings the indexer back to where the marker left it.
func (d *Download) resume() error {
	var tail []uint64 // full sync: seqs of the chunks of an unfinished record
	err := d.f.db.View(func(tx *bolt.Tx) error {
		slot, n := otherSlot(tx)
		recv := slot.Bucket(sbRecv)
		if slotState(slot) != slotStaging || getU64(slot, skVersion) != d.mk.To || recv == nil {
			return fmt.Errorf("no staging slot for version %d: %w", d.mk.To, ErrCorrupt)
		}
		d.slot, d.opened = n, true
		d.seq = getU64(tx.Bucket(dataMeta), dmChunkSeq)
		got := 0
		err := forEachRecv(recv, func(e recvEntry) error {
			k := d.pos(e.j)
			if k < 0 || d.seqs[k] != 0 {
				return fmt.Errorf("staging entry for chunk %d of %d: %w", e.j, len(d.chunks), ErrCorrupt)
			}
			d.seqs[k], d.chunks[k].Sum = e.seq, e.sum
			got++
			return nil
		})
		if err != nil {
			return err
		}
		if got != d.mk.Received {
			return fmt.Errorf("staging slot holds %d chunks, the marker says %d: %w", got, d.mk.Received, ErrCorrupt)
		}
		if k, _ := recv.Cursor().Last(); len(k) == 4 {
			d.batch = binary.BigEndian.Uint32(k)
		}
		if d.ix == nil {
			return nil
		}
		tail, err = d.restoreIndexer(slot)
		return err
	})
	if err != nil || len(tail) == 0 {
		return err
	}
	// The record that the last batch left unfinished: feed its pieces again.
	return d.f.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataChunks)
		for _, seq := range tail {
			raw, err := d.s.loadChunk(b, d.f.gen, seq)
			if err != nil {
				return err
			}
			if err := d.ix.feed(seq, raw, func(record) error {
				return fmt.Errorf("a record completed by chunks already indexed: %w", ErrCorrupt)
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

// restoreIndexer brings a full sync's indexer back: the seqs by ID (for
// repeats), the next chunk to index, and the seqs of the chunks that hold
// a record not yet indexed: from its first chunk (one that does not
// continue a record) to the last chunk indexed.
func (d *Download) restoreIndexer(slot *bolt.Bucket) ([]uint64, error) {
	for j, seq := range d.seqs {
		if seq != 0 {
			d.byID[d.chunks[j].ID] = seq
			d.next = j + 1
		}
	}
	r := d.next
	for r > 0 && r < len(d.chunks) && d.chunks[r].Continued {
		r--
	}
	var tail []uint64
	for j := r; j < d.next; j++ {
		seq, ok := d.byID[d.chunks[j].ID]
		if !ok {
			return nil, fmt.Errorf("chunk %d of the staging slot is missing: %w", j, ErrCorrupt)
		}
		tail = append(tail, seq)
	}
	d.ix.n = d.mk.Records
	if last, _ := slot.Bucket(sbIndex).Cursor().Last(); last != nil {
		d.ix.prev = bytes.Clone(last)
	}
	return tail, nil
}

// recvEntry is one chunk stored by a download: its index in the new list,
// its seq and SHA-256. A batch's entries are stored as one value (one
// value per chunk would make dropping the list touch a page per few
// chunks).
type recvEntry struct {
	j   int
	seq uint64
	sum [32]byte
}

const recvEntryLen = 4 + 8 + 32

func appendRecv(dst []byte, e recvEntry) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(e.j))
	dst = binary.BigEndian.AppendUint64(dst, e.seq)
	return append(dst, e.sum[:]...)
}

// forEachRecv calls fn with every entry of a staging list.
func forEachRecv(recv *bolt.Bucket, fn func(e recvEntry) error) error {
	return recv.ForEach(func(k, v []byte) error {
		if len(k) != 4 || len(v)%recvEntryLen != 0 {
			return fmt.Errorf("staging batch %x: %w", k, ErrCorrupt)
		}
		for ; len(v) > 0; v = v[recvEntryLen:] {
			e := recvEntry{j: int(binary.BigEndian.Uint32(v)), seq: binary.BigEndian.Uint64(v[4:])}
			copy(e.sum[:], v[12:recvEntryLen])
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// Marker returns the download's progress.
func (d *Download) Marker() Marker { return d.mk }

// Add stores chunk j of the new list, verified by the caller against its
// ID. It is written with the next batch.
func (d *Download) Add(j int, raw []byte) error {
	k := d.pos(j)
	if k < 0 {
		return fmt.Errorf("chunk %d of %d: %w", j, len(d.chunks), ErrInvalid)
	}
	sum := sha256.Sum256(raw)
	d.chunks[k].Sum = sum
	if err := d.arenaFor(storedLen(len(raw))); err != nil {
		return err
	}
	d.seq++
	d.seqs[k] = d.seq
	start := len(d.chunkArena)
	d.chunkArena = d.s.chunks.encode(d.chunkArena, raw)
	p := pendingChunk{j: j, seq: d.seq, sum: sum, stored: d.chunkArena[start:len(d.chunkArena):len(d.chunkArena)]}
	d.pending = append(d.pending, p)
	d.bytes += len(raw)
	d.mk.Received++
	d.mk.Bytes += int64(len(raw))
	if d.ix != nil {
		if err := d.index(j, p.seq, raw); err != nil {
			return err
		}
	}
	if len(d.pending) >= d.limChunks || d.bytes >= d.limBytes {
		return d.Flush()
	}
	return nil
}

// arenaFor makes room for need more stored bytes in the chunk arena. An
// arena is not grown in place: the pending chunks point into it, so a
// full one is flushed and reused. A download starts with a small arena
// and doubles it up to a batch's size (the smaller ones stay alive, with
// their pending chunks, until the flush): a delta of one record stores a
// chunk of a few KB and needs no 2 MB.
func (d *Download) arenaFor(need int) error {
	if len(d.chunkArena)+need <= cap(d.chunkArena) {
		return nil
	}
	batch := max(need, min(arenaBytes, storedLen(d.limBytes)))
	if cap(d.chunkArena) >= batch && len(d.pending) > 0 {
		if err := d.Flush(); err != nil {
			return err
		}
	}
	if len(d.chunkArena)+need > cap(d.chunkArena) {
		d.chunkArena = make([]byte, 0, min(batch, max(need, 2*cap(d.chunkArena), firstArena)))
	}
	return nil
}

// index feeds chunk j to the full sync's indexer, after the chunks before
// it that the server left out as repeats of earlier ones (a version may
// hold the same piece of two big records twice; it is sent once).
func (d *Download) index(j int, seq uint64, raw []byte) error {
	if err := d.indexRepeats(j); err != nil {
		return err
	}
	d.byID[d.chunks[j].ID] = seq
	d.next = j + 1
	return d.ix.feed(seq, raw, d.addEntry)
}

func (d *Download) addEntry(r record) error {
	if m := d.s.opts.Mark; len(m) > 0 && !d.marked.MarkedAll && bytes.Contains(r.value, m) {
		if len(d.marked.Marked) < MaxChangedKeys {
			d.marked.Marked = append(d.marked.Marked, string(r.key))
		} else {
			d.marked.MarkedAll, d.marked.Marked = true, nil
		}
	}
	start := len(d.recArena)
	d.recArena = append(d.recArena, r.key...)
	d.recArena = append(d.recArena, r.loc...)
	k, l := start+len(r.key), len(d.recArena)
	d.recs = append(d.recs, indexEntry{d.recArena[start:k:k], d.recArena[k:l:l]})
	d.mk.Records++
	return nil
}

// indexRepeats indexes the skipped chunks before j.
func (d *Download) indexRepeats(j int) error {
	for ; d.next < j; d.next++ {
		ch := &d.chunks[d.next]
		seq, ok := d.byID[ch.ID]
		if !ok {
			return fmt.Errorf("chunk %d (%s) was not sent and is no repeat: %w", d.next, ch.ID, ErrCorrupt)
		}
		raw, err := d.rawOf(seq)
		if err != nil {
			return err
		}
		ch.Sum = sha256.Sum256(raw)
		if err := d.ix.feed(seq, raw, d.addEntry); err != nil {
			return err
		}
	}
	return nil
}

// pendingRaw returns a chunk of this download not written yet (nil if it
// is not pending).
func (d *Download) pendingRaw(seq uint64) ([]byte, error) {
	for i := range d.pending {
		if d.pending[i].seq == seq {
			return d.s.chunks.decodeUncached(seq, d.pending[i].stored, nil)
		}
	}
	return nil, nil
}

// rawOf returns a stored chunk of this download, pending or written.
func (d *Download) rawOf(seq uint64) ([]byte, error) {
	if raw, err := d.pendingRaw(seq); raw != nil || err != nil {
		return raw, err
	}
	var raw []byte
	err := d.f.db.View(func(tx *bolt.Tx) error {
		var err error
		raw, err = d.s.loadChunk(tx.Bucket(dataChunks), d.f.gen, seq)
		return err
	})
	return raw, err
}

// Flush writes the pending chunks, their index entries and the marker in
// one transaction (the first opens the staging slot, even with nothing to
// write).
func (d *Download) Flush() error {
	if len(d.pending) == 0 && len(d.recs) == 0 && d.opened {
		return nil
	}
	mk, err := json.Marshal(d.mk)
	if err != nil {
		return err
	}
	err = d.s.update(d.f, func(tx *bolt.Tx) error {
		if !d.opened {
			if err := d.open(tx); err != nil {
				return err
			}
		}
		chunks := tx.Bucket(dataChunks)
		chunks.FillPercent = 1
		slot := tx.Bucket(slotNames[d.slot])
		recv := slot.Bucket(sbRecv)
		recv.FillPercent = 1
		list := make([]byte, 0, len(d.pending)*recvEntryLen)
		for _, p := range d.pending {
			if err := chunks.Put(u64(p.seq), p.stored); err != nil {
				return err
			}
			list = appendRecv(list, recvEntry{p.j, p.seq, p.sum})
		}
		if len(list) > 0 {
			d.batch++
			if err := recv.Put(binary.BigEndian.AppendUint32(nil, d.batch), list); err != nil {
				return err
			}
		}
		idx := slot.Bucket(sbIndex)
		idx.FillPercent = 1
		for _, e := range d.recs {
			if err := idx.Put(e.key, e.loc); err != nil {
				return err
			}
		}
		meta := tx.Bucket(dataMeta)
		if err := meta.Put(dmChunkSeq, u64(d.seq)); err != nil {
			return err
		}
		return meta.Put(dmDownload, mk)
	})
	if err != nil {
		return fmt.Errorf("store chunks: %w", err)
	}
	d.opened = true
	d.pending, d.recs, d.bytes = d.pending[:0], d.recs[:0], 0
	d.chunkArena, d.recArena = d.chunkArena[:0], d.recArena[:0]
	d.limChunks, d.limBytes = min(2*d.limChunks, d.s.batchChunks), min(2*d.limBytes, d.s.batchBytes)
	return nil
}
