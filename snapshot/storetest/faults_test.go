package storetest_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// With no field set, Faults is the store it wraps: it passes the whole
// conformance suite.
func TestFaultsPassesThrough(t *testing.T) {
	storetest.Run(t, func(t *testing.T) snapshot.Store { return storetest.Wrap(memstore.New()) })
}

// Before runs ahead of every method with its op and key; its error fails
// the call, which then never reaches the wrapped store.
func TestFaultsBeforeFailsTheCall(t *testing.T) {
	ctx := t.Context()
	mem := memstore.New()
	f := storetest.Wrap(mem)
	injected := errors.New("injected")
	var seen []string
	f.Before = func(_ context.Context, op storetest.Op, key string) error {
		seen = append(seen, string(op)+" "+key)
		if op.IsWrite() {
			return injected
		}
		return nil
	}
	calls := []struct {
		op  storetest.Op
		run func() error
	}{
		{storetest.OpPut, func() error { _, err := f.Put(ctx, "k", strings.NewReader("v"), 1); return err }},
		{storetest.OpPutIfAbsent, func() error { _, err := f.PutIfAbsent(ctx, "k", strings.NewReader("v"), 1); return err }},
		{storetest.OpPutIfMatch, func() error { _, err := f.PutIfMatch(ctx, "k", strings.NewReader("v"), 1, "x"); return err }},
		{storetest.OpDelete, func() error { return f.Delete(ctx, "k") }},
		{storetest.OpGet, func() error { _, _, err := f.Get(ctx, "k"); return err }},
		{storetest.OpGetRange, func() error { _, err := f.GetRange(ctx, "k", 0, 1); return err }},
		{storetest.OpStat, func() error { _, err := f.Stat(ctx, "k"); return err }},
		{storetest.OpList, func() error { return f.List(ctx, "k", func(snapshot.ObjectInfo) error { return nil }) }},
		{storetest.OpListAfter, func() error { return f.ListAfter(ctx, "k", "j", func(snapshot.ObjectInfo) error { return nil }) }},
	}
	for _, c := range calls {
		err := c.run()
		switch {
		case c.op.IsWrite() && !errors.Is(err, injected):
			t.Errorf("%s: %v, want the injected error", c.op, err)
		case !c.op.IsWrite() && c.op != storetest.OpList && c.op != storetest.OpListAfter && !errors.Is(err, snapshot.ErrNotExist):
			t.Errorf("%s: %v, want the memory store's ErrNotExist", c.op, err)
		}
		if got := f.Calls(c.op); got != 1 {
			t.Errorf("Calls(%s) = %d, want 1", c.op, got)
		}
	}
	if len(seen) != len(calls) || seen[0] != "put k" || seen[7] != "list k" {
		t.Errorf("Before saw %q", seen)
	}
	if _, err := mem.Stat(ctx, "k"); !errors.Is(err, snapshot.ErrNotExist) {
		t.Errorf("a refused write reached the store: %v", err)
	}
}

// A function field answers instead of the store; the others pass through.
func TestFaultsFuncReplacesOneMethod(t *testing.T) {
	ctx := t.Context()
	mem := memstore.New()
	f := storetest.Wrap(mem)
	f.StatFunc = func(context.Context, string) (snapshot.ObjectInfo, error) {
		return snapshot.ObjectInfo{Key: "fake", Size: 42}, nil
	}
	if oi, err := f.Stat(ctx, "missing"); err != nil || oi.Size != 42 {
		t.Fatalf("Stat = %+v, %v; want the function's answer", oi, err)
	}
	if _, err := f.Put(ctx, "k", strings.NewReader("v"), 1); err != nil {
		t.Fatal(err)
	}
	rc, _, err := f.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "v" {
		t.Errorf("Get passed through = %q", b)
	}
	if f.Unwrap() != snapshot.Store(mem) {
		t.Error("Unwrap does not return the wrapped store")
	}
}

// Unconditional ignores exactly the conditions it is told to.
func TestUnconditional(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		createOnly, cas bool
	}{{true, false}, {false, true}, {true, true}} {
		s := storetest.Unconditional(memstore.New(), tc.createOnly, tc.cas)
		first, err := s.PutIfAbsent(ctx, "k", strings.NewReader("a"), 1)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.PutIfAbsent(ctx, "k", strings.NewReader("b"), 1)
		if got := err == nil; got != tc.createOnly {
			t.Errorf("%+v: second create-only put succeeded = %v", tc, got)
		}
		_, err = s.PutIfMatch(ctx, "k", strings.NewReader("c"), 1, first.ETag+"-wrong")
		if got := err == nil; got != tc.cas {
			t.Errorf("%+v: put with a wrong ETag succeeded = %v", tc, got)
		}
	}
}
