package state

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/diff"
)

// The merged view is the synced version with this device's edits laid over
// it, in seq order, by diff.Fold (the server's own implementation of the
// ops). Sent edits are laid over only while the synced version is older
// than the one that holds them.
//
// The edits are read before the synced value, each file in a transaction
// of its own: an install only ever makes the synced version newer and
// drops sent edits after it switched, so an edit read can only be found in
// a version read later, never lost between the two reads.

// View returns the merged value of key, from the edits with a seq below
// before (^uint64(0): all). found is false for a key absent or deleted.
//
// A merge onto a value that is not an object is left out, as the server
// leaves it out ("rejected"); the record size limit is not applied: an
// edit over it is blocked, not dropped, and stays in view as made.
func (s *Store) View(key string, before uint64) (val []byte, found bool, err error) {
	var edits []*Edit
	err = s.ViewEdits(func(tx *EditsTx) error {
		var err error
		edits, err = tx.editsOf(key, before)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return s.fold(key, edits)
}

// View is Store.View inside an edits transaction, which sees its own
// writes (the value a new merge applies to).
func (t *EditsTx) View(key string, before uint64) ([]byte, bool, error) {
	edits, err := t.editsOf(key, before)
	if err != nil {
		return nil, false, err
	}
	return t.s.fold(key, edits)
}

// fold reads key's synced value and lays edits over it.
func (s *Store) fold(key string, edits []*Edit) ([]byte, bool, error) {
	var base []byte
	var found bool
	var version uint64
	err := s.viewData(func(v *dataView) error {
		var err error
		version = v.version
		base, found, err = v.get([]byte(key))
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if !found {
		base = nil
	}
	val, err := foldEdits(base, edits, version)
	if err != nil {
		return nil, false, fmt.Errorf("key %q: %w", key, err)
	}
	return val, val != nil, nil
}

// foldEdits lays edits over base (nil: absent) for synced version v.
func foldEdits(base []byte, edits []*Edit, v uint64) ([]byte, error) {
	if len(edits) == 0 {
		return base, nil
	}
	f := diff.NewFold(base, 0)
	for _, e := range edits {
		if e.Version != 0 && e.Version <= v {
			continue // the synced version holds it
		}
		op := e.PatchOp()
		if _, err := f.Apply(&op); err != nil {
			return nil, fmt.Errorf("edit %d: %w", e.Seq, err)
		}
	}
	return f.Value()
}

// KV is one record of a scan.
type KV struct {
	Key   string
	Value []byte
}

// ScanBatch returns up to maxKeys records (or about maxBytes) of the merged
// view whose keys start with prefix, in bytewise key order, starting after
// the key after (nil: from the start). next is where the following batch
// starts (after next); nil when the scan is done.
func (s *Store) ScanBatch(prefix, after []byte, maxKeys, maxBytes int) (batch []KV, next []byte, err error) {
	edits, horizon, err := s.scanEdits(prefix, after, maxKeys)
	if err != nil {
		return nil, nil, err
	}
	err = s.viewData(func(v *dataView) error {
		batch, next, err = v.scan(prefix, after, edits, horizon, maxKeys, maxBytes)
		return err
	})
	return batch, next, err
}

// keyEdits are the edits of one key, for a scan.
type keyEdits struct {
	key   []byte
	edits []*Edit
}

// scanEdits reads the edits of the first keys (at most maxKeys) with edits
// after after. horizon is the last key read when keys beyond it may have
// edits not read (nil: every edit in the range was read).
func (s *Store) scanEdits(prefix, after []byte, maxKeys int) (out []keyEdits, horizon []byte, err error) {
	err = s.ViewEdits(func(tx *EditsTx) error {
		idx := tx.tx.Bucket(bucketEditIndex).Cursor()
		var k []byte
		if after == nil {
			k, _ = idx.Seek(prefix)
		} else {
			// Index entries of after itself are after 0x00 seq: skip them.
			k, _ = idx.Seek(append(bytes.Clone(after), 1))
		}
		for ; k != nil; k, _ = idx.Next() {
			key, seq := splitIndexKey(k)
			if key == nil {
				return fmt.Errorf("edit index entry %q: %w", k, ErrCorrupt)
			}
			if !bytes.HasPrefix(key, prefix) {
				break
			}
			if n := len(out); n == 0 || !bytes.Equal(out[n-1].key, key) {
				if n == maxKeys {
					horizon = out[n-1].key
					break
				}
				out = append(out, keyEdits{key: bytes.Clone(key)})
			}
			e, err := tx.indexedEdit(seq)
			if err != nil {
				return err
			}
			out[len(out)-1].edits = append(out[len(out)-1].edits, e)
		}
		return nil
	})
	return out, horizon, err
}

// scan merges the synced records and the edits read into one batch.
func (v *dataView) scan(prefix, after []byte, edits []keyEdits, horizon []byte, maxKeys, maxBytes int) ([]KV, []byte, error) {
	batch := make([]KV, 0, min(maxKeys, 1024))
	v.scanning = true
	var cur *bolt.Cursor
	var rk, rloc []byte
	if v.index != nil {
		cur = v.index.Cursor()
		seek := prefix
		if after != nil {
			seek = append(bytes.Clone(after), 0)
		}
		rk, rloc = cur.Seek(seek)
	}
	var last []byte
	size, ei := 0, 0
	for {
		if rk != nil && !bytes.HasPrefix(rk, prefix) {
			rk = nil
		}
		var ek []byte
		if ei < len(edits) {
			ek = edits[ei].key
		}
		key := rk
		if rk == nil || ek != nil && bytes.Compare(ek, rk) <= 0 {
			key = ek
		}
		switch {
		case key == nil:
			return batch, horizon, nil
		case horizon != nil && bytes.Compare(key, horizon) > 0:
			// Edits beyond the horizon were not read: the next batch
			// reads them.
			return batch, horizon, nil
		case len(batch) >= maxKeys || size >= maxBytes:
			return batch, last, nil
		}
		last = bytes.Clone(key)
		var base []byte
		if rk != nil && bytes.Equal(rk, key) {
			val, err := v.read(rk, rloc)
			if err != nil {
				return nil, nil, err
			}
			base = val
			rk, rloc = cur.Next()
		}
		var ke []*Edit
		if ek != nil && bytes.Equal(ek, key) {
			ke = edits[ei].edits
			ei++
		}
		val, err := foldEdits(base, ke, v.version)
		if err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", last, err)
		}
		if val != nil {
			batch = append(batch, KV{string(last), val})
			size += len(last) + len(val)
		}
	}
}

// ViewMany is View for several keys at once, read as View reads one: the
// edits of all of them in one transaction of state.db, then their synced
// values in one of data.db, so the values are of one synced version. A
// key without a value has a nil value.
func (s *Store) ViewMany(keys []string) ([][]byte, error) {
	edits := make([][]*Edit, len(keys))
	err := s.ViewEdits(func(tx *EditsTx) error {
		for i, k := range keys {
			var err error
			if edits[i], err = tx.editsOf(k, ^uint64(0)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	vals := make([][]byte, len(keys))
	err = s.viewData(func(v *dataView) error {
		for i, k := range keys {
			base, found, err := v.get([]byte(k))
			if err != nil {
				return err
			}
			if !found {
				base = nil
			}
			if vals[i], err = foldEdits(base, edits[i], v.version); err != nil {
				return fmt.Errorf("key %q: %w", k, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return vals, nil
}

// SyncedKeys calls fn with every key of the synced version (without this
// device's edits) in bytewise order, from one read transaction.
func (s *Store) SyncedKeys(fn func(key string)) error {
	return s.viewData(func(v *dataView) error {
		if v.index == nil {
			return nil
		}
		cur := v.index.Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			fn(string(k))
		}
		return nil
	})
}
