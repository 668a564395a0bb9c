package storemetrics_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storemetrics"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

func newStore(t *testing.T) (*storemetrics.Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := storemetrics.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return storemetrics.New(memstore.New(), m), reg
}

// The wrapper is a transparent store.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) snapshot.Store {
		s, _ := newStore(t)
		return s
	})
}

// TestCountsEveryKindAndOutcome: each call is one request of its kind,
// labelled with how it ended; bytes are counted both ways.
func TestCountsEveryKindAndOutcome(t *testing.T) {
	s, reg := newStore(t)
	ctx := t.Context()
	mustPut := func(key, v string) {
		if _, err := s.Put(ctx, key, strings.NewReader(v), int64(len(v))); err != nil {
			t.Fatal(err)
		}
	}
	mustPut("a/1", "hello")
	mustPut("a/2", "world!")
	if _, err := s.PutIfAbsent(ctx, "a/1", strings.NewReader("x"), 1); !errors.Is(err, snapshot.ErrExist) {
		t.Fatalf("PutIfAbsent over a key: %v", err)
	}
	if _, err := s.PutIfMatch(ctx, "a/1", strings.NewReader("x"), 1, "nope"); !errors.Is(err, snapshot.ErrPrecondition) {
		t.Fatalf("PutIfMatch with a wrong etag: %v", err)
	}
	rc, _, err := s.Get(ctx, "a/1")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(rc); string(b) != "hello" {
		t.Fatalf("Get = %q", b)
	}
	rc.Close()
	rc, err = s.GetRange(ctx, "a/2", 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	if _, _, err := s.Get(ctx, "a/none"); !errors.Is(err, snapshot.ErrNotExist) {
		t.Fatalf("Get of a missing key: %v", err)
	}
	if _, err := s.Stat(ctx, "a/none"); !errors.Is(err, snapshot.ErrNotExist) {
		t.Fatalf("Stat of a missing key: %v", err)
	}
	n := 0
	count := func(snapshot.ObjectInfo) error { n++; return nil }
	if err := s.List(ctx, "a/", count); err != nil {
		t.Fatal(err)
	}
	if err := s.ListAfter(ctx, "a/", "a/1", count); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "a/2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "../bad"); !errors.Is(err, snapshot.ErrInvalid) {
		t.Fatalf("Stat of a bad key: %v", err)
	}

	want := `
# HELP deltasync_store_requests_total Store requests, by kind (get, put, stat, list, delete) and outcome (ok, not_found, exists, precondition, invalid, unavailable, canceled, error).
# TYPE deltasync_store_requests_total counter
deltasync_store_requests_total{op="delete",outcome="ok"} 1
deltasync_store_requests_total{op="get",outcome="not_found"} 1
deltasync_store_requests_total{op="get",outcome="ok"} 2
deltasync_store_requests_total{op="list",outcome="ok"} 2
deltasync_store_requests_total{op="put",outcome="exists"} 1
deltasync_store_requests_total{op="put",outcome="ok"} 2
deltasync_store_requests_total{op="put",outcome="precondition"} 1
deltasync_store_requests_total{op="stat",outcome="invalid"} 1
deltasync_store_requests_total{op="stat",outcome="not_found"} 1
deltasync_store_requests_total{op="stat",outcome="ok"} 0
# HELP deltasync_store_listed_objects_total Objects delivered by store listings (an S3 listing pages per 1,000).
# TYPE deltasync_store_listed_objects_total counter
deltasync_store_listed_objects_total 3
# HELP deltasync_store_read_bytes_total Object bytes read from the store.
# TYPE deltasync_store_read_bytes_total counter
deltasync_store_read_bytes_total 8
# HELP deltasync_store_written_bytes_total Object bytes sent to the store (writes that failed included).
# TYPE deltasync_store_written_bytes_total counter
deltasync_store_written_bytes_total 13
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"deltasync_store_requests_total", "deltasync_store_listed_objects_total",
		"deltasync_store_read_bytes_total", "deltasync_store_written_bytes_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "deltasync_store_request_duration_seconds"); n != 5 {
		t.Errorf("latency histograms: %d, want one per kind (5)", n)
	}
	if got, ok := snapshot.AsTempSweeper(s); ok || got != nil {
		t.Errorf("AsTempSweeper found a sweeper in a memory store")
	}
}
