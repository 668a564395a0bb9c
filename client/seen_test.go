package client

import (
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// TestSecondPatchBeforePull: a device edits a key, pushes, edits it again
// and pushes before pulling. Its second edit must win over its own first
// one even under server-wins (the patch tells the server which value the
// device saw), and no conflict is reported.
func TestSecondPatchBeforePull(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"conflict_policy":"server-wins"}`)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`{"v":0}`)}})
	c := ts.client("ann", nil)
	if _, err := c.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{`{"v":1}`, `{"v":2}`} {
		if err := c.Put("a", []byte(v)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Push(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if got := ts.export("ann"); got != `{"key":"a","value":{"v":2}}`+"\n" {
		t.Fatalf("server holds %s, want the second edit", got)
	}
	if n := c.ConflictCount(); n != 0 {
		t.Fatalf("%d conflicts reported for a device's own successive edits", n)
	}
}

// TestDeleteUnseenKey: a delete of a key the device has not pulled yet
// reaches the server (client-wins) instead of vanishing as a no-op.
func TestDeleteUnseenKey(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	c := ts.client("ann", nil)
	if _, err := c.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}, {Key: "b", Value: []byte(`2`)}})
	if err := c.Delete("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := ts.export("ann"); got != `{"key":"a","value":1}`+"\n" {
		t.Fatalf("server holds %q, want b deleted", got)
	}
}

// TestViewShowsWhatTheServerApplies protects issue 13 item 5: the device
// laid its edits over its records with code of its own, which applied a
// merge onto a value that had become an array by replacing it, while the
// server refuses such a merge. The view showed an edit that would never
// apply. Both now use diff.Fold.
func TestViewShowsWhatTheServerApplies(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"state":"open"}`)}})
	c := ts.client("ann", nil)
	if _, err := c.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Merge("tasks/1", []byte(`{"state":"done"}`)); err != nil {
		t.Fatal(err)
	}
	// Another writer turns the record into an array; the device pulls it.
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`[1,2]`)}})
	if _, err := c.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, "tasks/1"); got != `[1,2]` {
		t.Errorf("view before the push: %s, want [1,2] (the server refuses a merge onto an array)", got)
	}
	res, err := c.Sync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if res.EditsRejected != 1 {
		t.Errorf("sync: %+v, want the merge rejected", res)
	}
	if got, want := exportOf(t, c), ts.export("ann"); got != want || got != `{"key":"tasks/1","value":[1,2]}`+"\n" {
		t.Errorf("after the sync the device shows %q, the server holds %q", got, want)
	}
}
