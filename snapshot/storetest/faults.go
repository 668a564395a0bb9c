package storetest

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/deltasync/deltasync/snapshot"
)

// Op names one method of snapshot.Store, for Faults.Before and Faults.Calls.
type Op string

// The Store methods.
const (
	OpGet         Op = "get"
	OpGetRange    Op = "get range"
	OpPut         Op = "put"
	OpPutIfAbsent Op = "put if absent"
	OpPutIfMatch  Op = "put if match"
	OpStat        Op = "stat"
	OpList        Op = "list"
	OpListAfter   Op = "list after"
	OpDelete      Op = "delete"
)

// IsWrite reports whether op changes the store.
func (op Op) IsWrite() bool {
	return op == OpPut || op == OpPutIfAbsent || op == OpPutIfMatch || op == OpDelete
}

var ops = [...]Op{OpGet, OpGetRange, OpPut, OpPutIfAbsent, OpPutIfMatch, OpStat, OpList, OpListAfter, OpDelete}

// Faults is the one fake store of the tests: a snapshot.Store that passes
// every call through to the store it wraps unless a test replaces the
// method (after Litestream's mock.ReplicaClient). Each method has a
// function field; a nil field passes the call through, a set one answers
// instead (and may call the wrapped Store itself, before or after doing
// something else). Before, if set, runs ahead of every call, with the key
// (the prefix for List): an error from it fails the call, which then never
// reaches the method. Every call is counted (Calls), whoever answers it.
//
// Fields are read without locks: set them before the store is shared with
// goroutines, or behind a synchronisation of the test's own (an
// atomic.Pointer that the function loads, for one that changes while a
// server runs).
type Faults struct {
	snapshot.Store

	Before func(ctx context.Context, op Op, key string) error

	GetFunc         func(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error)
	GetRangeFunc    func(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	PutFunc         func(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error)
	PutIfAbsentFunc func(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error)
	PutIfMatchFunc  func(ctx context.Context, key string, r io.Reader, size int64, etag string) (snapshot.ObjectInfo, error)
	StatFunc        func(ctx context.Context, key string) (snapshot.ObjectInfo, error)
	ListFunc        func(ctx context.Context, prefix string, fn func(snapshot.ObjectInfo) error) error
	ListAfterFunc   func(ctx context.Context, prefix, after string, fn func(snapshot.ObjectInfo) error) error
	DeleteFunc      func(ctx context.Context, key string) error

	calls [len(ops)]atomic.Int64
}

var _ snapshot.Store = (*Faults)(nil)

// Wrap returns a Faults that passes every call through to s until a test
// sets a field.
func Wrap(s snapshot.Store) *Faults { return &Faults{Store: s} }

// Unwrap returns the wrapped store (see snapshot.AsTempSweeper).
func (f *Faults) Unwrap() snapshot.Store { return f.Store }

// Calls returns how many calls of op the store has had.
func (f *Faults) Calls(op Op) int64 {
	for i, o := range ops {
		if o == op {
			return f.calls[i].Load()
		}
	}
	panic("storetest: unknown op " + string(op))
}

// enter counts a call and runs Before.
func (f *Faults) enter(ctx context.Context, op Op, key string) error {
	for i, o := range ops {
		if o == op {
			f.calls[i].Add(1)
		}
	}
	if f.Before != nil {
		return f.Before(ctx, op, key)
	}
	return nil
}

// Get implements snapshot.Store.
func (f *Faults) Get(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
	if err := f.enter(ctx, OpGet, key); err != nil {
		return nil, snapshot.ObjectInfo{}, err
	}
	if f.GetFunc != nil {
		return f.GetFunc(ctx, key)
	}
	return f.Store.Get(ctx, key)
}

// GetRange implements snapshot.Store.
func (f *Faults) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := f.enter(ctx, OpGetRange, key); err != nil {
		return nil, err
	}
	if f.GetRangeFunc != nil {
		return f.GetRangeFunc(ctx, key, offset, length)
	}
	return f.Store.GetRange(ctx, key, offset, length)
}

// Put implements snapshot.Store.
func (f *Faults) Put(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	if err := f.enter(ctx, OpPut, key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	if f.PutFunc != nil {
		return f.PutFunc(ctx, key, r, size)
	}
	return f.Store.Put(ctx, key, r, size)
}

// PutIfAbsent implements snapshot.Store.
func (f *Faults) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	if err := f.enter(ctx, OpPutIfAbsent, key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	if f.PutIfAbsentFunc != nil {
		return f.PutIfAbsentFunc(ctx, key, r, size)
	}
	return f.Store.PutIfAbsent(ctx, key, r, size)
}

// PutIfMatch implements snapshot.Store.
func (f *Faults) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (snapshot.ObjectInfo, error) {
	if err := f.enter(ctx, OpPutIfMatch, key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	if f.PutIfMatchFunc != nil {
		return f.PutIfMatchFunc(ctx, key, r, size, etag)
	}
	return f.Store.PutIfMatch(ctx, key, r, size, etag)
}

// Stat implements snapshot.Store.
func (f *Faults) Stat(ctx context.Context, key string) (snapshot.ObjectInfo, error) {
	if err := f.enter(ctx, OpStat, key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	if f.StatFunc != nil {
		return f.StatFunc(ctx, key)
	}
	return f.Store.Stat(ctx, key)
}

// List implements snapshot.Store.
func (f *Faults) List(ctx context.Context, prefix string, fn func(snapshot.ObjectInfo) error) error {
	if err := f.enter(ctx, OpList, prefix); err != nil {
		return err
	}
	if f.ListFunc != nil {
		return f.ListFunc(ctx, prefix, fn)
	}
	return f.Store.List(ctx, prefix, fn)
}

// ListAfter implements snapshot.Store (Before gets the prefix).
func (f *Faults) ListAfter(ctx context.Context, prefix, after string, fn func(snapshot.ObjectInfo) error) error {
	if err := f.enter(ctx, OpListAfter, prefix); err != nil {
		return err
	}
	if f.ListAfterFunc != nil {
		return f.ListAfterFunc(ctx, prefix, after, fn)
	}
	return f.Store.ListAfter(ctx, prefix, after, fn)
}

// Delete implements snapshot.Store.
func (f *Faults) Delete(ctx context.Context, key string) error {
	if err := f.enter(ctx, OpDelete, key); err != nil {
		return err
	}
	if f.DeleteFunc != nil {
		return f.DeleteFunc(ctx, key)
	}
	return f.Store.Delete(ctx, key)
}
