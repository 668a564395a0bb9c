package client

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// Tests of the client against a lying or hostile server (session 6's
// red team): whatever the server answers, an accepted edit is never lost.

// lyingPatchAnswer runs a push of two edits (a and b) against an answer
// the transport makes up, checks that the client refused it (ErrServer),
// kept both edits queued and visible, and that a sync with the real
// server afterwards delivers both.
func lyingPatchAnswer(t *testing.T, answer func(head uint64) string) {
	t.Helper()
	ts := newTestServer(t)
	head := ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`0`)}, {Key: "b", Value: []byte(`0`)}})
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	ctx := context.Background()
	_, err := c.Pull(ctx)
	mustDo(t, err)
	mustDo(t, c.Put("a", []byte(`1`)))
	mustDo(t, c.Put("b", []byte(`2`)))
	ft.answer = func([]byte) string { return answer(head) }
	_, err = c.Push(ctx)
	if !errors.Is(err, ErrServer) {
		t.Fatalf("push against a lying answer: err = %v, want ErrServer", err)
	}
	if s := c.Status(); s.PendingEdits != 2 {
		t.Errorf("after the lying answer: %d edits pending, want 2", s.PendingEdits)
	}
	if got := get(t, c, "a") + get(t, c, "b"); got != "12" {
		t.Errorf("view after the lying answer: a+b = %s, want 12", got)
	}
	ft.answer = nil
	_, err = c.Sync(ctx)
	mustDo(t, err)
	if got, want := ts.export("ann"), `{"key":"a","value":1}`+"\n"+`{"key":"b","value":2}`+"\n"; got != want {
		t.Errorf("server after the honest sync:\n%s\nwant:\n%s", got, want)
	}
	if s := c.Status(); s.PendingEdits != 0 {
		t.Errorf("after the honest sync: %d edits pending", s.PendingEdits)
	}
}

// TestReceiptsForOtherEditsAreRefused: a 200 whose receipts name other
// keys (a proxy's cached answer to another request, a server bug) does
// not take the edits out of the queue: they were never applied.
func TestReceiptsForOtherEditsAreRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"put","key":"x","status":"applied"},`+
			`{"index":1,"op":"put","key":"y","status":"applied"}],"conflicts":[]}`, head+1)
	})
}

// TestReceiptsWithOtherOpsAreRefused: the keys match but the ops do not.
func TestReceiptsWithOtherOpsAreRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"delete","key":"a","status":"applied"},`+
			`{"index":1,"op":"delete","key":"b","status":"applied"}],"conflicts":[]}`, head+1)
	})
}

// TestReceiptVersionBehindTheBaseIsRefused: edits applied "in" a version
// older than the one the patch was based on cannot be true; believing it
// would take them out of the view at once (the synced version is newer).
func TestReceiptVersionBehindTheBaseIsRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"put","key":"a","status":"applied"},`+
			`{"index":1,"op":"put","key":"b","status":"applied"}],"conflicts":[]}`, head-1)
	})
}

// TestDuplicateReceiptsAreRefused: two receipts for one edit (and none
// for the other) are not an answer to this patch.
func TestDuplicateReceiptsAreRefused(t *testing.T) {
	lyingPatchAnswer(t, func(head uint64) string {
		return fmt.Sprintf(`{"version":%d,"created":true,"receipts":[`+
			`{"index":0,"op":"put","key":"a","status":"applied"},`+
			`{"index":0,"op":"put","key":"a","status":"applied"}],"conflicts":[]}`, head+1)
	})
}
