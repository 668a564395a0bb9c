// Package deadline wraps a snapshot.Store so that no call waits on the
// store for longer than a budget: a hung store (an S3 server that stopped
// answering, a dead NFS mount) then fails each call with an error matching
// snapshot.ErrUnavailable instead of holding its caller forever. The server
// answers such a failure 503 with Retry-After.
//
// # Budgets
//
// A call that moves no object bytes (Stat, Delete, opening a Get) gets
// Options.Timeout. A call that moves n bytes gets Timeout + n/MinRate more:
// a 16 MiB pack at the default 1 MiB/s floor gets 5 s + 16 s. Put,
// PutIfAbsent and PutIfMatch know n up front; GetRange too; Get learns it
// when the object opens, and its body's reads share the budget. A List gets
// Timeout for each object it delivers (a listing of a million keys is fine
// as long as the store keeps answering).
//
// The budget is store time only: the clock stops while the caller's code
// runs, that is while a Put reads the caller's reader, while a List runs
// the caller's callback, and between the reads of a Get body (a server
// streaming a pack to a slow phone is not the store's fault).
//
// # Hung backends
//
// Every call runs on a goroutine of its own and is abandoned when its
// budget is spent, even if the backend ignores its context: the caller gets
// its error on time. An abandoned call is cancelled through its context;
// whatever it returns later is discarded (an opened body is closed), and a
// List callback or a Put reader is never called after the wrapper returned.
// Reads of an opened body are the one exception: they run on the caller's
// goroutine (a backend that ignores the cancelled context while streaming
// can still hold one), because abandoning a read into the caller's buffer
// would be a data race.
//
// A write that is abandoned may still land later, as any request lost on
// a network can. The data model is built for this: versions are claimed
// with create-only writes, and a patch retried with the same id finds the
// version its earlier attempt committed.
//
// # Retries
//
// The wrapper never retries. minio-go already retries a failed request (up
// to 10 times, with backoff); the budget bounds those retries too, so the
// two do not multiply.
package deadline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// Options configure a Store.
type Options struct {
	// Timeout is the budget of a call that moves no object bytes, and the
	// base of every other budget.
	Timeout time.Duration
	// MinRate is the slowest transfer rate (bytes per second) allowed: a
	// call moving n bytes gets n/MinRate on top of Timeout.
	MinRate int64
	// OnTimeout, if set, is called with the operation ("get", "stat", ...)
	// each time a call runs out of its budget; for metrics.
	OnTimeout func(op string)
}

// DefaultOptions returns a 5 s timeout and a 1 MiB/s floor.
func DefaultOptions() Options {
	return Options{Timeout: 5 * time.Second, MinRate: 1 << 20}
}

// Store is a snapshot.Store whose calls have deadlines. It is safe for
// concurrent use.
type Store struct {
	snapshot.Store
	opts Options
}

var _ snapshot.Store = (*Store)(nil)

// New wraps s. Timeout and MinRate must be positive.
func New(s snapshot.Store, opts Options) (*Store, error) {
	if opts.Timeout <= 0 || opts.MinRate <= 0 {
		return nil, fmt.Errorf("deadline: timeout (%v) and min rate (%d) must be positive", opts.Timeout, opts.MinRate)
	}
	return &Store{Store: s, opts: opts}, nil
}

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() snapshot.Store { return s.Store }

// transfer is the extra budget of moving n bytes.
func (s *Store) transfer(n int64) time.Duration {
	if n <= 0 {
		return 0
	}
	secs := float64(n) / float64(s.opts.MinRate)
	if secs > float64(24*time.Hour/time.Second) {
		return 24 * time.Hour
	}
	return time.Duration(secs * float64(time.Second))
}

// Get implements snapshot.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
	c := s.start(ctx, "get", key, s.opts.Timeout)
	type opened struct {
		rc   io.ReadCloser
		info snapshot.ObjectInfo
	}
	o, err := run(c, func(ctx context.Context) (opened, error) {
		rc, info, err := s.Store.Get(ctx, key)
		return opened{rc, info}, err
	}, func(o opened) { o.rc.Close() })
	if err != nil {
		err = c.fail(err)
		c.stop()
		return nil, snapshot.ObjectInfo{}, err
	}
	c.pause()
	c.grant(s.transfer(o.info.Size))
	return &body{rc: o.rc, c: c}, o.info, nil
}

// GetRange implements snapshot.Store.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	c := s.start(ctx, "get range", key, s.opts.Timeout+s.transfer(length))
	rc, err := run(c, func(ctx context.Context) (io.ReadCloser, error) {
		return s.Store.GetRange(ctx, key, offset, length)
	}, func(rc io.ReadCloser) { rc.Close() })
	if err != nil {
		err = c.fail(err)
		c.stop()
		return nil, err
	}
	c.pause()
	return &body{rc: rc, c: c}, nil
}

// Put implements snapshot.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	return s.put(ctx, "put", key, r, size, s.Store.Put)
}

// PutIfAbsent implements snapshot.Store.
func (s *Store) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	return s.put(ctx, "put if absent", key, r, size, s.Store.PutIfAbsent)
}

// PutIfMatch implements snapshot.Store.
func (s *Store) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (snapshot.ObjectInfo, error) {
	return s.put(ctx, "put if match", key, r, size,
		func(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
			return s.Store.PutIfMatch(ctx, key, r, size, etag)
		})
}

type putFunc func(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error)

func (s *Store) put(ctx context.Context, op, key string, r io.Reader, size int64, put putFunc) (snapshot.ObjectInfo, error) {
	c := s.start(ctx, op, key, s.opts.Timeout+s.transfer(size))
	defer c.stop()
	src := &callerReader{r: r, c: c}
	defer src.abandon()
	info, err := run(c, func(ctx context.Context) (snapshot.ObjectInfo, error) {
		return put(ctx, key, src, size)
	}, nil)
	return info, c.fail(err)
}

// Stat implements snapshot.Store.
func (s *Store) Stat(ctx context.Context, key string) (snapshot.ObjectInfo, error) {
	c := s.start(ctx, "stat", key, s.opts.Timeout)
	defer c.stop()
	info, err := run(c, func(ctx context.Context) (snapshot.ObjectInfo, error) {
		return s.Store.Stat(ctx, key)
	}, nil)
	return info, c.fail(err)
}

// Delete implements snapshot.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	c := s.start(ctx, "delete", key, s.opts.Timeout)
	defer c.stop()
	_, err := run(c, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, s.Store.Delete(ctx, key)
	}, nil)
	return c.fail(err)
}

// List implements snapshot.Store. The store gets Timeout for each object
// it delivers; fn's own time is not counted.
func (s *Store) List(ctx context.Context, prefix string, fn func(snapshot.ObjectInfo) error) error {
	return s.list(ctx, "list", prefix, fn, func(ctx context.Context, each func(snapshot.ObjectInfo) error) error {
		return s.Store.List(ctx, prefix, each)
	})
}

// ListAfter implements snapshot.Store, with List's budgets.
func (s *Store) ListAfter(ctx context.Context, prefix, after string, fn func(snapshot.ObjectInfo) error) error {
	return s.list(ctx, "list after", prefix, fn, func(ctx context.Context, each func(snapshot.ObjectInfo) error) error {
		return s.Store.ListAfter(ctx, prefix, after, each)
	})
}

// list runs a listing (call) on the clock: Timeout for each object, fn's
// own time not counted, fn never called after the listing was abandoned.
func (s *Store) list(ctx context.Context, op, prefix string, fn func(snapshot.ObjectInfo) error,
	call func(context.Context, func(snapshot.ObjectInfo) error) error) error {
	c := s.start(ctx, op, prefix, s.opts.Timeout)
	defer c.stop()
	var mu sync.Mutex
	abandoned := false
	each := func(info snapshot.ObjectInfo) error {
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			return errAbandoned
		}
		c.pause()
		err := fn(info)
		c.refill(s.opts.Timeout)
		return err
	}
	_, err := run(c, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, call(ctx, each)
	}, nil)
	mu.Lock()
	abandoned = true
	mu.Unlock()
	return c.fail(err)
}

// errAbandoned is what an abandoned call sees from the caller's reader or
// callback; nobody is listening for the call's result any more.
var errAbandoned = errors.New("deadline: call abandoned")

// run runs f on a goroutine of its own and returns its result, or the
// clock's cause once its context ends first. discard, if set, disposes of
// a result that arrives after that.
func run[T any](c *clock, f func(context.Context) (T, error), discard func(T)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f(c.ctx)
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-c.ctx.Done():
	}
	select {
	case r := <-ch: // it finished just as the budget ran out: take it
		return r.v, r.err
	default:
	}
	if discard != nil {
		go func() {
			if r := <-ch; r.err == nil {
				discard(r.v)
			}
		}()
	}
	var zero T
	return zero, context.Cause(c.ctx)
}

// body is an opened object whose reads run on the clock of its call.
type body struct {
	rc io.ReadCloser
	c  *clock
}

func (b *body) Read(p []byte) (int, error) {
	b.c.resume()
	n, err := b.rc.Read(p)
	b.c.pause()
	if err != nil && err != io.EOF {
		err = b.c.fail(err)
	}
	return n, err
}

func (b *body) Close() error {
	err := b.rc.Close()
	b.c.stop()
	return err
}

// callerReader is the caller's reader of a Put, read by the store: the
// clock stops while it runs, and once the call is abandoned it is never
// read again.
type callerReader struct {
	r         io.Reader
	c         *clock
	mu        sync.Mutex
	abandoned bool
}

func (r *callerReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.abandoned {
		return 0, errAbandoned
	}
	r.c.pause()
	defer r.c.resume()
	return r.r.Read(p)
}

func (r *callerReader) abandon() {
	r.mu.Lock()
	r.abandoned = true
	r.mu.Unlock()
}
