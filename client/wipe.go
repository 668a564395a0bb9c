package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/deltasync/deltasync/client/internal/state"
)

var (
	// ErrPendingEdits reports a Wipe refused because edits made on this
	// device have not reached the server (no connection, or edits that
	// cannot be sent); Wipe(ctx, true) drops them.
	ErrPendingEdits = errors.New("edits made on this device have not reached the server")
	// ErrWiped reports an edit on a client whose state is being wiped.
	ErrWiped = errors.New("the client state was wiped")
)

// Wipe removes this user's local state for a shared device: records, edit
// queue, conflicts, counters, settings and token, by deleting the state
// files (state.db, data.db, and data.next.db of a full sync under way; and
// the state directory if that leaves it empty). Unless force is set, the
// pending edits are pushed first and Wipe fails with an error matching
// ErrPendingEdits, changing nothing, if any remain; with force they are
// dropped. After Wipe the Client is closed: open the directory again for
// the next user.
//
// Deleting a file does not overwrite the flash it was on; a device that
// must resist forensic recovery needs the platform's encrypted storage.
func (c *Client) Wipe(ctx context.Context, force bool) error {
	c.Stop()
	if !force && c.Status().PendingEdits > 0 {
		if _, err := c.Push(ctx); err != nil {
			return fmt.Errorf("wipe: %w: %w", ErrPendingEdits, err)
		}
	}
	c.netMu.Lock()
	defer c.netMu.Unlock()
	if err := c.sealForWipe(force); err != nil {
		return fmt.Errorf("wipe: %w", err)
	}
	if err := c.store.Close(); err != nil {
		return fmt.Errorf("wipe: %w", err)
	}
	if err := removeBlobs(c.dir); err != nil { // blobs.go
		return fmt.Errorf("wipe: %w", err)
	}
	if err := state.Remove(c.dir); err != nil {
		return fmt.Errorf("wipe: %w", err)
	}
	return nil
}

// sealForWipe checks, in the same transaction that marks the state wiped,
// that no edit is left (unless force): an edit made meanwhile either
// committed before (and is counted) or fails with ErrWiped.
func (c *Client) sealForWipe(force bool) error {
	return c.store.UpdateEdits(func(tx *state.EditsTx) error {
		if n := tx.QueueLen(); n > 0 && !force {
			return fmt.Errorf("%d edit(s) not sent (see Status and Blocked; force drops them): %w", n, ErrPendingEdits)
		}
		return tx.SetMeta(state.MetaWiped, []byte{1})
	})
}

// wipedState reports whether st was sealed by a Wipe that did not finish.
func wipedState(st *state.Store) bool {
	v, err := st.Meta(state.MetaWiped)
	return err == nil && v != nil
}
