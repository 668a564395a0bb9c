package client

import (
	"context"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// TestOneRecordPullCommitsOncePerFile holds a one-record delta to its
// write budget (issue 13: a delta in under 10 ms, where each commit is two
// fsyncs): one commit of data.db (the install) and one of state.db (the
// counters, the last contact and the result, together), not one per
// status change.
func TestOneRecordPullCommitsOncePerFile(t *testing.T) {
	ts := newTestServer(t)
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 5})
	ts.upload("ann", recs)
	c := ts.client("ann", nil)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	ts.upload("ann", editRecord(recs, 7, 1))
	before := c.store.Commits()
	res, err := c.Pull(ctx)
	mustDo(t, err)
	after := c.store.Commits()
	if res.RecordsChanged != 1 || res.Version != 2 {
		t.Fatalf("pull: %+v", res)
	}
	if d, e := after.Data-before.Data, after.Edits-before.Edits; d != 1 || e != 1 {
		t.Errorf("a one-record pull committed %d times to data.db and %d times to state.db, want 1 and 1", d, e)
	}
	if last, err := c.LastSyncResult(); err != nil || last == nil || last.Version != 2 {
		t.Errorf("last result %+v, %v", last, err)
	}
}
