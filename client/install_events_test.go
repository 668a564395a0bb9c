package client

import (
	"context"
	"testing"

	"github.com/deltasync/deltasync/client/internal/state"
)

// TestDeltaTooLargeToListIsAFullChange: a delta that changes more keys than
// the install path lists (state.MaxChangedKeys) reaches the listeners as a
// full change, every key of the new version counted, so a UI reloads
// everything instead of missing a change.
func TestDeltaTooLargeToListIsAFullChange(t *testing.T) {
	n := state.MaxChangedKeys + 500
	ts := newTestServer(t)
	ts.upload("ann", records("tasks/", n, `{"s":"open"}`))
	c := ts.client("ann", nil)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	log := watchChanges(c)
	ts.upload("ann", append(records("tasks/", n, `{"s":"done"}`), records("forms/", 2, `{}`)...))
	res, err := c.Pull(ctx)
	mustDo(t, err)
	if res.Full {
		t.Fatalf("the second pull was a full sync: %+v", res)
	}
	got := log.take()
	want := Change{Source: ChangeServer, Version: 2, Full: true, Total: n + 2,
		Collections: []CollectionCount{{"forms", 2}, {"tasks", n}}}
	if len(got) != 1 || got[0].Source != want.Source || got[0].Version != want.Version || !got[0].Full ||
		got[0].Total != want.Total || got[0].Keys != nil || len(got[0].Collections) != 2 ||
		got[0].Collections[0] != want.Collections[0] || got[0].Collections[1] != want.Collections[1] {
		t.Fatalf("changes %+v, want one %+v", got, want)
	}
}
