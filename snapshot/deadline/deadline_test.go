package deadline_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/deadline"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// The wrapper is a transparent store when the store answers.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) snapshot.Store {
		return wrap(t, memstore.New(), time.Minute)
	})
}

func TestConformanceDirectoryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) snapshot.Store {
		fs, err := fsstore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return wrap(t, fs, time.Minute)
	})
}

func wrap(t *testing.T, s snapshot.Store, timeout time.Duration) *deadline.Store {
	t.Helper()
	d, err := deadline.New(s, deadline.Options{Timeout: timeout, MinRate: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// newHungStore is a store whose calls block until the test ends, ignoring
// their context (a dead NFS mount, a backend without cancellation), or,
// with honourCtx, until their context ends (minio-go against a stopped
// server).
func newHungStore(t *testing.T, honourCtx bool) *storetest.Faults {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f := storetest.Wrap(memstore.New())
	f.Before = func(ctx context.Context, _ storetest.Op, _ string) error {
		if honourCtx {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-release:
			}
		}
		<-release
		return errors.New("released")
	}
	return f
}

// storeCalls are one call of each Store method.
var storeCalls = map[string]func(ctx context.Context, s snapshot.Store) error{
	"get": func(ctx context.Context, s snapshot.Store) error {
		_, _, err := s.Get(ctx, "k")
		return err
	},
	"get range": func(ctx context.Context, s snapshot.Store) error {
		_, err := s.GetRange(ctx, "k", 0, 1)
		return err
	},
	"put": func(ctx context.Context, s snapshot.Store) error {
		_, err := s.Put(ctx, "k", strings.NewReader("v"), 1)
		return err
	},
	"put if absent": func(ctx context.Context, s snapshot.Store) error {
		_, err := s.PutIfAbsent(ctx, "k", strings.NewReader("v"), 1)
		return err
	},
	"put if match": func(ctx context.Context, s snapshot.Store) error {
		_, err := s.PutIfMatch(ctx, "k", strings.NewReader("v"), 1, "etag")
		return err
	},
	"stat": func(ctx context.Context, s snapshot.Store) error {
		_, err := s.Stat(ctx, "k")
		return err
	},
	"list": func(ctx context.Context, s snapshot.Store) error {
		return s.List(ctx, "", func(snapshot.ObjectInfo) error { return nil })
	},
	"list after": func(ctx context.Context, s snapshot.Store) error {
		return s.ListAfter(ctx, "", "a", func(snapshot.ObjectInfo) error { return nil })
	},
	"delete": func(ctx context.Context, s snapshot.Store) error { return s.Delete(ctx, "k") },
}

// within runs f and fails the test if it has not returned after a
// generous bound (it would block forever without the wrapper).
func within(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("the call did not return: the store's hang reached the caller")
		return nil
	}
}

// TestHungStoreFailsEveryCallInTime: whether the backend honours its
// context or not, every call on a hung store returns an error matching
// snapshot.ErrUnavailable that names the operation, and counts a timeout.
func TestHungStoreFailsEveryCallInTime(t *testing.T) {
	for _, honour := range []bool{true, false} {
		for op, call := range storeCalls {
			name := op + "/ignores context"
			if honour {
				name = op + "/honours context"
			}
			t.Run(name, func(t *testing.T) {
				var timeouts []string
				d, err := deadline.New(newHungStore(t, honour), deadline.Options{
					Timeout: 20 * time.Millisecond, MinRate: 1 << 20,
					OnTimeout: func(op string) { timeouts = append(timeouts, op) }})
				if err != nil {
					t.Fatal(err)
				}
				err = within(t, func() error { return call(context.Background(), d) })
				if !errors.Is(err, snapshot.ErrUnavailable) {
					t.Fatalf("err = %v, want ErrUnavailable", err)
				}
				var oe *snapshot.ObjectError
				if !errors.As(err, &oe) || oe.Op != op {
					t.Errorf("err = %v, want an ObjectError for %q", err, op)
				}
				if len(timeouts) != 1 || timeouts[0] != op {
					t.Errorf("OnTimeout saw %q, want [%s]", timeouts, op)
				}
			})
		}
	}
}

// TestCallerCancelIsNotUnavailable: a caller that gives up gets its own
// context's error, not a store failure.
func TestCallerCancelIsNotUnavailable(t *testing.T) {
	d := wrap(t, newHungStore(t, false), time.Hour)
	for op, call := range storeCalls {
		t.Run(op, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			go func() { time.Sleep(10 * time.Millisecond); cancel() }()
			err := within(t, func() error { return call(ctx, d) })
			if !errors.Is(err, context.Canceled) || errors.Is(err, snapshot.ErrUnavailable) {
				t.Fatalf("err = %v, want context.Canceled only", err)
			}
		})
	}
}

// TestCallerTimeIsNotStoreTime: the budget counts the store's time only,
// not the caller's reader, List callback, or the pauses between reads of a
// body, each of which here takes longer than the whole budget.
func TestCallerTimeIsNotStoreTime(t *testing.T) {
	const budget = 30 * time.Millisecond
	slow := func() { time.Sleep(2 * budget) }
	d, err := deadline.New(memstore.New(), deadline.Options{Timeout: budget, MinRate: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := []byte("0123456789")
	if _, err := d.Put(ctx, "k", &slowReader{r: bytes.NewReader(data), wait: slow}, int64(len(data))); err != nil {
		t.Fatalf("put with a slow caller reader: %v", err)
	}
	for _, key := range []string{"a", "b", "c"} {
		if _, err := d.Put(ctx, key, strings.NewReader(key), 1); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	if err := d.List(ctx, "", func(snapshot.ObjectInfo) error { n++; slow(); return nil }); err != nil || n != 4 {
		t.Fatalf("list with a slow callback: %d objects, %v", n, err)
	}
	rc, _, err := d.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(&slowReader{r: oneByteReader{rc}, wait: slow})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("slowly read body: %q, %v", got, err)
	}
}

type slowReader struct {
	r    io.Reader
	wait func()
}

func (s *slowReader) Read(p []byte) (int, error) {
	s.wait()
	if len(p) > 3 {
		p = p[:3]
	}
	return s.r.Read(p)
}

type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

// stallingBody is a store whose objects open at once and whose bodies
// then stall until their context ends (an S3 server stopped mid-stream).
func stallingBody() *storetest.Faults {
	f := storetest.Wrap(memstore.New())
	f.GetFunc = func(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
		return ctxReader{ctx}, snapshot.ObjectInfo{Key: key, Size: 1 << 20}, nil
	}
	f.GetRangeFunc = func(ctx context.Context, _ string, _, _ int64) (io.ReadCloser, error) {
		return ctxReader{ctx}, nil
	}
	return f
}

type ctxReader struct{ ctx context.Context }

func (c ctxReader) Read([]byte) (int, error) { <-c.ctx.Done(); return 0, c.ctx.Err() }
func (c ctxReader) Close() error             { return nil }

// TestStalledBodyFailsInTime: a body that stops delivering fails with
// ErrUnavailable once its budget (grown by the object's size) is spent.
func TestStalledBodyFailsInTime(t *testing.T) {
	d, err := deadline.New(stallingBody(), deadline.Options{Timeout: 20 * time.Millisecond, MinRate: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rc, _, err := d.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	err = within(t, func() error { _, err := io.ReadAll(rc); return err })
	rc.Close()
	if !errors.Is(err, snapshot.ErrUnavailable) {
		t.Fatalf("get body: %v, want ErrUnavailable", err)
	}
	rc, err = d.GetRange(ctx, "k", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	err = within(t, func() error { _, err := io.ReadAll(rc); return err })
	rc.Close()
	if !errors.Is(err, snapshot.ErrUnavailable) {
		t.Fatalf("get range body: %v, want ErrUnavailable", err)
	}
}

// lateStore answers its calls only after release, ignoring the context:
// the answers arrive after the wrapper gave up. done closes when the call
// has answered; closed counts the bodies closed, called the objects List
// delivered.
type lateStore struct {
	*storetest.Faults
	release chan struct{}
	closed  atomic.Int64
	called  atomic.Int64
	done    chan struct{}
}

func newLateStore(s snapshot.Store) *lateStore {
	l := &lateStore{Faults: storetest.Wrap(s), release: make(chan struct{}), done: make(chan struct{})}
	l.GetFunc = func(_ context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
		<-l.release
		rc, info, err := s.Get(context.Background(), key)
		defer close(l.done)
		if err != nil {
			return nil, info, err
		}
		return closeCounter{rc, &l.closed}, info, nil
	}
	l.ListFunc = func(_ context.Context, prefix string, fn func(snapshot.ObjectInfo) error) error {
		<-l.release
		defer close(l.done)
		return s.List(context.Background(), prefix, func(info snapshot.ObjectInfo) error {
			l.called.Add(1)
			return fn(info)
		})
	}
	return l
}

type closeCounter struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c closeCounter) Close() error { c.n.Add(1); return c.ReadCloser.Close() }

// TestAbandonedCallsLeaveNothingBehind: a body that opens after the caller
// left is closed, and a List callback is never run after List returned.
func TestAbandonedCallsLeaveNothingBehind(t *testing.T) {
	mem := memstore.New()
	if _, err := mem.Put(context.Background(), "k", strings.NewReader("v"), 1); err != nil {
		t.Fatal(err)
	}
	t.Run("get", func(t *testing.T) {
		l := newLateStore(mem)
		d := wrap(t, l, 10*time.Millisecond)
		if _, _, err := d.Get(context.Background(), "k"); !errors.Is(err, snapshot.ErrUnavailable) {
			t.Fatalf("get: %v", err)
		}
		close(l.release)
		<-l.done
		waitFor(t, "the late body to be closed", func() bool { return l.closed.Load() == 1 })
	})
	t.Run("list", func(t *testing.T) {
		l := newLateStore(mem)
		d := wrap(t, l, 10*time.Millisecond)
		var calls atomic.Int64
		err := d.List(context.Background(), "", func(snapshot.ObjectInfo) error { calls.Add(1); return nil })
		if !errors.Is(err, snapshot.ErrUnavailable) {
			t.Fatalf("list: %v", err)
		}
		close(l.release)
		<-l.done
		if l.called.Load() != 1 || calls.Load() != 0 {
			t.Fatalf("the store delivered %d objects after List returned; the caller's callback ran %d times, want 0",
				l.called.Load(), calls.Load())
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []deadline.Options{{}, {Timeout: time.Second}, {MinRate: 1}, {Timeout: -1, MinRate: 1}} {
		if _, err := deadline.New(memstore.New(), o); err == nil {
			t.Errorf("New accepted %+v", o)
		}
	}
}

// BenchmarkOverhead: what the deadlines cost per call on a store that
// answers at once (the memory store): a goroutine, a timer and a context.
func BenchmarkOverhead(b *testing.B) {
	ctx := context.Background()
	mem := memstore.New()
	data := bytes.Repeat([]byte("x"), 8<<10)
	if _, err := mem.Put(ctx, "k", bytes.NewReader(data), int64(len(data))); err != nil {
		b.Fatal(err)
	}
	d, err := deadline.New(mem, deadline.DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, len(data))
	for _, s := range []struct {
		name string
		s    snapshot.Store
	}{{"direct", mem}, {"deadline", d}} {
		b.Run("stat/"+s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.s.Stat(ctx, "k"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("getrange8KiB/"+s.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				rc, err := s.s.GetRange(ctx, "k", 0, int64(len(data)))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(rc, buf); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}
