package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// Installed is what an install changed.
type Installed struct {
	From, Version uint64
	// Full: every record was replaced (a full sync): any key may have
	// changed, and Keys is nil.
	Full bool
	// Changed counts the records a delta put or deleted.
	Changed int
	// Keys are the keys a delta changed (put or deleted), in key order; nil
	// with AllKeys.
	Keys []string
	// AllKeys: a full sync, or a delta of more than MaxChangedKeys changes.
	AllKeys bool
	// Marked are the keys of a full sync whose values contain Options.Mark
	// (up to MaxChangedKeys, in key order); MarkedAll when there were more,
	// or the sync was resumed in another process (its first batches were
	// not looked at): then any value may contain it.
	Marked    []string
	MarkedAll bool
}

// MaxChangedKeys bounds Installed.Keys: beyond it a change is reported as
// "anything may have changed", which is what a listener would do with a
// list that long anyway, and the list costs no memory.
const MaxChangedKeys = 10_000

// inPlaceMax is how many index entries a delta may write in the live
// slot, in the one transaction that also switches the version. Beyond it
// the new version's index is built in the staging slot in batches, like a
// full sync's, so that no transaction grows with the change.
const inPlaceMax = 4096

// Finish checks the downloaded version as a whole and installs it: every
// chunk present (received now or earlier, or kept from the old version),
// the SHA-256 hash list equal to announced. m is the new version's
// manifest; its chunk list is the download's (Sums are filled in here).
// Once installed, the store keeps m's chunk list as the synced version's
// (Store.Manifest hands it out): the caller must not modify it. A version
// that does not check out fails with an error matching ErrCorrupt and
// leaves the synced version as it was.
func (d *Download) Finish(ctx context.Context, m *snapshot.Manifest, announced [32]byte) (*Installed, error) {
	if d.edit != nil {
		return d.finishEdit(ctx, m, announced)
	}
	if d.ix != nil {
		if err := d.indexRepeats(len(d.chunks)); err != nil {
			return nil, err
		}
		if err := d.Flush(); err != nil {
			return nil, err
		}
	}
	m.Chunks = d.chunks
	var script *diff.Script
	if d.old != nil {
		script = diff.Manifests(d.old, m)
	}
	seqs, oldSeqs, err := d.resolve(script)
	if err != nil {
		return nil, err
	}
	m.SetStreamHash()
	if m.StreamHash != announced {
		return nil, fmt.Errorf("version %d rebuilt with stream hash %x, the server announced %x: %w", m.Version, m.StreamHash, announced, ErrCorrupt)
	}
	in := &Installed{From: d.mk.From, Version: m.Version}
	if d.ix != nil {
		if err := d.ix.close(); err != nil {
			return nil, err
		}
		if d.mk.Records != m.Records {
			return nil, fmt.Errorf("%d records indexed, the manifest says %d: %w", d.mk.Records, m.Records, ErrCorrupt)
		}
		in.Full, in.AllKeys = true, true
		in.Marked, in.MarkedAll = d.marked.Marked, d.marked.MarkedAll
		return in, d.switchTo(m, seqs)
	}
	return in, d.installDelta(ctx, script, seqs, oldSeqs, in)
}

// resolve finds the seq and SHA-256 of every chunk of the new list: stored
// by this download (received now or in an earlier attempt), kept from the
// old version (where the edit script pairs it with one, or found by ID
// when it moved), or an earlier chunk with the same ID (a repeat).
func (d *Download) resolve(script *diff.Script) (seqs, oldSeqs []uint64, err error) {
	seqs = slices.Clone(d.seqs)
	if d.old != nil {
		err = d.f.db.View(func(tx *bolt.Tx) error {
			live := liveSlot(tx)
			if live == nil || getU64(live, skVersion) != d.old.Version {
				return fmt.Errorf("the local version is no longer %d: %w", d.old.Version, ErrCorrupt)
			}
			var err error
			oldSeqs, err = d.s.liveSeqs(live, d.f.gen, d.old.Version, len(d.old.Chunks))
			return err
		})
		if err != nil {
			return nil, nil, err
		}
		keptFromOld(script, func(i, j int) {
			seqs[j], d.chunks[j].Sum = oldSeqs[i], d.old.Chunks[i].Sum
		})
	}
	var byID, oldByID map[snapshot.ChunkID]int // built when needed: repeats and moves are rare
	for j := range d.chunks {
		if seqs[j] != 0 {
			continue
		}
		if byID == nil {
			byID, oldByID = d.chunkIndexes(seqs)
		}
		ch := &d.chunks[j]
		if i, ok := byID[ch.ID]; ok {
			seqs[j], ch.Sum = seqs[i], d.chunks[i].Sum
		} else if i, ok := oldByID[ch.ID]; ok {
			seqs[j], ch.Sum = oldSeqs[i], d.old.Chunks[i].Sum
		} else {
			return nil, nil, fmt.Errorf("chunk %d (%s) of version %d is neither received nor held: %w", j, ch.ID, d.mk.To, ErrCorrupt)
		}
		byID[ch.ID] = j
	}
	return seqs, oldSeqs, nil
}

// keptFromOld calls fn for every chunk the new version keeps from the old
// at a place the edit script pairs (outside its regions): old i, new j.
func keptFromOld(s *diff.Script, fn func(i, j int)) {
	i, j := 0, 0
	run := func(oldTo int) {
		for ; i < oldTo; i, j = i+1, j+1 {
			fn(i, j)
		}
	}
	for _, r := range s.Regions {
		run(r.OldFrom)
		i, j = r.OldTo, r.NewTo
	}
	run(len(s.A.Chunks))
}

// chunkIndexes maps the IDs of the new chunks found so far and of the old
// version's chunks to their indexes.
func (d *Download) chunkIndexes(seqs []uint64) (byID, oldByID map[snapshot.ChunkID]int) {
	byID, oldByID = map[snapshot.ChunkID]int{}, map[snapshot.ChunkID]int{}
	for j, s := range seqs {
		if s != 0 {
			byID[d.chunks[j].ID] = j
		}
	}
	if d.old != nil {
		for i := range d.old.Chunks {
			oldByID[d.old.Chunks[i].ID] = i
		}
	}
	return byID, oldByID
}

// switchTo makes the staging slot the live one: its manifest and chunk
// list are written first; then one small transaction flips the current
// slot, marks the old one for cleanup and ends the download. Readers see
// the old version or the new one, never a mix; a crash in between resumes
// the download, complete, and finishes it again.
func (d *Download) switchTo(m *snapshot.Manifest, seqs []uint64) error {
	err := d.s.update(d.f, func(tx *bolt.Tx) error {
		return writeSlot(tx.Bucket(slotNames[d.slot]), m, seqs, d.s.pageChunks)
	})
	if err != nil {
		return fmt.Errorf("install version %d: %w", d.mk.To, err)
	}
	err = d.s.update(d.f, func(tx *bolt.Tx) error {
		meta := tx.Bucket(dataMeta)
		if old := liveSlot(tx); old != nil {
			if err := old.Put(skState, []byte{slotOld}); err != nil {
				return err
			}
		}
		slot := tx.Bucket(slotNames[d.slot])
		if err := slot.DeleteBucket(sbRecv); err != nil {
			return err
		}
		if err := slot.Put(skState, []byte{slotLive}); err != nil {
			return err
		}
		if err := meta.Put(dmCurrent, []byte{d.slot}); err != nil {
			return err
		}
		if err := meta.Delete(dmNeedFull); err != nil {
			return err
		}
		return meta.Delete(dmDownload)
	})
	if err != nil {
		return fmt.Errorf("install version %d: %w", d.mk.To, err)
	}
	d.s.synced.put(d.f.gen, d.mk.To, m, seqs)
	if d.mk.From == 0 {
		return d.s.promote()
	}
	return d.s.Cleanup()
}

// indexPlan is what a delta does to the index.
type indexPlan struct {
	writes   []indexEntry // loc nil: delete the key
	overflow bool         // more than inPlaceMax writes: rebuild instead
}

// installDelta computes the record changes from the changed stretches
// only, then either applies them to the live index in the switching
// transaction (a small delta: O(change)) or builds the new index in the
// staging slot in batches (a big one).
func (d *Download) installDelta(ctx context.Context, script *diff.Script, seqs, oldSeqs []uint64, in *Installed) error {
	m := script.B
	var plan indexPlan
	err := d.f.db.View(func(tx *bolt.Tx) error {
		var err error
		plan, err = d.planDelta(ctx, tx.Bucket(dataChunks), script, seqs, oldSeqs, in)
		return err
	})
	if err != nil {
		return fmt.Errorf("record changes %d→%d: %w", d.old.Version, m.Version, err)
	}
	if plan.overflow {
		if err := d.Flush(); err != nil {
			return err
		}
		if err := d.rebuildIndex(ctx, m, seqs); err != nil {
			return err
		}
		return d.switchTo(m, seqs)
	}
	drop := unused(script, seqs, oldSeqs)
	err = d.switchInPlace(d.old.Version, plan.writes, drop, func(live *bolt.Bucket) error {
		return updateSlot(live, script, script.B, seqs, d.s.pageChunks)
	})
	if err != nil {
		return err
	}
	d.s.synced.put(d.f.gen, d.mk.To, script.B, seqs)
	return nil
}

// planDelta merges, stretch by stretch, the old records and the new ones
// in key order (both are sorted), streaming: memory holds a chunk of each
// side, not the change.
func (d *Download) planDelta(ctx context.Context, chunks *bolt.Bucket, script *diff.Script, seqs, oldSeqs []uint64, in *Installed) (indexPlan, error) {
	of := func(list []uint64) func(int) (uint64, error) {
		return func(j int) (uint64, error) { return list[j], nil }
	}
	return d.planSpans(ctx, chunks, script.Spans(), of(oldSeqs), of(seqs), in)
}

// planSpans is planDelta for the spans given, the seqs of the old and new
// chunks read through oldSeq and newSeq.
func (d *Download) planSpans(ctx context.Context, chunks *bolt.Bucket, spans []diff.Span, oldSeq, newSeq func(int) (uint64, error), in *Installed) (indexPlan, error) {
	var plan indexPlan
	write := func(key, loc []byte) {
		if len(plan.writes) >= d.s.inPlaceMax {
			plan.overflow, plan.writes = true, nil
		}
		if !plan.overflow {
			plan.writes = append(plan.writes, indexEntry{bytes.Clone(key), bytes.Clone(loc)})
		}
	}
	changed := func(key []byte) {
		in.Changed++
		if in.Changed > MaxChangedKeys {
			in.AllKeys, in.Keys = true, nil
		} else {
			in.Keys = append(in.Keys, string(key))
		}
	}
	loader := func(seqOf func(int) (uint64, error)) func(j int) (uint64, []byte, error) {
		return func(j int) (uint64, []byte, error) {
			if err := ctx.Err(); err != nil {
				return 0, nil, err
			}
			seq, err := seqOf(j)
			if err != nil {
				return 0, nil, err
			}
			if raw, err := d.pendingRaw(seq); raw != nil || err != nil {
				return seq, raw, err
			}
			raw, err := d.s.loadChunk(chunks, d.f.gen, seq)
			return seq, raw, err
		}
	}
	for _, sp := range spans {
		a := newRecIter(sp.OldFrom, sp.OldTo, loader(oldSeq))
		b := newRecIter(sp.NewFrom, sp.NewTo, loader(newSeq))
		if err := mergeSpan(a, b, write, changed); err != nil {
			return plan, err
		}
	}
	return plan, nil
}

// mergeSpan walks one stretch's old and new records together.
func mergeSpan(a, b *recIter, write func(key, loc []byte), changed func(key []byte)) error {
	ra, err := a.next()
	if err != nil {
		return err
	}
	rb, err := b.next()
	if err != nil {
		return err
	}
	for ra != nil || rb != nil {
		c := 0
		switch {
		case ra == nil:
			c = 1
		case rb == nil:
			c = -1
		default:
			c = bytes.Compare(ra.key, rb.key)
		}
		switch {
		case c < 0: // gone
			write(ra.key, nil)
			changed(ra.key)
		case c > 0: // new
			write(rb.key, rb.loc)
			changed(rb.key)
		default:
			if !bytes.Equal(ra.value, rb.value) {
				changed(rb.key)
			}
			if !bytes.Equal(ra.loc, rb.loc) {
				write(rb.key, rb.loc)
			}
		}
		if c <= 0 {
			if ra, err = a.next(); err != nil {
				return err
			}
		}
		if c >= 0 {
			if rb, err = b.next(); err != nil {
				return err
			}
		}
	}
	return nil
}

// switchInPlace installs a small delta in one transaction: the chunks not
// written yet are, the live index gets the planned writes, the live slot
// the new manifest and chunk list (writeList); chunks the new version no
// longer uses (drop) are dropped, and the staging slot, if a batch opened
// it (its chunks are the live version's now), is emptied.
func (d *Download) switchInPlace(from uint64, writes []indexEntry, drop []uint64, writeList func(live *bolt.Bucket) error) error {
	err := d.s.update(d.f, func(tx *bolt.Tx) error {
		live := liveSlot(tx)
		if live == nil || getU64(live, skVersion) != from {
			return fmt.Errorf("the local version is no longer %d: %w", from, ErrCorrupt)
		}
		idx := live.Bucket(sbIndex)
		for _, w := range writes {
			var err error
			if w.loc == nil {
				err = idx.Delete(w.key)
			} else {
				err = idx.Put(w.key, w.loc)
			}
			if err != nil {
				return err
			}
		}
		if err := live.Put(skVersion, u64(d.mk.To)); err != nil {
			return err
		}
		if err := writeList(live); err != nil {
			return err
		}
		chunks := tx.Bucket(dataChunks)
		for _, p := range d.pending {
			if err := chunks.Put(u64(p.seq), p.stored); err != nil {
				return err
			}
		}
		for _, s := range drop {
			if err := chunks.Delete(u64(s)); err != nil {
				return err
			}
		}
		if d.opened {
			if err := resetSlot(tx, d.slot); err != nil {
				return err
			}
		}
		meta := tx.Bucket(dataMeta)
		if err := meta.Put(dmChunkSeq, u64(d.seq)); err != nil {
			return err
		}
		if err := meta.Delete(dmNeedFull); err != nil {
			return err
		}
		return meta.Delete(dmDownload)
	})
	if err != nil {
		return fmt.Errorf("install version %d: %w", d.mk.To, err)
	}
	return nil
}

// unused returns the seqs of the old version's chunks that the new one
// (seqs) no longer uses. Only an old chunk in one of the script's regions
// can be one (the others are kept where they were), so a small delta
// looks up a few candidates instead of making a set of every seq.
func unused(script *diff.Script, seqs, oldSeqs []uint64) []uint64 {
	cand := map[uint64]bool{}
	for _, r := range script.Regions {
		for _, s := range oldSeqs[r.OldFrom:r.OldTo] {
			cand[s] = true
		}
	}
	if len(cand) == 0 {
		return nil
	}
	for _, s := range seqs {
		if delete(cand, s); len(cand) == 0 {
			return nil
		}
	}
	out := make([]uint64, 0, len(cand))
	for s := range cand {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func resetSlot(tx *bolt.Tx, n byte) error {
	if err := tx.DeleteBucket(slotNames[n]); err != nil {
		return err
	}
	_, err := tx.CreateBucket(slotNames[n])
	return err
}

// rebuildIndex writes the whole index of the new version into the staging
// slot, reading its chunks from the store in batches of one transaction
// each.
func (d *Download) rebuildIndex(ctx context.Context, m *snapshot.Manifest, seqs []uint64) error {
	w := &walker{}
	for j := 0; j < len(seqs); {
		err := d.s.update(d.f, func(tx *bolt.Tx) error {
			chunks := tx.Bucket(dataChunks)
			idx := tx.Bucket(slotNames[d.slot]).Bucket(sbIndex)
			idx.FillPercent = 1
			for size := 0; j < len(seqs) && size < d.s.batchBytes; j++ {
				if err := ctx.Err(); err != nil {
					return err
				}
				raw, err := d.s.chunks.decodeUncached(seqs[j], chunks.Get(u64(seqs[j])), nil)
				if err != nil {
					return err
				}
				size += len(raw)
				if err := w.feed(seqs[j], raw, func(r record) error { return idx.Put(r.key, bytes.Clone(r.loc)) }); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("index version %d: %w", m.Version, err)
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	if w.n != m.Records {
		return fmt.Errorf("version %d: %d records indexed, the manifest says %d: %w", m.Version, w.n, m.Records, ErrCorrupt)
	}
	return nil
}

// Cleanup finishes what an install or an abandoned download left in the
// slot that is not live: the chunks only it references are dropped in
// batches (one transaction each), then the slot is emptied. A download in
// progress is left alone. It is idempotent: a crash midway resumes.
func (s *Store) Cleanup() error {
	var idle bool
	err := s.viewTx(func(_ *dataFile, tx *bolt.Tx) error {
		slot, _ := otherSlot(tx)
		st := slotState(slot)
		idle = st == 0 || st == slotStaging && tx.Bucket(dataMeta).Get(dmDownload) != nil
		return nil
	})
	if err != nil || idle {
		return err
	}
	for {
		done, err := s.cleanupStep()
		if err != nil {
			return fmt.Errorf("drop replaced version: %w", err)
		}
		if done {
			return nil
		}
	}
}

const cleanupBatch = 2048

var skDropped = []byte("dropped") // old slot: its seqs before this position are dropped

func (s *Store) cleanupStep() (done bool, err error) {
	err = s.updateData(func(tx *bolt.Tx) error {
		slot, n := otherSlot(tx)
		switch slotState(slot) {
		case 0:
			done = true
			return nil
		case slotStaging:
			if tx.Bucket(dataMeta).Get(dmDownload) != nil {
				done = true // in progress
				return nil
			}
			var err error
			done, err = dropReceived(tx, slot, s.cleanupBatch)
			if err == nil && done {
				err = resetSlot(tx, n)
			}
			return err
		case slotOld:
			var err error
			done, err = dropOld(tx, slot, s.cleanupBatch)
			if err == nil && done {
				err = resetSlot(tx, n)
			}
			return err
		default:
			return fmt.Errorf("slot %d in state %q: %w", n, slotState(slot), ErrCorrupt)
		}
	})
	return done, err
}

// dropReceived drops a batch of an abandoned download's chunks; done when
// none is left.
func dropReceived(tx *bolt.Tx, slot *bolt.Bucket, most int) (bool, error) {
	recv := slot.Bucket(sbRecv)
	if recv == nil {
		return true, nil
	}
	chunks := tx.Bucket(dataChunks)
	c := recv.Cursor()
	n := 0
	for k, v := c.First(); k != nil && n < most; k, v = c.First() {
		for ; len(v) >= recvEntryLen; v = v[recvEntryLen:] {
			if err := chunks.Delete(v[4:12]); err != nil {
				return false, err
			}
			n++
		}
		if err := recv.Delete(k); err != nil {
			return false, err
		}
	}
	k, _ := c.First()
	return k == nil, nil
}

// dropOld drops a batch of a replaced version's chunks that the live
// version does not use; done when it got to the end of its list.
func dropOld(tx *bolt.Tx, slot *bolt.Bucket, most int) (bool, error) {
	old := slotSeqsLenient(slot)
	pos := int(getU64(slot, skDropped))
	if pos >= len(old) {
		return true, nil
	}
	keep := map[uint64]bool{}
	if live := liveSlot(tx); live != nil {
		for _, s := range slotSeqsLenient(live) {
			keep[s] = true
		}
	}
	chunks := tx.Bucket(dataChunks)
	end := min(pos+most, len(old))
	for _, s := range old[pos:end] {
		if !keep[s] {
			if err := chunks.Delete(u64(s)); err != nil {
				return false, err
			}
		}
	}
	if end < len(old) {
		return false, slot.Put(skDropped, u64(uint64(end)))
	}
	return true, nil
}

// seqsOf decodes a chunk list without a length check (cleanup drops what
// it can read).
func seqsOf(b []byte) []uint64 {
	var out []uint64
	for len(b) > 0 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			break
		}
		out = append(out, v)
		b = b[n:]
	}
	return out
}
