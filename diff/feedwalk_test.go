package diff_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// feedOf builds two versions each for alice and bob (now, by the wall
// clock the feed keys use) and returns the store.
func feedOf(t *testing.T) snapshot.Store {
	t.Helper()
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 8 << 10, Seed: 3})
	for i := range 2 {
		for _, u := range []string{"alice", "bob"} {
			buildVersion(t, s, u, gen.EditScattered(recs, 1, int64(i)))
		}
	}
	return s
}

// oldCursor is a well-formed cursor for a time long before the feed's
// entries, as a consumer that read an entry since retired by gc (or a
// crafted one) would send.
func oldCursor(age time.Duration) string {
	return snapshot.FeedKey(time.Now().Add(-age).UnixMilli(), "acme", "alice", 1, "0123456789abcdef")
}

// TestFeedSkipsEmptyHoursByListing: a cursor 300 days back costs a bounded
// number of listings, not one per hour in between (7,200 today).
func TestFeedSkipsEmptyHoursByListing(t *testing.T) {
	s := storetest.Wrap(feedOf(t))
	entries, next, err := diff.ReadFeed(t.Context(), s, diff.FeedOptions{
		After: oldCursor(300 * 24 * time.Hour), Limit: 100, Settle: time.Millisecond, Now: time.Now().Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 || next != entries[3].Cursor {
		t.Fatalf("%d entries, next %q; want the 4 entries and the last one's cursor", len(entries), next)
	}
	if n := s.Calls(storetest.OpList); n > 200 {
		t.Errorf("%d listings to skip 300 days of empty hours; want at most 200", n)
	}
}

// TestFeedCaughtUpReaderListsLittle: a reader whose cursor is the last
// entry (the one who polls all day) costs a listing of its own hour, not
// probes for hours that cannot hold settled entries yet.
func TestFeedCaughtUpReaderListsLittle(t *testing.T) {
	s := storetest.Wrap(feedOf(t))
	o := diff.FeedOptions{Limit: 100, Settle: time.Millisecond, Now: time.Now().Add(time.Second)}
	entries, next, err := diff.ReadFeed(t.Context(), s, o)
	if err != nil || len(entries) != 4 {
		t.Fatalf("%d entries, %v", len(entries), err)
	}
	before := s.Calls(storetest.OpList)
	o.After = next
	if entries, again, err := diff.ReadFeed(t.Context(), s, o); err != nil || len(entries) != 0 || again != next {
		t.Fatalf("caught up: %d entries, next %q, %v; want none and the same cursor", len(entries), again, err)
	}
	// Its own hour, and at most two probes when the clock just passed an hour.
	if n := s.Calls(storetest.OpList) - before; n > 3 {
		t.Errorf("%d listings for a caught-up reader; want at most 3", n)
	}
}

// TestFeedHonoursCancellation: once its context is cancelled the walk
// stops at once instead of listing on.
func TestFeedHonoursCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s := storetest.Wrap(feedOf(t))
	s.Before = func(_ context.Context, op storetest.Op, _ string) error {
		if op == storetest.OpList && s.Calls(storetest.OpList) == 3 {
			cancel()
		}
		return nil
	}
	_, _, err := diff.ReadFeed(ctx, s, diff.FeedOptions{
		After: oldCursor(300 * 24 * time.Hour), Limit: 100, Settle: time.Millisecond, Now: time.Now().Add(time.Second)})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("ReadFeed after cancel: %v, want context.Canceled", err)
	}
	if n := s.Calls(storetest.OpList); n > 4 {
		t.Errorf("%d listings, the last %d after the context was cancelled", n, n-3)
	}
}

// TestFeedCursorOutsideLifetime: a cursor that is not a feed position, or
// one from before the feed began or from the future, is refused.
func TestFeedCursorOutsideLifetime(t *testing.T) {
	s := feedOf(t)
	now := time.Now()
	for _, tc := range []struct{ name, after string }{
		{"garbage", "nonsense"},
		{"feed prefix only", snapshot.FeedPrefix},
		{"no hour", snapshot.FeedPrefix + "x"},
		{"hour that is not a time", snapshot.FeedPrefix + "2026139925/1~a~b~1~00.changes"},
		{"short hour", snapshot.FeedPrefix + "20261202/1~a~b~1~00.changes"},
		{"no name", snapshot.FeedPrefix + "2026120213/"},
		{"far future", snapshot.FeedKey(time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), "acme", "alice", 1, "00")},
		{"two hours ahead", snapshot.FeedKey(now.Add(2*time.Hour).UnixMilli(), "acme", "alice", 1, "00")},
		{"before the feed's epoch", snapshot.FeedKey(diff.FeedEpoch.Add(-time.Hour).UnixMilli(), "acme", "alice", 1, "00")},
		{"the epoch of unix time", snapshot.FeedKey(0, "acme", "alice", 1, "00")},
		{"invalid UTF-8", snapshot.FeedPrefix + "2026120213/\xff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, next, err := diff.ReadFeed(t.Context(), s, diff.FeedOptions{After: tc.after, Now: now})
			if !errors.Is(err, snapshot.ErrInvalid) {
				t.Fatalf("ReadFeed(after %q) = %d entries, next %q, %v; want ErrInvalid", tc.after, len(entries), next, err)
			}
		})
	}
	// Clock skew between replicas: a cursor a little ahead is still a cursor.
	ahead := snapshot.FeedKey(now.Add(time.Minute).UnixMilli(), "acme", "alice", 1, "00")
	if _, next, err := diff.ReadFeed(t.Context(), s, diff.FeedOptions{After: ahead, Now: now}); err != nil || next != ahead {
		t.Errorf("cursor a minute ahead: next %q, %v; want it back unchanged", next, err)
	}
}

// TestFeedEntriesFromAClockInThePast: a replica whose clock said 2020
// wrote entries dated before the epoch; cursors among them still work (the
// feed began there), and one before them does not.
func TestFeedEntriesFromAClockInThePast(t *testing.T) {
	s := feedOf(t)
	ctx := t.Context()
	past := time.Date(2020, 5, 1, 12, 0, 0, 0, time.UTC)
	early := snapshot.FeedKey(past.UnixMilli(), "acme", "carol", 1, "0123456789abcdef")
	if _, err := s.Put(ctx, early, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	o := diff.FeedOptions{Limit: 100, Settle: time.Millisecond, Now: time.Now().Add(time.Second)}
	entries, next, err := diff.ReadFeed(ctx, s, diff.FeedOptions{Limit: 1, MaxScan: 1, Settle: o.Settle, Now: o.Now})
	if err != nil || len(entries) != 0 || next != early {
		t.Fatalf("first page: %d entries, next %q, %v; want the early (unclaimed) object as the cursor", len(entries), next, err)
	}
	o.After = next
	if entries, _, err = diff.ReadFeed(ctx, s, o); err != nil || len(entries) != 4 {
		t.Fatalf("from the early cursor: %d entries, %v; want 4", len(entries), err)
	}
	o.After = snapshot.FeedKey(past.Add(-time.Hour).UnixMilli(), "acme", "carol", 1, "00")
	if _, _, err = diff.ReadFeed(ctx, s, o); !errors.Is(err, snapshot.ErrInvalid) {
		t.Fatalf("cursor before the first entry and the epoch: %v, want ErrInvalid", err)
	}
}

// TestFeedPageBounded: a page examines at most MaxScan feed objects and
// returns a cursor after the last one, so a run of stray objects (or losers'
// change sets) costs bounded work per call and the walk still ends.
func TestFeedPageBounded(t *testing.T) {
	s := feedOf(t)
	ctx := t.Context()
	// Stray objects in an hour of their own, before every entry.
	hour := snapshot.FeedHourPrefix(time.Now().Add(-3 * time.Hour).UnixMilli())
	for i := range 25 {
		key := hour + strings.Repeat("x", i+1)
		if _, err := s.Put(ctx, key, strings.NewReader("junk"), 4); err != nil {
			t.Fatal(err)
		}
	}
	cursor, calls, got := "", 0, 0
	for ; calls < 20; calls++ {
		entries, next, err := diff.ReadFeed(ctx, s, diff.FeedOptions{After: cursor, Limit: 100, MaxScan: 10,
			Settle: time.Millisecond, Now: time.Now().Add(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		got += len(entries)
		if next == cursor {
			break
		}
		cursor = next
	}
	// 25 strays and 4 entries, 10 objects a call: 3 calls, then one that
	// finds nothing new.
	if got != 4 || calls != 3 {
		t.Errorf("%d entries in %d calls; want 4 in 3", got, calls)
	}
}

// TestFeedOldCursorOnRealStores: the bounded walk on the directory store
// and on each S3 server: a cursor 300 days back reads the same entries as
// one from the start, with a bounded number of listings.
func TestFeedOldCursorOnRealStores(t *testing.T) {
	t.Run("dir", func(t *testing.T) {
		s, err := fsstore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		feedOldCursor(t, s)
	})
	t.Run("s3", func(t *testing.T) {
		s3test.Each(t, func(t *testing.T, srv s3test.Server) { feedOldCursor(t, srv.Store(t)) })
	})
}

func feedOldCursor(t *testing.T, base snapshot.Store) {
	recs := gen.Dataset(gen.Options{Size: 8 << 10, Seed: 3})
	for i := range 2 {
		for _, u := range []string{"alice", "bob"} {
			buildVersion(t, base, u, gen.EditScattered(recs, 1, int64(i)))
		}
	}
	s := storetest.Wrap(base)
	o := diff.FeedOptions{Limit: 100, Settle: time.Millisecond, Now: time.Now().Add(time.Second)}
	fromStart, _, err := diff.ReadFeed(t.Context(), s, o)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Calls(storetest.OpList)
	start := time.Now()
	o.After = oldCursor(300 * 24 * time.Hour)
	fromOld, next, err := diff.ReadFeed(t.Context(), s, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cursor 300 days back: %d entries, %d listings, %v", len(fromOld), s.Calls(storetest.OpList)-before, time.Since(start))
	if len(fromStart) != 4 || len(fromOld) != 4 || next != fromOld[3].Cursor {
		t.Fatalf("%d entries from the start, %d from an old cursor (next %q); want 4 and 4", len(fromStart), len(fromOld), next)
	}
	for i := range fromOld {
		if fromOld[i].Cursor != fromStart[i].Cursor {
			t.Errorf("entry %d: %s, want %s", i, fromOld[i].Cursor, fromStart[i].Cursor)
		}
	}
	if n := s.Calls(storetest.OpList) - before; n > 200 {
		t.Errorf("%d listings; want at most 200", n)
	}
}
