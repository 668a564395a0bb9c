package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// Report is what Check found.
type Report struct {
	Version    uint64   // the synced version (0: none)
	Records    uint64   // its records
	StreamHash [32]byte // its stream hash, recomputed from its chunks
	Chunks     int      // its chunks
	Distinct   int      // of them distinct (a version may hold one chunk twice: stored once)
	Stored     int      // chunks stored in data.db (any version)
	NeedFull   bool     // the next pull is a full sync
	Download   *Marker  // the download in progress, if any

	Queue     []*Edit   // pending edits, in queue order
	Sent      []*Edit   // edits applied by the server, not yet pulled
	Inflight  *Inflight // the patch in flight, if any
	Conflicts int

	EditsBytes, DataBytes int64 // file sizes
}

// CheckOptions configure Check.
type CheckOptions struct {
	// Records, if set, is called with every record of the synced version
	// in key order, as decoded from its chunks.
	Records func(key, value []byte) error
}

// Check opens the state in dir read-only (another process must not hold
// it) and verifies everything: bbolt's own consistency check of both
// files; the synced version's manifest, every chunk of it present with its
// SHA-256, the hash list equal to the manifest's, the index pointing at
// exactly the records the chunks hold; no chunk stored that no version or
// download references; the download marker agreeing with the staging slot;
// the queue, the sent edits, their index and the patch in flight
// consistent with each other. Every problem found is reported, in an
// error matching ErrCorrupt.
func Check(dir string, opts CheckOptions) (*Report, error) {
	s, err := Open(dir, Options{ReadOnly: true, LockTimeout: 5e9})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Verify(opts)
}

// Verify checks the open store as Check does, each file in one read
// transaction (writers go on meanwhile).
func (s *Store) Verify(opts CheckOptions) (*Report, error) {
	dir := s.dir
	c := &checker{s: s, r: &Report{}, opts: opts}
	if err := s.viewTx(func(_ *dataFile, tx *bolt.Tx) error { return c.data(tx) }); err != nil {
		return nil, err
	}
	s.dataMu.RLock()
	next := s.next
	s.dataMu.RUnlock()
	if next != nil {
		if err := next.db.View(c.nextFile); err != nil {
			return nil, err
		}
	}
	if err := s.edits.View(c.edits); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		n    *int64
	}{{EditsFile, &c.r.EditsBytes}, {DataFile, &c.r.DataBytes}} {
		if fi, err := os.Stat(filepath.Join(dir, f.name)); err == nil {
			*f.n = fi.Size()
		}
	}
	if len(c.problems) > 0 {
		return c.r, fmt.Errorf("client state %s: %w: %w", dir, ErrCorrupt, errors.Join(c.problems...))
	}
	return c.r, nil
}

type checker struct {
	s        *Store
	r        *Report
	opts     CheckOptions
	problems []error
}

func (c *checker) fail(format string, args ...any) {
	c.problems = append(c.problems, fmt.Errorf(format, args...))
}

// data checks data.db.
func (c *checker) data(tx *bolt.Tx) error {
	for err := range tx.Check() {
		c.fail("data.db: %v", err)
	}
	meta := tx.Bucket(dataMeta)
	chunks := tx.Bucket(dataChunks)
	if meta == nil || chunks == nil || tx.Bucket(slotNames[0]) == nil || tx.Bucket(slotNames[1]) == nil {
		c.fail("data.db lacks its buckets")
		return nil
	}
	c.r.NeedFull = meta.Get(dmNeedFull) != nil
	refs := map[uint64]string{}
	if live := liveSlot(tx); live != nil {
		c.live(live, chunks, refs)
	}
	other, _ := otherSlot(tx)
	c.other(other, meta, refs)
	c.r.Stored += c.leaks(DataFile, meta, chunks, refs)
	return nil
}

// leaks checks that every chunk stored in a file is referenced, and
// returns how many there are.
func (c *checker) leaks(file string, meta, chunks *bolt.Bucket, refs map[uint64]string) int {
	last := getU64(meta, dmChunkSeq)
	n := 0
	cur := chunks.Cursor()
	for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
		n++
		seq := binary.BigEndian.Uint64(k)
		if len(k) != 8 || seq > last {
			c.fail("%s: stored chunk %x is beyond the last seq %d", file, k, last)
		}
		if refs[seq] == "" {
			c.fail("%s: stored chunk %d is referenced by no version and no download (a leak)", file, seq)
		}
	}
	return n
}

// nextFile checks a full download's file: a download in progress, or a
// version installed in it and not yet renamed over the data file (a crash
// in between; the next open finishes it).
func (c *checker) nextFile(tx *bolt.Tx) error {
	for err := range tx.Check() {
		c.fail("%s: %v", NextFile, err)
	}
	meta, chunks := tx.Bucket(dataMeta), tx.Bucket(dataChunks)
	if meta == nil || chunks == nil || tx.Bucket(slotNames[0]) == nil || tx.Bucket(slotNames[1]) == nil {
		c.fail("%s lacks its buckets", NextFile)
		return nil
	}
	refs := map[uint64]string{}
	if live := liveSlot(tx); live != nil {
		for _, s := range seqsOf(live.Get(skSeqs)) {
			refs[s] = "installed"
		}
	}
	other, _ := otherSlot(tx)
	c.other(other, meta, refs)
	c.r.Stored += c.leaks(NextFile, meta, chunks, refs)
	return nil
}

// live checks the synced version: its chunks, its stream hash, its index.
func (c *checker) live(slot, chunks *bolt.Bucket, refs map[uint64]string) {
	v := getU64(slot, skVersion)
	c.r.Version = v
	if slotState(slot) != slotLive {
		c.fail("the live slot is in state %q", slotState(slot))
	}
	m, err := unmarshalManifest(slot.Get(skManifest))
	if err != nil || m.Version != v {
		c.fail("manifest of version %d: %v", v, err)
		return
	}
	seqs, err := seqList(slot.Get(skSeqs), len(m.Chunks))
	if err != nil {
		c.fail("chunk list of version %d: %v", v, err)
		return
	}
	idx := slot.Bucket(sbIndex)
	if idx == nil {
		c.fail("version %d has no index", v)
		return
	}
	c.r.Chunks = len(m.Chunks)
	w := &walker{}
	var buf []byte
	for j, seq := range seqs {
		if refs[seq] == "" {
			c.r.Distinct++
		}
		refs[seq] = "live"
		ref := &m.Chunks[j]
		raw, err := c.s.chunks.decodeUncached(seq, chunks.Get(u64(seq)), buf)
		if err != nil || len(raw) != int(ref.Size) || sha256.Sum256(raw) != ref.Sum {
			c.fail("chunk %d (%s, stored as %d) of version %d missing or damaged: %v", j, ref.ID, seq, v, err)
			return
		}
		buf = raw
		err = w.feed(seq, raw, func(r record) error {
			if got := idx.Get(r.key); !bytes.Equal(got, r.loc) {
				c.fail("index entry of %q is %x, the record is at %x", r.key, got, r.loc)
			}
			if c.opts.Records != nil {
				return c.opts.Records(r.key, r.value)
			}
			return nil
		})
		if err != nil {
			c.fail("records of version %d: %v", v, err)
			return
		}
	}
	if err := w.close(); err != nil {
		c.fail("records of version %d: %v", v, err)
	}
	c.r.Records = w.n
	m.SetStreamHash()
	c.r.StreamHash = m.StreamHash
	if w.n != m.Records {
		c.fail("version %d holds %d records, its manifest says %d", v, w.n, m.Records)
	}
	if n := idx.Stats().KeyN; uint64(n) != w.n {
		c.fail("the index of version %d has %d entries for %d records", v, n, w.n)
	}
	if raw := slot.Get(skManifest); raw != nil {
		if stored, err := unmarshalManifest(raw); err == nil && stored.StreamHash != m.StreamHash {
			c.fail("version %d: chunks hash to %x, the manifest says %x", v, m.StreamHash, stored.StreamHash)
		}
	}
}

// other checks the slot that is not live and the download marker.
func (c *checker) other(slot, meta *bolt.Bucket, refs map[uint64]string) {
	var mk *Marker
	if raw := meta.Get(dmDownload); raw != nil {
		mk = new(Marker)
		if err := jsonUnmarshal(raw, mk); err != nil {
			c.fail("download marker: %v", err)
			mk = nil
		}
	}
	c.r.Download = mk
	switch slotState(slot) {
	case 0:
		if mk != nil {
			c.fail("a download marker without a staging slot: %+v", *mk)
		}
	case slotOld:
		for _, s := range seqsOf(slot.Get(skSeqs)) {
			if refs[s] == "" {
				refs[s] = "old"
			}
		}
	case slotStaging:
		recv := slot.Bucket(sbRecv)
		if recv == nil {
			c.fail("staging slot without its chunk list")
			return
		}
		n := 0
		err := forEachRecv(recv, func(e recvEntry) error {
			n++
			refs[e.seq] = "staging"
			return nil
		})
		if err != nil {
			c.fail("staging slot: %v", err)
		}
		if mk != nil && (mk.Received != n || getU64(slot, skVersion) != mk.To) {
			c.fail("download marker %+v, staging slot of version %d with %d chunks", *mk, getU64(slot, skVersion), n)
		}
	default:
		c.fail("slot in state %q", slotState(slot))
	}
}

// edits checks state.db.
func (c *checker) edits(tx *bolt.Tx) error {
	for err := range tx.Check() {
		c.fail("state.db: %v", err)
	}
	for _, name := range editBuckets {
		if tx.Bucket(name) == nil {
			c.fail("state.db lacks bucket %s", name)
			return nil
		}
	}
	if f := getU64(tx.Bucket(bucketMeta), metaFormat); f != Format {
		c.fail("state.db of format %d", f)
	}
	index := tx.Bucket(bucketEditIndex)
	queued := map[uint64]bool{}
	edits := func(b *bolt.Bucket, what string, into *[]*Edit) {
		b.ForEach(func(k, v []byte) error {
			e, err := decodeEdit(v)
			if err != nil || len(k) != 8 || binary.BigEndian.Uint64(k) != e.Seq {
				c.fail("%s entry %x: %v", what, k, err)
				return nil
			}
			if what == "queue" {
				queued[e.Seq] = true
			} else if queued[e.Seq] {
				c.fail("edit %d is both queued and sent", e.Seq)
			}
			if index.Get(indexKey(e.Key, e.Seq)) == nil {
				c.fail("%s edit %d (%s %s) is not indexed", what, e.Seq, e.Op, e.Key)
			}
			*into = append(*into, e)
			return nil
		})
	}
	edits(tx.Bucket(bucketQueue), "queue", &c.r.Queue)
	edits(tx.Bucket(bucketSent), "sent", &c.r.Sent)
	index.ForEach(func(k, _ []byte) error {
		_, seq := splitIndexKey(k)
		if seq == nil || tx.Bucket(bucketQueue).Get(seq) == nil && tx.Bucket(bucketSent).Get(seq) == nil {
			c.fail("edit index entry %q names no edit", k)
		}
		return nil
	})
	p, err := (&EditsTx{tx: tx}).Inflight()
	if err != nil {
		c.fail("%v", err)
	}
	c.r.Inflight = p
	if p != nil {
		for _, s := range p.Seqs {
			if !queued[s] {
				c.fail("patch in flight %s names edit %d, which is not queued", p.ID, s)
			}
		}
	}
	c.r.Conflicts = tx.Bucket(bucketConflicts).Stats().KeyN
	return nil
}

func jsonUnmarshal(raw []byte, v any) error { return json.Unmarshal(raw, v) }
