package client

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/diff"
)

// errNoPatch reports completePatch for a patch that is not in flight
// (already completed, or never begun).
var errNoPatch = errors.New("no such patch in flight")

// inflightPatch is the patch being pushed (state.Inflight): persisted
// before the first send, so every retry (also after a restart) sends the
// same id with the same edits against the same base, and the server
// applies it once.
type inflightPatch = state.Inflight

// pendingEdits returns the queued edits (not yet applied by the server) in
// queue order.
func (c *Client) pendingEdits() ([]*edit, error) {
	var out []*edit
	err := c.store.ViewEdits(func(tx *state.EditsTx) error {
		return tx.ForEachQueued(func(e *edit, _ int) error {
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
	base, err := c.store.Version()
	if err != nil {
		return nil, nil, fmt.Errorf("begin patch: %w", err)
	}
	var p *inflightPatch
	var edits []*edit
	var bs blockedSet
	scanned := false
	err = c.store.UpdateEdits(func(tx *state.EditsTx) error {
		p, edits, scanned = nil, nil, false
		var err error
		if p, err = tx.Inflight(); err != nil || p != nil {
			if p != nil {
				edits, err = loadInflight(tx, p)
			}
			return err
		}
		if bs, err = scanBlocked(tx, lim); err != nil {
			return err
		}
		scanned = true
		if p, edits, err = formPatch(tx, base, lim, &bs); err != nil || p == nil {
			return err
		}
		return tx.SetInflight(p)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("begin patch: %w", err)
	}
	if scanned {
		c.setBlocked(bs)
	}
	return p, edits, nil
}

// loadInflight reads the edits of the persisted patch in flight.
func loadInflight(tx *state.EditsTx, p *inflightPatch) ([]*edit, error) {
	var edits []*edit
	for _, seq := range p.Seqs {
		e, _, err := tx.Queued(seq)
		if err != nil {
			return nil, err
		}
		if e == nil {
			return nil, fmt.Errorf("patch %s names edit %d, which is not queued: %w", p.ID, seq, ErrCorrupt)
		}
		edits = append(edits, e)
	}
	return edits, nil
}

// formPatch takes the oldest pending edits that can be sent into a new
// patch with a fresh random id, based on the synced version base: as many
// as fit lim's MaxOps and MaxBytes (measured on the body sendPatch will
// send, Seen included), but at least one, which may be as large as one
// record. Edits of the keys in blocked stay queued. It returns nil if
// nothing can be sent.
func formPatch(tx *state.EditsTx, base uint64, lim diff.Limits, blocked *blockedSet) (*inflightPatch, []*edit, error) {
	id, err := newPatchID()
	if err != nil {
		return nil, nil, err
	}
	p := &inflightPatch{
		ID:      id,
		Base:    base,
		Created: time.Now().UnixMilli(),
		Seen:    map[string]string{},
	}
	var edits []*edit
	size := diff.NewPatchSize(p.ID, p.Base)
	errFull := errors.New("patch full")
	err = tx.ForEachQueued(func(e *edit, _ int) error {
		if blocked.has(e.Key) {
			return nil
		}
		next := size
		next.AddOp(e.PatchOp())
		_, seen := p.Seen[e.Key]
		var hash string
		if !seen {
			var err error
			if hash, err = seenBefore(tx, e); err != nil {
				return err
			}
			next.AddSeen(e.Key, hash)
		}
		if len(edits) > 0 && (next.Ops() > lim.MaxOps || next.Bytes() > lim.MaxBytes) {
			return errFull
		}
		size = next
		edits = append(edits, e)
		p.Seqs = append(p.Seqs, e.Seq)
		if !seen {
			p.Seen[e.Key] = hash
		}
		return nil
	})
	if err != nil && err != errFull {
		return nil, nil, err
	}
	if len(edits) == 0 {
		return nil, nil, nil
	}
	return p, edits, nil
}

// seenBefore is the Seen entry of e's key: the hash of the value the local
// view held before e (the synced value with this device's earlier edits,
// already sent, laid over it).
func seenBefore(tx *state.EditsTx, e *edit) (string, error) {
	v, found, err := tx.View(e.Key, e.Seq)
	if err != nil {
		return "", err
	}
	if !found {
		v = nil
	}
	return diff.SeenHash(v), nil
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
	local, err := c.store.Version()
	if err != nil {
		return fmt.Errorf("complete patch: %w", err)
	}
	// Kept laid over the synced records until the version holding them
	// is installed (a version installed meanwhile that holds them hides
	// them: reads compare versions).
	keep := serverVersion > local
	var removed int
	var removedBytes int64
	var left []string // keys whose edits left the view
	err = c.store.UpdateEdits(func(tx *state.EditsTx) error {
		removed, removedBytes, left = 0, 0, nil
		p, err := tx.Inflight()
		if err != nil {
			return err
		}
		if p == nil {
			return fmt.Errorf("patch %s: %w", id, errNoPatch)
		}
		if p.ID != id {
			return fmt.Errorf("patch %s (in flight: %s): %w", id, p.ID, errNoPatch)
		}
		inPatch := make(map[uint64]bool, len(p.Seqs))
		for _, s := range p.Seqs {
			inPatch[s] = true
		}
		for _, seq := range applied {
			if !inPatch[seq] {
				return fmt.Errorf("patch %s: edit %d is not part of it: %w", id, seq, ErrInvalid)
			}
			inPatch[seq] = false // a seq listed twice counts once
			sentAs := uint64(0)
			if keep && !notInVersion[seq] {
				sentAs = serverVersion
			}
			e, size, err := tx.Complete(seq, sentAs)
			if err != nil {
				return fmt.Errorf("patch %s: %w", id, err)
			}
			removed++
			removedBytes += int64(size)
			if sentAs == 0 {
				left = append(left, e.Key)
			}
		}
		if err := tx.SetInflight(nil); err != nil {
			return err
		}
		if err := addConflicts(tx, id, conflicts); err != nil {
			return err
		}
		_, err = c.putCounters(tx)
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

func addConflicts(tx *state.EditsTx, patchID string, cs []Conflict) error {
	for _, cf := range cs {
		err := tx.AddConflict(func(id uint64) ([]byte, error) {
			cf.ID = int64(id)
			if cf.PatchID == "" {
				cf.PatchID = patchID
			}
			if cf.At == 0 {
				cf.At = time.Now().UnixMilli()
			}
			return json.Marshal(cf)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Conflicts returns the unacknowledged conflicts, oldest first.
func (c *Client) Conflicts() ([]Conflict, error) {
	var out []Conflict
	err := c.store.ViewEdits(func(tx *state.EditsTx) error {
		return tx.ForEachConflict(func(v []byte) (bool, error) {
			var cf Conflict
			if err := json.Unmarshal(v, &cf); err != nil {
				return false, fmt.Errorf("stored conflict: %v: %w", err, ErrCorrupt)
			}
			out = append(out, cf)
			return true, nil
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
	err := c.store.ViewEdits(func(tx *state.EditsTx) error {
		n := 0
		err := tx.ForEachConflict(func(v []byte) (bool, error) {
			if n < i {
				n++
				return true, nil
			}
			cf = new(Conflict)
			if err := json.Unmarshal(v, cf); err != nil {
				return false, fmt.Errorf("stored conflict: %v: %w", err, ErrCorrupt)
			}
			return false, nil
		})
		if err == nil && cf == nil {
			err = fmt.Errorf("conflict %d of %d: %w", i, n, ErrNotFound)
		}
		return err
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
	err := c.store.UpdateEdits(func(tx *state.EditsTx) error {
		var err error
		left, err = tx.AckConflictsThrough(id)
		return err
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
