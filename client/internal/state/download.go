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
// interruption loses at most the batch being received.
const (
	flushChunks = 256
	flushBytes  = 8 << 20 // raw bytes
)

// Marker returns the download in progress, or nil. A marker that cannot be
// read is abandoned (it only costs a refetch).
func (s *Store) Marker() (*Marker, error) {
	var raw []byte
	err := s.data.View(func(tx *bolt.Tx) error {
		raw = bytes.Clone(tx.Bucket(dataMeta).Get(dmDownload))
		return nil
	})
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
// stored.
func (s *Store) AbandonDownload() error {
	err := s.data.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(dataMeta).Delete(dmDownload)
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
	mk     Marker
	slot   byte
	chunks []snapshot.ChunkRef // the new version's list; Sums filled as chunks arrive
	old    *snapshot.Manifest  // the version the pack applies to; nil for a full sync
	seq    uint64              // last chunk seq assigned

	// A full sync indexes records as chunks arrive (ix), so that the install
	// needs no second pass over the data.
	ix      *walker
	next    int                         // full sync: the next chunk to index
	byID    map[snapshot.ChunkID]uint64 // full sync: seqs of chunks received, for repeats
	pending []pendingChunk
	recs    []indexEntry
	bytes   int
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
	d := &Download{s: s, chunks: chunks, old: old, mk: Marker{From: from, To: to}}
	if from == 0 {
		d.old = nil
		d.ix, d.byID = &walker{}, map[snapshot.ChunkID]uint64{}
	}
	var err error
	if resume == nil {
		err = d.begin()
	} else {
		d.mk = *resume
		err = d.resume()
	}
	if err != nil {
		return nil, fmt.Errorf("download %d→%d: %w", from, to, err)
	}
	return d, nil
}

// begin drops what an earlier install left and opens a staging slot.
func (d *Download) begin() error {
	if err := d.s.Cleanup(); err != nil {
		return err
	}
	mk, err := json.Marshal(d.mk)
	if err != nil {
		return err
	}
	return d.s.data.Update(func(tx *bolt.Tx) error {
		slot, n := otherSlot(tx)
		if st := slotState(slot); st != 0 {
			return fmt.Errorf("slot %d is still in state %c: %w", n, st, ErrCorrupt)
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
		if _, err := slot.CreateBucket(sbIndex); err != nil {
			return err
		}
		d.slot = n
		d.seq = getU64(tx.Bucket(dataMeta), dmChunkSeq)
		return tx.Bucket(dataMeta).Put(dmDownload, mk)
	})
}

// resume checks that the staging slot holds what the marker says and, for
// a full sync, brings the indexer back to where the marker left it.
func (d *Download) resume() error {
	var tail []uint64 // full sync: seqs of the chunks of an unfinished record
	err := d.s.data.View(func(tx *bolt.Tx) error {
		slot, n := otherSlot(tx)
		recv := slot.Bucket(sbRecv)
		if slotState(slot) != slotStaging || getU64(slot, skVersion) != d.mk.To || recv == nil {
			return fmt.Errorf("no staging slot for version %d: %w", d.mk.To, ErrCorrupt)
		}
		if got := recv.Stats().KeyN; got != d.mk.Received {
			return fmt.Errorf("staging slot holds %d chunks, the marker says %d: %w", got, d.mk.Received, ErrCorrupt)
		}
		d.slot = n
		d.seq = getU64(tx.Bucket(dataMeta), dmChunkSeq)
		if d.ix == nil {
			return nil
		}
		var err error
		tail, err = d.restoreIndexer(recv)
		return err
	})
	if err != nil || len(tail) == 0 {
		return err
	}
	// The record that the last batch left unfinished: feed its pieces again.
	return d.s.data.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(dataChunks)
		for _, seq := range tail {
			raw, err := d.s.loadChunk(b, seq)
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

// restoreIndexer reads the received chunks' entries (their sums, and seqs
// by ID for repeats) and returns the seqs of the chunks that hold a record
// not yet indexed: from its first chunk (one that does not continue a
// record) to the last chunk indexed.
func (d *Download) restoreIndexer(recv *bolt.Bucket) ([]uint64, error) {
	c := recv.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		j, seq, sum, err := recvEntry(k, v, len(d.chunks))
		if err != nil {
			return nil, err
		}
		d.chunks[j].Sum = sum
		d.byID[d.chunks[j].ID] = seq
		d.next = j + 1
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
	if last, _ := recv.Tx().Bucket(slotNames[d.slot]).Bucket(sbIndex).Cursor().Last(); last != nil {
		d.ix.prev = bytes.Clone(last)
	}
	return tail, nil
}

func recvEntry(k, v []byte, n int) (j int, seq uint64, sum [32]byte, err error) {
	if len(k) != 4 || len(v) != 40 {
		return 0, 0, sum, fmt.Errorf("staging entry %x: %w", k, ErrCorrupt)
	}
	j = int(binary.BigEndian.Uint32(k))
	if j >= n {
		return 0, 0, sum, fmt.Errorf("staging entry for chunk %d of %d: %w", j, n, ErrCorrupt)
	}
	copy(sum[:], v[8:])
	return j, binary.BigEndian.Uint64(v), sum, nil
}

// Marker returns the download's progress.
func (d *Download) Marker() Marker { return d.mk }

// Add stores chunk j of the new list, verified by the caller against its
// ID. It is written with the next batch.
func (d *Download) Add(j int, raw []byte) error {
	if j < 0 || j >= len(d.chunks) {
		return fmt.Errorf("chunk %d of %d: %w", j, len(d.chunks), ErrInvalid)
	}
	sum := sha256.Sum256(raw)
	d.chunks[j].Sum = sum
	d.seq++
	p := pendingChunk{j: j, seq: d.seq, sum: sum, stored: d.s.chunks.encode(nil, raw)}
	d.pending = append(d.pending, p)
	d.bytes += len(raw)
	d.mk.Received++
	d.mk.Bytes += int64(len(raw))
	if d.ix != nil {
		if err := d.index(j, p.seq, raw); err != nil {
			return err
		}
	}
	if len(d.pending) >= flushChunks || d.bytes >= flushBytes {
		return d.Flush()
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
	d.recs = append(d.recs, indexEntry{bytes.Clone(r.key), bytes.Clone(r.loc)})
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

// rawOf returns a stored chunk of this download, pending or written.
func (d *Download) rawOf(seq uint64) ([]byte, error) {
	for i := range d.pending {
		if d.pending[i].seq == seq {
			return d.s.chunks.decodeUncached(seq, d.pending[i].stored, nil)
		}
	}
	var raw []byte
	err := d.s.data.View(func(tx *bolt.Tx) error {
		var err error
		raw, err = d.s.loadChunk(tx.Bucket(dataChunks), seq)
		return err
	})
	return raw, err
}

// Flush writes the pending chunks, their index entries and the marker in
// one transaction.
func (d *Download) Flush() error {
	if len(d.pending) == 0 && len(d.recs) == 0 {
		return nil
	}
	mk, err := json.Marshal(d.mk)
	if err != nil {
		return err
	}
	err = d.s.data.Update(func(tx *bolt.Tx) error {
		chunks := tx.Bucket(dataChunks)
		chunks.FillPercent = 1
		slot := tx.Bucket(slotNames[d.slot])
		recv := slot.Bucket(sbRecv)
		recv.FillPercent = 1
		for _, p := range d.pending {
			if err := chunks.Put(u64(p.seq), p.stored); err != nil {
				return err
			}
			// bbolt keeps the slices until the commit: one each.
			v := binary.BigEndian.AppendUint64(make([]byte, 0, 40), p.seq)
			v = append(v, p.sum[:]...)
			if err := recv.Put(binary.BigEndian.AppendUint32(nil, uint32(p.j)), v); err != nil {
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
	d.pending, d.recs, d.bytes = d.pending[:0], d.recs[:0], 0
	return nil
}
