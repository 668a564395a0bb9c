package diff_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

func TestFeedOrderedPagedAndSkipsLosers(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 16 << 10, Seed: 1})
	type ver struct {
		user string
		v    uint64
	}
	var want []ver
	for i := range 3 {
		for _, u := range []string{"alice", "bob"} {
			res, _ := buildVersion(t, s, u, gen.EditScattered(recs, 1, int64(i)))
			want = append(want, ver{u, res.Manifest.Version})
		}
	}
	// A writer that loses the race for bob's next version leaves a change
	// set in the feed that must not show up.
	loser, err := snapshot.Build(ctx, s, buildOpts("bob"), gen.NewSource(gen.EditOneField(recs, 99)))
	if err != nil {
		t.Fatal(err)
	}
	buildVersion(t, s, "bob", gen.EditOneField(recs, 98))
	want = append(want, ver{"bob", 4})
	err = diff.CommitVersion(ctx, s, loser.Manifest, &diff.ChangeSet{Kind: diff.KindBuild})
	if !errors.Is(err, snapshot.ErrExist) {
		t.Fatalf("loser commit: %v", err)
	}

	var got []ver
	cursor := ""
	for page := 0; page < 10; page++ {
		entries, next, err := diff.ReadFeed(ctx, s, diff.FeedOptions{After: cursor, Limit: 2, Settle: time.Millisecond, Now: time.Now().Add(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			got = append(got, ver{e.ChangeSet.User, e.ChangeSet.Version})
		}
		if next == cursor {
			break
		}
		cursor = next
	}
	// Every claimed version once, and each user's in version order (the
	// interleaving across users follows creation time).
	perUser := func(vs []ver) map[string][]uint64 {
		m := map[string][]uint64{}
		for _, v := range vs {
			m[v.user] = append(m[v.user], v.v)
		}
		return m
	}
	g, w := perUser(got), perUser(want)
	if len(got) != len(want) || len(g) != len(w) {
		t.Fatalf("feed: %v, want %v", got, want)
	}
	for u := range w {
		if len(g[u]) != len(w[u]) {
			t.Fatalf("feed for %s: %v, want %v", u, g[u], w[u])
		}
		for i := range w[u] {
			if g[u][i] != w[u][i] {
				t.Fatalf("feed for %s: %v, want %v", u, g[u], w[u])
			}
		}
	}
	// Entries younger than the settle window are held back.
	entries, _, err := diff.ReadFeed(ctx, s, diff.FeedOptions{Settle: time.Hour})
	if err != nil || len(entries) != 0 {
		t.Fatalf("unsettled entries returned: %d, %v", len(entries), err)
	}
}
