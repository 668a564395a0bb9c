package client

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// Edit operations, as they appear in the queue and in patches.
const (
	OpPut    = state.OpPut
	OpMerge  = state.OpMerge
	OpDelete = state.OpDelete
)

// edit is one queued change (state.Edit): stored as JSON in the queue and,
// once the server applied it, among the sent edits until the version
// holding it is pulled.
type edit = state.Edit

// Get returns the value of key in the merged view: the synced version with
// the pending edits laid over it. A missing or deleted key returns an error
// matching ErrNotFound.
func (c *Client) Get(key string) ([]byte, error) {
	if err := snapshot.ValidateKey(key); err != nil {
		return nil, err
	}
	val, found, err := c.store.View(key, ^uint64(0))
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", key, c.noteDamage(err))
	}
	if !found {
		return nil, fmt.Errorf("get %q: %w", key, ErrNotFound)
	}
	return val, nil
}

// noteDamage makes the next pull a full sync when a read found the synced
// version damaged: damage is repaired by refetching.
func (c *Client) noteDamage(err error) error {
	if errors.Is(err, ErrCorrupt) {
		if serr := c.store.SetNeedFull(); serr != nil {
			return errors.Join(err, serr)
		}
	}
	return err
}

// Scan calls fn for every key starting with prefix in the merged view, in
// bytewise key order, until fn returns false.
//
// Scan reads in batches, each from one consistent snapshot, and calls fn
// outside any transaction, so fn may call any method of the Client
// (including Put). The price: if a new version is installed or edits are
// made while a long scan runs, keys after that point reflect them. Each key
// is visited at most once.
func (c *Client) Scan(prefix string, fn func(key string, value []byte) bool) error {
	var after []byte
	for {
		batch, next, err := c.store.ScanBatch([]byte(prefix), after, scanBatchKeys, scanBatchBytes)
		if err != nil {
			return fmt.Errorf("scan %q: %w", prefix, c.noteDamage(err))
		}
		for _, kv := range batch {
			if !fn(kv.Key, kv.Value) {
				return nil
			}
		}
		if next == nil {
			return nil
		}
		after = next
	}
}

// Visitor receives the records of ScanWith. It exists for gomobile, which
// binds interfaces but not func types.
type Visitor interface {
	// Visit is called once per record; returning false stops the scan.
	Visit(key string, value []byte) bool
}

// ScanWith is Scan with a Visitor instead of a func.
func (c *Client) ScanWith(prefix string, v Visitor) error {
	return c.Scan(prefix, v.Visit)
}

// Scan batch limits: enough to amortise a transaction, small enough to keep
// memory flat for large data sets.
const (
	scanBatchKeys  = 512
	scanBatchBytes = 4 << 20
)

// Export writes the merged view to w as NDJSON, one {"key":…,"value":…}
// object per line, sorted by key: the same interchange format the batch
// builder reads.
func (c *Client) Export(w io.Writer) error {
	var werr error
	var line []byte
	err := c.Scan("", func(key string, value []byte) bool {
		k, err := snapshot.MarshalCanonical(key)
		if err != nil {
			werr = err
			return false
		}
		line = append(line[:0], `{"key":`...)
		line = append(line, k...)
		line = append(line, `,"value":`...)
		line = append(line, value...)
		line = append(line, "}\n"...)
		if _, err := w.Write(line); err != nil {
			werr = fmt.Errorf("export: %w", err)
			return false
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}

// Put queues a whole new value for key. valueJSON may be any single JSON
// value; it is stored canonically. A value over the largest record the
// server accepts (ErrTooLarge) is refused. Put returns once the edit is
// durable on disk; it never touches the network.
func (c *Client) Put(key string, valueJSON []byte) error {
	if err := snapshot.ValidateKey(key); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	lim := c.patchLimits()
	v, err := c.canonicalValue(valueJSON, "value", lim)
	if err != nil {
		return fmt.Errorf("put %q: %w", key, err)
	}
	return c.queueEdit(&edit{Op: OpPut, Key: key, Value: v}, lim)
}

// Merge queues an RFC 7386 JSON merge patch for key. The patch must be a
// JSON object. The current value (in the merged view) must be an object or
// absent (absent counts as {}); merging onto an array, string, number, bool
// or null is rejected, as are a patch or a result over the largest record
// the server accepts (ErrTooLarge).
func (c *Client) Merge(key string, patchJSON []byte) error {
	if err := snapshot.ValidateKey(key); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	lim := c.patchLimits()
	p, err := c.canonicalValue(patchJSON, "merge patch", lim)
	if err != nil {
		return fmt.Errorf("merge %q: %w", key, err)
	}
	if p[0] != '{' {
		return fmt.Errorf("merge %q: patch is not a JSON object: %w", key, ErrInvalid)
	}
	return c.queueEdit(&edit{Op: OpMerge, Key: key, Patch: p}, lim)
}

// Delete queues the removal of key. Deleting a key that the merged view does
// not hold is allowed: the server may hold it.
func (c *Client) Delete(key string) error {
	if err := snapshot.ValidateKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	return c.queueEdit(&edit{Op: OpDelete, Key: key}, c.patchLimits())
}

// canonicalValue canonicalises a value or merge patch (what names it in
// errors) and refuses it over the record limit of lim.
func (c *Client) canonicalValue(raw []byte, what string, lim diff.Limits) ([]byte, error) {
	if len(raw) > 2*snapshot.MaxValueLen {
		// Whitespace can shrink, but not by half in anything sane; refuse
		// before spending memory on decoding it.
		return nil, c.checkRecordSize(what, len(raw), lim)
	}
	v, err := snapshot.CanonicalJSON(raw)
	if err != nil {
		return nil, err
	}
	if err := c.checkRecordSize(what, len(v), lim); err != nil {
		return nil, err
	}
	return v, nil
}

// queueEdit assigns the next seq and stores e in one transaction of the
// edit queue (state.db), fsync'd on commit, so the edit is durable when
// this returns nil. An install writes the other file: an edit never waits
// for one. lim is the record limit a merge's result is held to.
func (c *Client) queueEdit(e *edit, lim diff.Limits) error {
	e.At = time.Now().UnixMilli()
	var size, txid int
	err := c.store.UpdateEdits(func(tx *state.EditsTx) error {
		txid = tx.ID()
		if tx.Meta(state.MetaWiped) != nil {
			return ErrWiped
		}
		if e.Op == OpMerge {
			if err := c.checkMerge(tx, e, lim); err != nil {
				return err
			}
		}
		var err error
		size, err = tx.Enqueue(e)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s %q: %w", e.Op, e.Key, err)
	}
	c.st.mu.Lock()
	c.st.pendingEdits++
	c.st.pendingBytes += int64(size)
	if b := &c.st.blocked; b.txid < txid {
		if b.has(e.Key) {
			// It waits behind the blocked edit of its record.
			b.list[b.keys[e.Key]].Waiting++
			b.count++
		}
		b.txid = txid // a scan from before this edit is stale now
	}
	c.st.mu.Unlock()
	c.emitStatus()
	c.notifyEdited(e.Key)
	c.notifyWake()
	return nil
}

// checkMerge rejects a merge onto a non-object and a result over the record
// limit.
func (c *Client) checkMerge(tx *state.EditsTx, e *edit, lim diff.Limits) error {
	cur, found, err := tx.View(e.Key, ^uint64(0))
	if err != nil {
		return err
	}
	if found && (len(cur) == 0 || cur[0] != '{') {
		return fmt.Errorf("current value is not a JSON object: %w", ErrInvalid)
	}
	f := diff.NewFold(cur, 0)
	op := e.PatchOp()
	if _, err := f.Apply(&op); err != nil {
		return err
	}
	merged, err := f.Value()
	if err != nil {
		return err
	}
	return c.checkRecordSize("merged value", len(merged), lim)
}
