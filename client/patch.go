package client

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/diff"
)

// errNoPatch reports completePatch for a patch that is not in flight
// (already completed, or never begun).
var errNoPatch = errors.New("no such patch in flight")

var inflightKey = []byte("patch")

// inflightPatch is the patch being pushed. It is persisted before the first
// send, so every retry (also after a restart) sends the same id with the
// same edits against the same base, and the server applies it once.
type inflightPatch struct {
	ID      string   `json:"id"`
	Base    uint64   `json:"base"`    // local version when the patch was formed
	Seqs    []uint64 `json:"seqs"`    // queue seqs, ascending
	Created int64    `json:"created"` // unix milliseconds
	// Seen is diff.Patch.Seen: per key, the hash of the value the local view
	// held before this patch's first edit of it (the synced value with this
	// device's earlier, already sent edits over it). Fixed with the id, so
	// a resent patch is byte for byte the same.
	Seen map[string]string `json:"seen,omitempty"`
}

// pendingEdits returns the queued edits (not yet applied by the server) in
// queue order.
func (c *Client) pendingEdits() ([]*edit, error) {
	var out []*edit
	err := c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQueue).ForEach(func(_, v []byte) error {
			e, err := decodeEdit(v)
			if err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// beginPatch returns the patch in flight with its edits, forming one first
// if there is none (formPatch), persisted before it returns. With nothing
// that can be sent pending it returns nil.
func (c *Client) beginPatch() (*inflightPatch, []*edit, error) {
	lim := c.patchLimits()
	var p *inflightPatch
	var edits []*edit
	var bs blockedSet
	scanned := false
	err := c.db.Update(func(tx *bolt.Tx) error {
		p, edits, scanned = nil, nil, false
		if raw := tx.Bucket(bucketInflight).Get(inflightKey); raw != nil {
			var err error
			p, edits, err = loadInflight(tx, raw)
			return err
		}
		var err error
		if bs, err = scanBlocked(tx, lim); err != nil {
			return err
		}
		scanned = true
		if p, edits, err = formPatch(tx, lim, &bs); err != nil || p == nil {
			return err
		}
		raw, err := json.Marshal(p)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketInflight).Put(inflightKey, raw)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("begin patch: %w", err)
	}
	if scanned {
		c.setBlocked(bs)
	}
	return p, edits, nil
}

// loadInflight reads the persisted patch in flight and its edits.
func loadInflight(tx *bolt.Tx, raw []byte) (*inflightPatch, []*edit, error) {
	p := new(inflightPatch)
	if err := json.Unmarshal(raw, p); err != nil {
		return nil, nil, fmt.Errorf("patch in flight: %v: %w", err, ErrCorrupt)
	}
	q := tx.Bucket(bucketQueue)
	var edits []*edit
	for _, seq := range p.Seqs {
		v := q.Get(u64(seq))
		if v == nil {
			return nil, nil, fmt.Errorf("patch %s names edit %d, which is not queued: %w", p.ID, seq, ErrCorrupt)
		}
		e, err := decodeEdit(v)
		if err != nil {
			return nil, nil, err
		}
		edits = append(edits, e)
	}
	return p, edits, nil
}

// formPatch takes the oldest pending edits that can be sent into a new
// patch with a fresh random id: as many as fit lim's MaxOps and MaxBytes
// (measured on the body sendPatch will send, Seen included), but at least
// one, which may be as large as one record. Edits of the keys in blocked
// stay queued. It returns nil if nothing can be sent.
func formPatch(tx *bolt.Tx, lim diff.Limits, blocked *blockedSet) (*inflightPatch, []*edit, error) {
	id, err := newPatchID()
	if err != nil {
		return nil, nil, err
	}
	p := &inflightPatch{
		ID:      id,
		Base:    getU64(tx.Bucket(bucketMeta), metaVersion),
		Created: time.Now().UnixMilli(),
		Seen:    map[string]string{},
	}
	var edits []*edit
	size := diff.NewPatchSize(p.ID, p.Base)
	cur := tx.Bucket(bucketQueue).Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		e, err := decodeEdit(v)
		if err != nil {
			return nil, nil, err
		}
		if blocked.has(e.Key) {
			continue
		}
		next := size
		next.AddOp(e.op())
		_, seen := p.Seen[e.Key]
		var hash string
		if !seen {
			if hash, err = seenBefore(tx, e); err != nil {
				return nil, nil, err
			}
			next.AddSeen(e.Key, hash)
		}
		if len(edits) > 0 && (next.Ops() > lim.MaxOps || next.Bytes() > lim.MaxBytes) {
			break
		}
		size = next
		edits = append(edits, e)
		p.Seqs = append(p.Seqs, e.Seq)
		if !seen {
			p.Seen[e.Key] = hash
		}
	}
	if len(edits) == 0 {
		return nil, nil, nil
	}
	return p, edits, nil
}

// seenBefore is the Seen entry of e's key: the hash of the value the local
// view held before e (the synced value with this device's earlier edits,
// already sent, laid over it).
func seenBefore(tx *bolt.Tx, e *edit) (string, error) {
	v, found, err := viewValueBefore(tx, e.Key, e.Seq)
	if err != nil {
		return "", err
	}
	if !found {
		v = nil
	}
	return diff.SeenHash(v), nil
}

// op is the edit as a patch op.
func (e *edit) op() diff.Op {
	return diff.Op{Op: e.Op, Key: e.Key, Value: e.Value, Patch: e.Patch}
}

func newPatchID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("patch id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// completePatch records the server's answer to the patch in flight, in one
// transaction:
//   - the edits in applied (each must belong to the patch) leave the queue.
//     If serverVersion is newer than the local version they move to the sent
//     bucket and stay laid over the records until a version >= serverVersion
//     is installed, so the app does not see them vanish and reappear;
//   - edits of the patch not in applied stay queued and go out again in the
//     next patch (with a new id): the caller decides which receipts count as
//     done (a rejected or conflicting edit that the server resolved belongs
//     in applied, with a Conflict saying what happened);
//   - conflicts are stored until the app acknowledges them;
//   - the patch is no longer in flight.
func (c *Client) completePatch(id string, serverVersion uint64, applied []uint64, conflicts []Conflict) error {
	return c.completePatchX(id, serverVersion, applied, nil, conflicts)
}

// completePatchX is completePatch where the applied edits in notInVersion
// (rejected, or lost a conflict to the server's value) leave the view at
// once instead of staying laid over the records until serverVersion is
// pulled: the server's version does not contain them.
func (c *Client) completePatchX(id string, serverVersion uint64, applied []uint64, notInVersion map[uint64]bool, conflicts []Conflict) error {
	var removed int
	var removedBytes int64
	var left []string // keys whose edits left the view
	err := c.db.Update(func(tx *bolt.Tx) error {
		removed, removedBytes, left = 0, 0, nil
		raw := tx.Bucket(bucketInflight).Get(inflightKey)
		if raw == nil {
			return fmt.Errorf("patch %s: %w", id, errNoPatch)
		}
		var p inflightPatch
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("patch in flight: %v: %w", err, ErrCorrupt)
		}
		if p.ID != id {
			return fmt.Errorf("patch %s (in flight: %s): %w", id, p.ID, errNoPatch)
		}
		inPatch := make(map[uint64]bool, len(p.Seqs))
		for _, s := range p.Seqs {
			inPatch[s] = true
		}
		q, sent, idx := tx.Bucket(bucketQueue), tx.Bucket(bucketSent), tx.Bucket(bucketEditIndex)
		keep := serverVersion > getU64(tx.Bucket(bucketMeta), metaVersion)
		for _, seq := range applied {
			if !inPatch[seq] {
				return fmt.Errorf("patch %s: edit %d is not part of it: %w", id, seq, ErrInvalid)
			}
			inPatch[seq] = false // a seq listed twice counts once
			k := u64(seq)
			v := q.Get(k)
			if v == nil {
				return fmt.Errorf("patch %s names edit %d, which is not queued: %w", id, seq, ErrCorrupt)
			}
			e, err := decodeEdit(v)
			if err != nil {
				return err
			}
			removed++
			removedBytes += int64(len(v))
			if err := q.Delete(k); err != nil {
				return err
			}
			if keep && !notInVersion[seq] {
				e.Version = serverVersion
				b, err := json.Marshal(e)
				if err != nil {
					return err
				}
				if err := sent.Put(k, b); err != nil {
					return err
				}
			} else if err := idx.Delete(indexKey(e.Key, seq)); err != nil {
				return err
			} else {
				left = append(left, e.Key)
			}
		}
		if err := tx.Bucket(bucketInflight).Delete(inflightKey); err != nil {
			return err
		}
		if err := addConflicts(tx, id, conflicts); err != nil {
			return err
		}
		_, err := c.putCounters(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("complete patch: %w", err)
	}
	c.st.mu.Lock()
	c.st.pendingEdits -= removed
	c.st.pendingBytes -= removedBytes
	c.st.conflicts += len(conflicts)
	c.st.mu.Unlock()
	c.emitStatus()
	c.notifyEdited(left...)
	return nil
}

// Conflict is one conflict the server reported for an edit of this device:
// the same field changed here and on the server. It is kept until the app
// acknowledges it.
type Conflict struct {
	ID          int64  // local id, increasing; see AckConflictsThrough
	PatchID     string // the patch that carried the edit
	Key         string
	Op          string // the edit's op: put, merge or delete
	Policy      string // how it was resolved (wire.PolicyClientWins, ...)
	ClientValue []byte // JSON this device wrote (nil for a delete)
	ServerValue []byte // JSON the server held (nil if absent)
	At          int64  // unix milliseconds

	// Status is "conflict" (the same field changed on both sides, or a
	// delete against an update) or "rejected" (the server refused the
	// edit; it can never apply as it is). Empty in conflicts stored by
	// older builds, which were all conflicts.
	Status string
	// Won reports whether this device's edit took effect (a conflict
	// resolved for the client); false for rejected edits and for
	// conflicts the server's value won or that the reject policy stopped.
	Won bool
	// Fields are the conflicting field paths, comma-separated.
	Fields string
	// Reason explains a rejection, in the server's words.
	Reason string
	// Pending reports that the edit is still queued (the org's reject
	// policy stopped the whole patch): see Rebase and DiscardEdits.
	Pending bool
}

func addConflicts(tx *bolt.Tx, patchID string, cs []Conflict) error {
	b := tx.Bucket(bucketConflicts)
	meta := tx.Bucket(bucketMeta)
	for _, cf := range cs {
		id := getU64(meta, metaConflictID) + 1
		if err := meta.Put(metaConflictID, u64(id)); err != nil {
			return err
		}
		cf.ID = int64(id)
		if cf.PatchID == "" {
			cf.PatchID = patchID
		}
		if cf.At == 0 {
			cf.At = time.Now().UnixMilli()
		}
		raw, err := json.Marshal(cf)
		if err != nil {
			return err
		}
		if err := b.Put(u64(id), raw); err != nil {
			return err
		}
	}
	return nil
}

// Conflicts returns the unacknowledged conflicts, oldest first.
func (c *Client) Conflicts() ([]Conflict, error) {
	var out []Conflict
	err := c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketConflicts).ForEach(func(_, v []byte) error {
			var cf Conflict
			if err := json.Unmarshal(v, &cf); err != nil {
				return fmt.Errorf("stored conflict: %v: %w", err, ErrCorrupt)
			}
			out = append(out, cf)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("conflicts: %w", err)
	}
	return out, nil
}

// ConflictCount returns the number of unacknowledged conflicts.
func (c *Client) ConflictCount() int {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return c.st.conflicts
}

// ConflictAt returns the i-th unacknowledged conflict (0 is the oldest), for
// gomobile callers that cannot take a slice of structs.
func (c *Client) ConflictAt(i int) (*Conflict, error) {
	var cf *Conflict
	err := c.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketConflicts).Cursor()
		n := 0
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			if n == i {
				cf = new(Conflict)
				if err := json.Unmarshal(v, cf); err != nil {
					return fmt.Errorf("stored conflict: %v: %w", err, ErrCorrupt)
				}
				return nil
			}
			n++
		}
		return fmt.Errorf("conflict %d of %d: %w", i, n, ErrNotFound)
	})
	if err != nil {
		return nil, err
	}
	return cf, nil
}

// AckConflicts removes every stored conflict. To acknowledge only those the
// app has shown (a conflict may arrive in between), use AckConflictsThrough.
func (c *Client) AckConflicts() error {
	return c.AckConflictsThrough(-1)
}

// AckConflictsThrough removes the stored conflicts with ID <= id (all of
// them if id is negative).
func (c *Client) AckConflictsThrough(id int64) error {
	var left int
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConflicts)
		cur := b.Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.First() {
			if id >= 0 && binary.BigEndian.Uint64(k) > uint64(id) {
				break
			}
			if err := b.Delete(bytes.Clone(k)); err != nil {
				return err
			}
		}
		left = countKeys(b)
		return nil
	})
	if err != nil {
		return fmt.Errorf("acknowledge conflicts: %w", err)
	}
	c.st.mu.Lock()
	c.st.conflicts = left
	c.st.mu.Unlock()
	c.emitStatus()
	return nil
}

// countKeys counts by walking: Bucket.Stats does not see a write
// transaction's own changes.
func countKeys(b *bolt.Bucket) int {
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}
