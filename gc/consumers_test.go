package gc_test

import (
	"context"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/snapshot"
)

// TestConsumerHoldsItsEntries: a registered consumer that has not
// acknowledged a version's feed entry keeps that version (and its entry)
// through gc --keep-versions 1; once it acknowledges, gc removes them.
// Other orgs, without consumers, are collected as always.
func TestConsumerHoldsItsEntries(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) snapshot.Store) {
		ctx := context.Background()
		s := open(t)
		clock := aged()
		f := newFixture(t, s)
		created := []time.Time{clock().Add(-5 * time.Hour), clock().Add(-4 * time.Hour), clock().Add(-3 * time.Hour), clock().Add(-2 * time.Hour)}
		alice := f.history("acme", "alice", 1, created)
		f.history("globex", "gus", 2, created)
		c := &diff.Consumer{Org: "acme", Name: "backend", Cursor: alice[1].Changes, AckedUnix: clock().Unix()}
		if err := diff.PutConsumer(ctx, s, c); err != nil {
			t.Fatal(err)
		}

		rep, err := gc.Run(ctx, s, gc.Options{KeepVersions: 1, Now: clock, PerUser: true})
		if err != nil {
			t.Fatal(err)
		}
		for v, want := range map[uint64]bool{1: false, 2: false, 3: true, 4: true} {
			key := snapshot.ManifestKey("acme", "alice", v)
			if want {
				mustExist(t, s, key)
				mustExist(t, s, alice[v-1].Changes)
				f.verify("acme", "alice", v)
			} else {
				mustNotExist(t, s, key)
			}
		}
		mustNotExist(t, s, snapshot.ManifestKey("globex", "gus", 3))
		if rep.VersionsHeld != 1 || len(rep.Consumers) != 1 || rep.Consumers[0].Name != "backend" || rep.Consumers[0].VersionsHeld != 1 || rep.Consumers[0].Stale {
			t.Errorf("report: held %d, consumers %+v", rep.VersionsHeld, rep.Consumers)
		}
		// The consumer still reads what it has not acknowledged.
		entries, _, err := diff.ReadFeed(ctx, s, diff.FeedOptions{Org: "acme", After: c.Cursor, Settle: time.Millisecond, Now: clock()})
		if err != nil || len(entries) != 2 || entries[0].ChangeSet.Version != 3 {
			t.Fatalf("feed after the cursor: %d entries, %v", len(entries), err)
		}

		// Acknowledged: gc removes them.
		c.Cursor = alice[3].Changes
		if err := diff.PutConsumer(ctx, s, c); err != nil {
			t.Fatal(err)
		}
		rep, err = gc.Run(ctx, s, gc.Options{KeepVersions: 1, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		mustNotExist(t, s, snapshot.ManifestKey("acme", "alice", 3))
		mustNotExist(t, s, alice[2].Changes)
		mustExist(t, s, snapshot.ManifestKey("acme", "alice", 4))
		if rep.VersionsHeld != 0 {
			t.Errorf("held %d after the acknowledgement", rep.VersionsHeld)
		}
	})
}

// TestNewConsumerHoldsEverythingAndStaleIsReported: a consumer that has
// acknowledged nothing ("" cursor) keeps every version of its org; one
// silent for longer than ConsumerStale is reported stale, and keeps them
// all the same.
func TestNewConsumerHoldsEverythingAndStaleIsReported(t *testing.T) {
	ctx := context.Background()
	s := storeCases[0].open(t)
	clock := aged()
	f := newFixture(t, s)
	f.history("acme", "alice", 1, []time.Time{clock().Add(-3 * time.Hour), clock().Add(-2 * time.Hour), clock().Add(-90 * time.Minute)})
	old := clock().Add(-48 * time.Hour).Unix()
	if err := diff.PutConsumer(ctx, s, &diff.Consumer{Org: "acme", Name: "gone", AckedUnix: old}); err != nil {
		t.Fatal(err)
	}
	rep, err := gc.Run(ctx, s, gc.Options{KeepVersions: 1, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 3; v++ {
		mustExist(t, s, snapshot.ManifestKey("acme", "alice", v))
	}
	if len(rep.Consumers) != 1 || !rep.Consumers[0].Stale || rep.Consumers[0].VersionsHeld != 2 {
		t.Errorf("consumers %+v, want gone, stale, holding 2", rep.Consumers)
	}
}
