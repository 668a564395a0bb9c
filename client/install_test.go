package client

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// TestInstalledChangesListsTheChangedKeys: the install path reports, for
// each version it installs, the keys whose value changed (what the change
// events of issue 13's companion work deliver): a full sync says anything
// may have changed; a delta lists exactly the records put or deleted, not
// the records that only moved to a new chunk.
func TestInstalledChangesListsTheChangedKeys(t *testing.T) {
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 3})
	ts.upload("ann", recs)
	c := ts.client("ann", nil)
	var mu sync.Mutex
	var got []installedChange
	c.onInstalled = func(ch installedChange) {
		mu.Lock()
		got = append(got, ch)
		mu.Unlock()
	}
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	next := editRecord(recs, 10, 1)
	next = append(next[:20:20], next[21:]...) // record 20 deleted
	ts.upload("ann", next)
	res, err := c.Pull(ctx)
	mustDo(t, err)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !got[0].All || got[0].Keys != nil || got[0].Version != 1 {
		t.Fatalf("full sync reported %+v", got)
	}
	want := []string{recs[10].Key, recs[20].Key}
	slices.Sort(want)
	if d := got[1]; d.All || d.From != 1 || d.Version != 2 || !slices.Equal(d.Keys, want) || res.RecordsChanged != 2 {
		t.Errorf("delta reported %+v (result %+v), want keys %q", d, res, want)
	}
}
