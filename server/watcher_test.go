package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// watchRig drives a watcher round by round on a clock of its own, over a
// memory store whose listings can be made to fail.
type watchRig struct {
	t      *testing.T
	store  *flakyLister
	counts *snapshot.CountingStore
	hub    *hub
	w      *watcher
	clock  *testClock
	checks atomic.Int64
}

// flakyLister fails listings while fail is set; with cutAfter > 0 the
// next listing fails after delivering that many objects.
type flakyLister struct {
	*storetest.Faults
	fail     atomic.Bool
	cutAfter atomic.Int64
}

func newFlakyLister(s snapshot.Store) *flakyLister {
	f := &flakyLister{Faults: storetest.Wrap(s)}
	f.ListAfterFunc = func(ctx context.Context, prefix, after string, fn func(snapshot.ObjectInfo) error) error {
		if f.fail.Load() {
			return errors.New("store down")
		}
		cut, n := f.cutAfter.Swap(0), int64(0)
		return f.Faults.Store.ListAfter(ctx, prefix, after, func(oi snapshot.ObjectInfo) error {
			if cut > 0 && n == cut {
				return errors.New("connection reset")
			}
			n++
			return fn(oi)
		})
	}
	return f
}

// watchStart is the rig's first moment: just before an hour ends.
var watchStart = time.Date(2026, 11, 15, 10, 59, 58, 0, time.UTC)

func newWatchRig(t *testing.T) *watchRig {
	r := &watchRig{t: t, clock: &testClock{start: watchStart}}
	r.counts = snapshot.NewCountingStore(memstore.New())
	r.store = newFlakyLister(r.counts)
	r.hub = newHub(time.Hour, prometheus.NewRegistry())
	r.hub.now = r.clock.now
	r.w = newWatcher(r.store, r.hub, DefaultWatchOptions(), slog.New(slog.NewTextHandler(io.Discard, nil)),
		func(ctx context.Context, k userKey, v uint64) error {
			r.checks.Add(1)
			_, err := r.store.Stat(ctx, snapshot.ManifestKey(k.org, k.user, v))
			return err
		})
	r.w.now = r.clock.now
	return r
}

// entry writes a feed entry for user's version v dated at (not claimed).
func (r *watchRig) entry(at time.Time, user string, v uint64) {
	r.t.Helper()
	key := snapshot.FeedKey(at.UnixMilli(), "acme", user, v, "n"+at.Format("150405.000"))
	if _, err := r.store.Put(r.t.Context(), key, strings.NewReader("x"), 1); err != nil {
		r.t.Fatal(err)
	}
}

// claim writes the manifest of user's version v.
func (r *watchRig) claim(user string, v uint64) {
	r.t.Helper()
	if _, err := r.store.Put(r.t.Context(), snapshot.ManifestKey("acme", user, v), strings.NewReader("m"), 1); err != nil {
		r.t.Fatal(err)
	}
}

// wait registers a poll of user from version from, with from as the head
// read from the store.
func (r *watchRig) wait(user string, from uint64) *waiter {
	w, _, _ := r.hub.register("acme", user, from)
	r.hub.observe("acme", user, from)
	return w
}

// round advances the clock by d and runs one round.
func (r *watchRig) round(d time.Duration) {
	r.clock.add(d)
	r.w.round(r.t.Context())
}

func woken(w *waiter) (uint64, bool) {
	select {
	case v := <-w.ch:
		return v, true
	default:
		return 0, false
	}
}

func (r *watchRig) wantWoken(w *waiter, want uint64) {
	r.t.Helper()
	if v, ok := woken(w); !ok || v != want {
		r.t.Fatalf("waiter woken: %v with %d, want woken with %d", ok, v, want)
	}
}

func (r *watchRig) wantAsleep(w *waiter) {
	r.t.Helper()
	if v, ok := woken(w); ok {
		r.t.Fatalf("waiter woken with %d, want still waiting", v)
	}
}

// TestWatcherAcrossTheHourBoundary: entries on both sides of an hour
// (two listing prefixes of the feed) each wake their waiter.
func TestWatcherAcrossTheHourBoundary(t *testing.T) {
	r := newWatchRig(t)
	w := r.wait("alice", 1)
	r.round(0)
	r.entry(r.clock.now().Add(1900*time.Millisecond), "alice", 2) // 10:59:59.900
	r.claim("alice", 2)
	r.round(2200 * time.Millisecond) // 11:00:00.200
	r.wantWoken(w, 2)
	w = r.wait("alice", 2)
	r.entry(r.clock.now().Add(100*time.Millisecond), "alice", 3) // 11:00:00.300
	r.claim("alice", 3)
	r.round(500 * time.Millisecond)
	r.wantWoken(w, 3)
}

// TestWatcherFindsEntriesOutOfOrder: an entry dated before entries already
// listed (a replica whose clock is behind, or a slow write) is found by the
// next round, which lists a window behind the last.
func TestWatcherFindsEntriesOutOfOrder(t *testing.T) {
	r := newWatchRig(t)
	w := r.wait("alice", 1)
	r.round(0)
	r.entry(r.clock.now().Add(300*time.Millisecond), "bob", 7)
	r.round(500 * time.Millisecond)
	r.entry(r.clock.now().Add(-2*time.Second), "alice", 2) // dated 2 s ago, listed only now
	r.claim("alice", 2)
	r.round(500 * time.Millisecond)
	r.wantWoken(w, 2)
	if r.checks.Load() != 1 {
		t.Errorf("%d version checks, want 1 (bob has no waiter here)", r.checks.Load())
	}
}

// TestWatcherSweepFindsStragglers: an entry dated further back than the
// window is found by the next sweep.
func TestWatcherSweepFindsStragglers(t *testing.T) {
	r := newWatchRig(t)
	w := r.wait("alice", 1)
	r.round(0) // the first round is a sweep
	r.entry(r.clock.now().Add(-time.Minute), "alice", 2)
	r.claim("alice", 2)
	for range 10 {
		r.round(500 * time.Millisecond)
	}
	r.wantAsleep(w) // not within the window
	for i := 0; i < 60; i++ {
		r.round(500 * time.Millisecond)
		if _, ok := woken(w); ok {
			return
		}
	}
	t.Fatal("the sweep did not find an entry a minute late")
}

// TestWatcherChecksUntilClaimed: an entry listed before its version is
// claimed (the writer claims right after writing it) is checked again,
// with backoff, until the version exists.
func TestWatcherChecksUntilClaimed(t *testing.T) {
	r := newWatchRig(t)
	w := r.wait("alice", 1)
	r.round(0)
	r.entry(r.clock.now(), "alice", 2)
	r.round(500 * time.Millisecond)
	r.wantAsleep(w)
	r.round(500 * time.Millisecond)
	r.claim("alice", 2)
	for range 10 {
		r.round(500 * time.Millisecond)
		if v, ok := woken(w); ok {
			if v != 2 {
				t.Fatalf("woken with %d, want 2", v)
			}
			return
		}
	}
	t.Fatal("a version claimed after its entry was listed never woke the waiter")
}

// TestWatcherGivesUpOnUnclaimedEntries: the entry of a writer that crashed
// before claiming (or lost a race for a version nobody else claimed yet)
// is checked a bounded number of times, then dropped; nobody is woken.
func TestWatcherGivesUpOnUnclaimedEntries(t *testing.T) {
	r := newWatchRig(t)
	w := r.wait("alice", 1)
	r.round(0)
	r.entry(r.clock.now(), "alice", 2)
	rounds := int(r.w.opts.SweepWindow/r.w.opts.Interval) + 100
	for range rounds {
		r.round(r.w.opts.Interval)
	}
	r.wantAsleep(w)
	if r.checks.Load() > 20 {
		t.Errorf("%d checks of an entry never claimed in %d rounds, want few (backoff)", r.checks.Load(), rounds)
	}
	if n := len(r.w.pending); n != 0 {
		t.Errorf("%d checks still pending after the sweep window, want 0", n)
	}
}

// TestWatcherEntryListedBeforeAnyoneWaited: the watcher lists an entry of a
// user nobody waits for; then a poll reads the head (the version is not
// claimed yet) and waits; the claim lands. The watcher remembers what it
// listed and checks it when the head is read.
func TestWatcherEntryListedBeforeAnyoneWaited(t *testing.T) {
	r := newWatchRig(t)
	r.round(0)
	r.entry(r.clock.now(), "alice", 2)
	r.round(500 * time.Millisecond)
	if r.checks.Load() != 0 {
		t.Fatalf("%d checks for a user nobody waits for, want 0", r.checks.Load())
	}
	w := r.wait("alice", 1) // head read: 1
	r.claim("alice", 2)
	r.round(500 * time.Millisecond)
	r.wantWoken(w, 2)
}

// TestWatcherCatchesUpAfterAnOutage: rounds that fail change nothing; the
// first good one lists from the last good round, so an entry written while
// the store could not be listed is found although it is older than the
// window by then.
func TestWatcherCatchesUpAfterAnOutage(t *testing.T) {
	r := newWatchRig(t)
	w := r.wait("alice", 1)
	r.round(0)
	r.round(500 * time.Millisecond)
	r.store.fail.Store(true)
	r.round(500 * time.Millisecond)
	r.entry(r.clock.now(), "alice", 2)
	r.claim("alice", 2)
	for range 20 { // 10 s down, under the sweep period
		r.round(500 * time.Millisecond)
	}
	r.store.fail.Store(false)
	r.round(500 * time.Millisecond)
	r.wantWoken(w, 2)
	if n := counter(t, r.hub.m.watchErrors); n != 21 {
		t.Errorf("watch errors %v, want 21", n)
	}
}

// TestWatcherSettingsEntries: a settings announcement drops the org's
// cached settings and is no version to check.
func TestWatcherSettingsEntries(t *testing.T) {
	r := newWatchRig(t)
	var dropped []string
	r.w.onSettings = func(org string) { dropped = append(dropped, org) }
	r.round(0)
	key := snapshot.FeedSettingsKey(r.clock.now().UnixMilli(), "acme", "n1")
	if _, err := r.store.Put(t.Context(), key, strings.NewReader(""), 0); err != nil {
		t.Fatal(err)
	}
	r.round(500 * time.Millisecond)
	r.round(500 * time.Millisecond)
	if len(dropped) != 1 || dropped[0] != "acme" || r.checks.Load() != 0 {
		t.Errorf("settings dropped for %q with %d checks, want [acme] once and none", dropped, r.checks.Load())
	}
}

// TestWatcherCostsOneListingARound: a quiet feed costs one listing per
// round and nothing else, however many polls wait.
func TestWatcherCostsOneListingARound(t *testing.T) {
	r := newWatchRig(t)
	for i := range 1000 {
		r.wait("u"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+string(rune('a'+i/26%26)), 1)
	}
	before := r.counts.Counts()
	for range 50 {
		r.round(500 * time.Millisecond)
	}
	got := r.counts.Counts()
	if got.Lists-before.Lists != 50 || got.Gets+got.Stats+got.Puts+got.Deletes != before.Gets+before.Stats+before.Puts+before.Deletes {
		t.Errorf("50 quiet rounds: %d listings and %d other requests, want 50 and 0", got.Lists-before.Lists,
			got.Gets+got.Stats+got.Puts+got.Deletes-(before.Gets+before.Stats+before.Puts+before.Deletes))
	}
}

// TestWatcherNotifiedChecksWithoutListing: news from the notifier is
// checked at once, without a listing of the feed (the watcher's listings
// stay one per interval however many notes arrive).
func TestWatcherNotifiedChecksWithoutListing(t *testing.T) {
	r := newWatchRig(t)
	r.w.opts.Interval = time.Hour
	r.w.now = time.Now
	r.hub.now = time.Now
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { r.w.run(t.Context(), stop); close(done) }()
	defer func() { close(stop); <-done }()
	waitUntil(t, "the first round", func() bool { return r.w.rounds.Load() == 1 })
	for v := uint64(2); v <= 6; v++ {
		w := r.wait("alice", v-1)
		r.claim("alice", v)
		r.w.notified(userKey{"acme", "alice"}, v)
		select {
		case got := <-w.ch:
			if got != v {
				t.Fatalf("woken with %d, want %d", got, v)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the note of version %d woke nobody", v)
		}
	}
	if n := r.counts.Counts().Lists; n != 1 {
		t.Errorf("%d listings for 5 notes, want only the first round's", n)
	}
}

// TestWatcherListingCutShortLosesNothing: a listing that fails halfway has
// delivered some entries; they are handled by the next good round, not
// taken as seen.
func TestWatcherListingCutShortLosesNothing(t *testing.T) {
	r := newWatchRig(t)
	alice, bob := r.wait("alice", 1), r.wait("bob", 1)
	r.round(0)
	r.entry(r.clock.now().Add(100*time.Millisecond), "alice", 2)
	r.entry(r.clock.now().Add(200*time.Millisecond), "bob", 2)
	r.claim("alice", 2)
	r.claim("bob", 2)
	r.store.cutAfter.Store(1)
	r.round(500 * time.Millisecond)
	r.wantAsleep(alice)
	r.round(500 * time.Millisecond)
	r.wantWoken(alice, 2)
	r.wantWoken(bob, 2)
}
