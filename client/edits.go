package client

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// Edit operations, as they appear in the queue and in patches.
const (
	OpPut    = "put"
	OpMerge  = "merge"
	OpDelete = "delete"
)

// edit is one queued change, stored as JSON in bucketQueue (and, once the
// server applied it, in bucketSent until the version holding it is pulled).
type edit struct {
	Seq   uint64          `json:"seq"`
	Op    string          `json:"op"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value,omitempty"` // put: canonical JSON
	Patch json.RawMessage `json:"patch,omitempty"` // merge: canonical JSON object
	At    int64           `json:"at"`              // unix milliseconds
	// Version is set only in bucketSent: the server version that contains
	// the edit. Until a version at least this new is installed, the edit is
	// still laid over the synced records so the app never sees it vanish.
	Version uint64 `json:"version,omitempty"`
}

func decodeEdit(raw []byte) (*edit, error) {
	var e edit
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("queued edit: %v: %w", err, ErrCorrupt)
	}
	return &e, nil
}

// indexKey is key 0x00 seq. Keys never contain NUL, so index entries sort
// by key (bytewise, like the records) and then by seq.
func indexKey(key string, seq uint64) []byte {
	b := make([]byte, 0, len(key)+9)
	b = append(b, key...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, seq)
}

// splitIndexKey returns the record key and the seq bytes of an index entry.
func splitIndexKey(k []byte) (key, seq []byte) {
	i := bytes.IndexByte(k, 0)
	if i < 0 || len(k)-i-1 != 8 {
		return nil, nil
	}
	return k[:i], k[i+1:]
}

// Get returns the value of key in the merged view: the synced version with
// the pending edits laid over it. A missing or deleted key returns an error
// matching ErrNotFound.
func (c *Client) Get(key string) ([]byte, error) {
	if err := snapshot.ValidateKey(key); err != nil {
		return nil, err
	}
	var val []byte
	var found bool
	err := c.db.View(func(tx *bolt.Tx) error {
		var err error
		val, found, err = viewValue(tx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get %q: %w", key, err)
	}
	if !found {
		return nil, fmt.Errorf("get %q: %w", key, ErrNotFound)
	}
	return val, nil
}

// viewValue computes the merged value of one key inside tx. The result is
// safe to use after tx ends.
func viewValue(tx *bolt.Tx, key string) ([]byte, bool, error) {
	return viewValueBefore(tx, key, ^uint64(0))
}

// viewValueBefore is viewValue with only the edits older than seq laid over
// the synced value.
func viewValueBefore(tx *bolt.Tx, key string, seq uint64) ([]byte, bool, error) {
	var o overlay
	if v := tx.Bucket(bucketRecords).Get([]byte(key)); v != nil {
		o.set(bytes.Clone(v))
	}
	prefix := append([]byte(key), 0)
	cur := tx.Bucket(bucketEditIndex).Cursor()
	for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
		if getSeq(k[len(prefix):]) >= seq {
			break
		}
		e, err := loadIndexedEdit(tx, k[len(prefix):])
		if err != nil {
			return nil, false, err
		}
		if err := o.apply(e); err != nil {
			return nil, false, err
		}
	}
	return o.result()
}

// loadIndexedEdit finds the edit with the given seq in the queue or among
// the sent edits.
func loadIndexedEdit(tx *bolt.Tx, seq []byte) (*edit, error) {
	raw := tx.Bucket(bucketQueue).Get(seq)
	if raw == nil {
		raw = tx.Bucket(bucketSent).Get(seq)
	}
	if raw == nil {
		return nil, fmt.Errorf("edit index names missing edit %x: %w", seq, ErrCorrupt)
	}
	return decodeEdit(raw)
}

// overlay folds edits over a base value. It keeps the value as bytes until a
// merge needs it decoded, and decodes once for a run of merges.
type overlay struct {
	val     []byte
	doc     any
	decoded bool
	found   bool
}

func (o *overlay) set(v []byte) { o.val, o.doc, o.decoded, o.found = v, nil, false, true }

func (o *overlay) apply(e *edit) error {
	switch e.Op {
	case OpPut:
		o.set(e.Value)
	case OpDelete:
		*o = overlay{}
	case OpMerge:
		if !o.decoded {
			o.doc = nil
			if o.found {
				d, err := snapshot.DecodeJSON(o.val)
				if err != nil {
					return fmt.Errorf("value under merge: %w", err)
				}
				o.doc = d
			}
			o.decoded = true
		}
		p, err := snapshot.DecodeJSON(e.Patch)
		if err != nil {
			return fmt.Errorf("queued merge patch %d: %w", e.Seq, err)
		}
		o.doc, o.found = diff.MergePatch(o.doc, p), true
	default:
		return fmt.Errorf("queued edit %d has unknown op %q: %w", e.Seq, e.Op, ErrCorrupt)
	}
	return nil
}

func (o *overlay) result() ([]byte, bool, error) {
	if !o.found {
		return nil, false, nil
	}
	if o.decoded {
		v, err := snapshot.MarshalCanonical(o.doc)
		if err != nil {
			return nil, false, err
		}
		o.val, o.decoded = v, false
	}
	return o.val, true, nil
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
		batch, more, err := c.scanBatch([]byte(prefix), after)
		if err != nil {
			return fmt.Errorf("scan %q: %w", prefix, err)
		}
		for _, kv := range batch {
			if !fn(kv.key, kv.value) {
				return nil
			}
		}
		if !more {
			return nil
		}
		after = []byte(batch[len(batch)-1].key)
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

type keyValue struct {
	key   string
	value []byte
}

// Scan batch limits: enough to amortise a transaction, small enough to keep
// memory flat for large data sets.
const (
	scanBatchKeys  = 512
	scanBatchBytes = 4 << 20
)

// scanBatch returns the next records of the merged view with the prefix,
// starting after the key after (nil: from the start). more reports whether
// the scan must go on.
func (c *Client) scanBatch(prefix, after []byte) (batch []keyValue, more bool, err error) {
	err = c.db.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords).Cursor()
		idx := tx.Bucket(bucketEditIndex).Cursor()
		var rk, rv, ik []byte
		if after == nil {
			rk, rv = recs.Seek(prefix)
			ik, _ = idx.Seek(prefix)
		} else {
			// The smallest key above after is after+0x00; index entries of
			// after itself are after 0x00 seq, so skip them with 0x01.
			rk, rv = recs.Seek(append(bytes.Clone(after), 0))
			ik, _ = idx.Seek(append(bytes.Clone(after), 1))
		}
		size := 0
		for {
			if rk != nil && !bytes.HasPrefix(rk, prefix) {
				rk = nil
			}
			var ikey []byte
			if ik != nil {
				if ikey, _ = splitIndexKey(ik); ikey == nil {
					return fmt.Errorf("edit index entry %q: %w", ik, ErrCorrupt)
				}
				if !bytes.HasPrefix(ikey, prefix) {
					ik, ikey = nil, nil
				}
			}
			if rk == nil && ik == nil {
				return nil
			}
			if len(batch) >= scanBatchKeys || size >= scanBatchBytes {
				more = true
				return nil
			}
			var key []byte
			switch {
			case ik == nil:
				key = rk
			case rk == nil:
				key = ikey
			default:
				key = rk
				if bytes.Compare(ikey, rk) < 0 {
					key = ikey
				}
			}
			key = bytes.Clone(key)
			var o overlay
			if rk != nil && bytes.Equal(rk, key) {
				o.set(bytes.Clone(rv))
				rk, rv = recs.Next()
			}
			for ik != nil {
				k, seq := splitIndexKey(ik)
				if !bytes.Equal(k, key) {
					break
				}
				e, err := loadIndexedEdit(tx, seq)
				if err != nil {
					return err
				}
				if err := o.apply(e); err != nil {
					return err
				}
				ik, _ = idx.Next()
			}
			val, found, err := o.result()
			if err != nil {
				return fmt.Errorf("key %q: %w", key, err)
			}
			if found {
				batch = append(batch, keyValue{string(key), val})
				size += len(key) + len(val)
			}
		}
	})
	return batch, more, err
}

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

// queueEdit assigns the next seq and stores e in one transaction; bbolt
// fsyncs on commit, so the edit is durable when this returns nil. lim is
// the record limit a merge's result is held to.
func (c *Client) queueEdit(e *edit, lim diff.Limits) error {
	e.At = time.Now().UnixMilli()
	var size, txid int
	err := c.db.Update(func(tx *bolt.Tx) error {
		txid = tx.ID()
		if e.Op == OpMerge {
			if err := c.checkMerge(tx, e, lim); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(metaWiped) != nil {
			return ErrWiped
		}
		e.Seq = getU64(meta, metaEditSeq) + 1
		if err := meta.Put(metaEditSeq, u64(e.Seq)); err != nil {
			return err
		}
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		size = len(raw)
		if err := tx.Bucket(bucketQueue).Put(u64(e.Seq), raw); err != nil {
			return err
		}
		return tx.Bucket(bucketEditIndex).Put(indexKey(e.Key, e.Seq), []byte{})
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
func (c *Client) checkMerge(tx *bolt.Tx, e *edit, lim diff.Limits) error {
	cur, found, err := viewValue(tx, e.Key)
	if err != nil {
		return err
	}
	if found && (len(cur) == 0 || cur[0] != '{') {
		return fmt.Errorf("current value is not a JSON object: %w", ErrInvalid)
	}
	var doc any
	if found {
		if doc, err = snapshot.DecodeJSON(cur); err != nil {
			return err
		}
	}
	p, err := snapshot.DecodeJSON(e.Patch)
	if err != nil {
		return err
	}
	merged, err := snapshot.MarshalCanonical(diff.MergePatch(doc, p))
	if err != nil {
		return err
	}
	return c.checkRecordSize("merged value", len(merged), lim)
}
