package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

var (
	// ErrPendingEdits reports a Wipe refused because edits made on this
	// device have not reached the server (no connection, or edits that
	// cannot be sent); Wipe(ctx, true) drops them.
	ErrPendingEdits = errors.New("edits made on this device have not reached the server")
	// ErrWiped reports an edit on a client whose state is being wiped.
	ErrWiped = errors.New("the client state was wiped")
)

// metaWiped marks a state file that Wipe has sealed: nothing may be added
// to it, and if the process dies before the file is removed, the next Open
// removes it.
var metaWiped = []byte("wiped")

// Wipe removes this user's local state for a shared device: records, edit
// queue, chunk cache, conflicts, counters, settings and token, by deleting
// the state file (and the state directory if that leaves it empty). Unless
// force is set, the pending edits are pushed first and Wipe fails with an
// error matching ErrPendingEdits, changing nothing, if any remain; with
// force they are dropped. After Wipe the Client is closed: open the
// directory again for the next user.
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
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("wipe: close client state: %w", err)
	}
	if err := removeState(c.dir); err != nil {
		return fmt.Errorf("wipe: %w", err)
	}
	return nil
}

// sealForWipe checks, in the same transaction that marks the file wiped,
// that no edit is left (unless force): an edit made meanwhile either
// committed before (and is counted) or fails with ErrWiped.
func (c *Client) sealForWipe(force bool) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		if n := countKeys(tx.Bucket(bucketQueue)); n > 0 && !force {
			return fmt.Errorf("%d edit(s) not sent (see Status and Blocked; force drops them): %w", n, ErrPendingEdits)
		}
		return tx.Bucket(bucketMeta).Put(metaWiped, []byte{1})
	})
}

// removeState deletes the state file of dir, syncs the directory, and
// removes the directory if nothing else is in it.
func removeState(dir string) error {
	if err := os.Remove(filepath.Join(dir, StateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove client state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	os.Remove(dir) // only if empty: the app may keep its own files there
	return nil
}

// wipedFile reports whether db was sealed by a Wipe that did not finish.
func wipedFile(db *bolt.DB) bool {
	var sealed bool
	db.View(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			sealed = meta.Get(metaWiped) != nil
		}
		return nil
	})
	return sealed
}
