package diff_test

import (
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// TestFeedPassesSettingsAnnouncements: the entries that announce a change
// of an org's settings to the servers are no change sets: readers of the
// feed neither get them nor read anything for them, and they do not use up
// a page.
func TestFeedPassesSettingsAnnouncements(t *testing.T) {
	ctx := t.Context()
	counting := snapshot.NewCountingStore(memstore.New())
	res, _ := buildVersion(t, counting, "alice", gen.Dataset(gen.Options{Size: 8 << 10, Seed: 1}))
	k, ok := snapshot.ParseFeedKey(res.Manifest.Changes)
	if !ok {
		t.Fatalf("change set %q is not in the feed", res.Manifest.Changes)
	}
	for i, ms := range []int64{k.Millis - 1, k.Millis + 1} {
		key := snapshot.FeedSettingsKey(ms, "acme", "n"+strings.Repeat("0", i+1))
		if _, err := counting.Put(ctx, key, strings.NewReader(""), 0); err != nil {
			t.Fatal(err)
		}
	}
	before := counting.Counts()
	entries, next, err := diff.ReadFeed(ctx, counting, diff.FeedOptions{Limit: 1, Settle: time.Millisecond, Now: time.UnixMilli(k.Millis).Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].ChangeSet.Version != 1 || next != res.Manifest.Changes {
		t.Fatalf("feed page: %d entries, next %q; want alice's version 1 and its cursor", len(entries), next)
	}
	// The version's manifest header and change set; nothing for the announcements.
	if got := counting.Counts(); got.Gets-before.Gets != 2 {
		t.Errorf("reading the page made %d gets, want 2", got.Gets-before.Gets)
	}
	entries, next2, err := diff.ReadFeed(ctx, counting, diff.FeedOptions{After: next, Limit: 10, Settle: time.Millisecond, Now: time.UnixMilli(k.Millis).Add(time.Minute)})
	if err != nil || len(entries) != 0 || next2 != next {
		t.Errorf("after the last version: %d entries, next %q, %v; want none and the same cursor", len(entries), next2, err)
	}
}
