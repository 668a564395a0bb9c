package client

import (
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/snapshot"
)

// Queries an app needs offline, on the merged view (the synced version
// with the pending edits laid over it), like Get and Scan.

// Record is one key and its value (canonical JSON) in the merged view.
type Record struct {
	Key   string
	Value []byte
}

// A page of ScanPage stops early once its values pass this many bytes, so
// that a page of large records cannot exhaust memory.
const maxPageBytes = 4 << 20

// ScanPage returns, in bytewise key order, up to limit records whose keys
// start with prefix and sort after startAfter ("" or a key before the
// prefix: from the first), and whether more follow. To page, pass the last
// key returned as the next startAfter. A page holds at least one record if
// any is left, and stops early once its values pass 4 MiB. limit must be
// positive.
func (c *Client) ScanPage(prefix, startAfter string, limit int) ([]Record, bool, error) {
	if limit <= 0 {
		return nil, false, fmt.Errorf("scan %q: limit %d is not positive: %w", prefix, limit, ErrInvalid)
	}
	var after []byte
	if startAfter != "" && startAfter >= prefix {
		after = []byte(startAfter)
	}
	var page []Record
	size := 0
	for {
		batch, more, err := c.scanBatch([]byte(prefix), after)
		if err != nil {
			return nil, false, fmt.Errorf("scan %q: %w", prefix, err)
		}
		for i, kv := range batch {
			if len(page) == limit || (len(page) > 0 && size+len(kv.value) > maxPageBytes) {
				return page, true, nil
			}
			page = append(page, Record{Key: kv.key, Value: kv.value})
			size += len(kv.value)
			if i == len(batch)-1 && !more {
				return page, false, nil
			}
		}
		if !more {
			return page, false, nil
		}
		after = []byte(batch[len(batch)-1].key)
	}
}

// Count returns the number of keys starting with prefix in the merged
// view.
func (c *Client) Count(prefix string) (int, error) {
	n := 0
	err := c.Scan(prefix, func(string, []byte) bool {
		n++
		return true
	})
	return n, err
}

// GetMany returns the records of keys in the merged view, in the order
// asked, read from one consistent snapshot: a key without a value has a
// nil Value (a present value is never empty). An invalid key fails the
// whole call.
func (c *Client) GetMany(keys []string) ([]Record, error) {
	for _, k := range keys {
		if err := snapshot.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("get many: %w", err)
		}
	}
	out := make([]Record, len(keys))
	err := c.db.View(func(tx *bolt.Tx) error {
		for i, k := range keys {
			v, found, err := viewValue(tx, k)
			if err != nil {
				return fmt.Errorf("%q: %w", k, err)
			}
			out[i] = Record{Key: k}
			if found {
				out[i].Value = v
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get many: %w", err)
	}
	return out, nil
}

// syncedKeys calls fn with every key of the synced version (without the
// pending edits), in order: what a full sync installed.
func (c *Client) syncedKeys(fn func(key string)) error {
	return c.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketRecords).Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			fn(string(k))
		}
		return nil
	})
}
