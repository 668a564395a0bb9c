package snapshot

import (
	"context"
	"io"
	"sync/atomic"
)

// CountingStore wraps a Store and counts requests by kind; the build command
// reports its figures, and tests assert write budgets with it.
type CountingStore struct {
	Store
	gets, puts, stats, lists, deletes atomic.Int64
	bytesIn, bytesOut                 atomic.Int64
}

var _ Store = (*CountingStore)(nil)

// NewCountingStore wraps s.
func NewCountingStore(s Store) *CountingStore { return &CountingStore{Store: s} }

// Counts is a snapshot of a CountingStore's counters.
type Counts struct {
	Gets, Puts, Stats, Lists, Deletes int64
	BytesWritten, BytesRead           int64
}

// Counts returns the counters so far.
func (c *CountingStore) Counts() Counts {
	return Counts{
		Gets: c.gets.Load(), Puts: c.puts.Load(), Stats: c.stats.Load(),
		Lists: c.lists.Load(), Deletes: c.deletes.Load(),
		BytesWritten: c.bytesIn.Load(), BytesRead: c.bytesOut.Load(),
	}
}

// Writes is every request that changes the store.
func (c Counts) Writes() int64 { return c.Puts + c.Deletes }

func (c *CountingStore) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	c.gets.Add(1)
	rc, oi, err := c.Store.Get(ctx, key)
	if err == nil {
		c.bytesOut.Add(oi.Size)
	}
	return rc, oi, err
}

func (c *CountingStore) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	c.gets.Add(1)
	c.bytesOut.Add(n)
	return c.Store.GetRange(ctx, key, off, n)
}

func (c *CountingStore) Put(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error) {
	c.puts.Add(1)
	c.bytesIn.Add(size)
	return c.Store.Put(ctx, key, r, size)
}

func (c *CountingStore) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error) {
	c.puts.Add(1)
	c.bytesIn.Add(size)
	return c.Store.PutIfAbsent(ctx, key, r, size)
}

func (c *CountingStore) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (ObjectInfo, error) {
	c.puts.Add(1)
	c.bytesIn.Add(size)
	return c.Store.PutIfMatch(ctx, key, r, size, etag)
}

func (c *CountingStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	c.stats.Add(1)
	return c.Store.Stat(ctx, key)
}

func (c *CountingStore) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	c.lists.Add(1)
	return c.Store.List(ctx, prefix, fn)
}

func (c *CountingStore) ListAfter(ctx context.Context, prefix, after string, fn func(ObjectInfo) error) error {
	c.lists.Add(1)
	return c.Store.ListAfter(ctx, prefix, after, fn)
}

func (c *CountingStore) Delete(ctx context.Context, key string) error {
	c.deletes.Add(1)
	return c.Store.Delete(ctx, key)
}
