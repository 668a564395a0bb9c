package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

func testLeases(s snapshot.Store, clock *testClock, n int) []*lease {
	out := make([]*lease, n)
	for i := range out {
		out[i] = &lease{s: s, key: snapshot.LeaseKey("test"), holder: fmt.Sprintf("r%d", i),
			ttl: 60 * time.Second, margin: 10 * time.Second, now: clock.now}
	}
	return out
}

// holders tries every lease at once and returns which hold it.
func holders(t *testing.T, ls []*lease) []int {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var out []int
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := l.acquire(context.Background())
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				out = append(out, i)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// TestLeaseOneHolder: of replicas racing for the lease exactly one holds
// it, renews it, and keeps it while alive; once it expires another takes
// it over and the old holder's renewal is refused; a released lease is
// taken at the next try.
func TestLeaseOneHolder(t *testing.T) {
	t.Run("mem", func(t *testing.T) { leaseOneHolder(t, memstore.New()) })
	s3test.Each(t, func(t *testing.T, srv s3test.Server) { leaseOneHolder(t, srv.Store(t)) })
}

func leaseOneHolder(t *testing.T, mem snapshot.Store) {
	clock := &testClock{start: time.Unix(1_800_000_000, 0)}
	ls := testLeases(mem, clock, 3)
	h := holders(t, ls)
	if len(h) != 1 {
		t.Fatalf("holders %v, want exactly one", h)
	}
	first := h[0]
	for range 3 {
		clock.add(30 * time.Second) // within the ttl: renewed each time
		if h := holders(t, ls); len(h) != 1 || h[0] != first {
			t.Fatalf("holders %v, want %d still", h, first)
		}
	}
	if !ls[first].held() {
		t.Error("the holder does not trust its fresh lease")
	}
	clock.add(55 * time.Second) // past the margin: no longer trusted
	if ls[first].held() {
		t.Error("the holder trusts a lease past its margin")
	}
	// The holder is gone (makes no more tries); the lease expires.
	clock.add(10 * time.Second)
	var others []*lease
	for i, l := range ls {
		if i != first {
			others = append(others, l)
		}
	}
	if h := holders(t, others); len(h) != 1 {
		t.Fatalf("after the expiry: holders %v among the others, want one", h)
	}
	if ok, err := ls[first].acquire(context.Background()); ok || err != nil {
		t.Fatalf("the old holder renewed a lease taken over: %v %v", ok, err)
	}
	// A release hands it over at once.
	var cur *lease
	for _, l := range others {
		if l.held() {
			cur = l
		}
	}
	if err := cur.release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h := holders(t, ls); len(h) != 1 {
		t.Fatalf("after a release: holders %v, want one", h)
	}
}

// TestLeaseDamagedObjectIsReplaced: an undecodable lease object does not
// block every replica forever.
func TestLeaseDamagedObjectIsReplaced(t *testing.T) {
	mem := memstore.New()
	clock := &testClock{start: time.Unix(1_800_000_000, 0)}
	putObject(t, mem, snapshot.LeaseKey("test"), "{not json")
	ls := testLeases(mem, clock, 2)
	if h := holders(t, ls); len(h) != 1 {
		t.Fatalf("holders %v, want one", h)
	}
}

func putObject(t *testing.T, s snapshot.Store, key, body string) {
	t.Helper()
	if _, err := s.Put(context.Background(), key, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}
