package client

import (
	"fmt"

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
		batch, next, err := c.store.ScanBatch([]byte(prefix), after, scanBatchKeys, scanBatchBytes)
		if err != nil {
			return nil, false, fmt.Errorf("scan %q: %w", prefix, c.noteDamage(err))
		}
		for _, kv := range batch {
			if len(page) == limit || (len(page) > 0 && size+len(kv.Value) > maxPageBytes) {
				return page, true, nil
			}
			page = append(page, Record{Key: kv.Key, Value: kv.Value})
			size += len(kv.Value)
		}
		if next == nil {
			return page, false, nil
		}
		// A batch may end at the page's end with nothing after it: read on
		// to know whether more follow.
		after = next
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
	vals, err := c.store.ViewMany(keys)
	if err != nil {
		return nil, fmt.Errorf("get many: %w", c.noteDamage(err))
	}
	out := make([]Record, len(keys))
	for i, k := range keys {
		out[i] = Record{Key: k, Value: vals[i]}
	}
	return out, nil
}

// syncedKeys calls fn with every key of the synced version (without the
// pending edits), in order: what a full sync installed.
func (c *Client) syncedKeys(fn func(key string)) error {
	return c.store.SyncedKeys(fn)
}
