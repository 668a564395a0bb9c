package diff_test

import (
	"context"
	"errors"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// TestSeenOwnEarlierPatch: a device sends a second patch on the same base
// before it pulled the version its first patch made. With Seen naming the
// value its first patch left, the second applies as is, even under
// server-wins; without Seen it is taken for a conflict with itself.
func TestSeenOwnEarlierPatch(t *testing.T) {
	ctx := context.Background()
	for _, withSeen := range []bool{true, false} {
		s := memstore.New()
		buildVersion(t, s, "u", []gen.Record{{Key: "a", Value: []byte(`{"v":0}`)}})
		o := applyOpts("u", diff.PolicyServerWins)
		first := &diff.Patch{ID: "p1", Base: 1, Ops: []diff.Op{{Op: diff.OpPut, Key: "a", Value: []byte(`{"v":1}`)}}}
		if _, err := diff.Apply(ctx, s, o, first); err != nil {
			t.Fatal(err)
		}
		second := &diff.Patch{ID: "p2", Base: 1, Ops: []diff.Op{{Op: diff.OpPut, Key: "a", Value: []byte(`{"v":2}`)}}}
		if withSeen {
			second.Seen = map[string]string{"a": diff.SeenHash([]byte(`{"v":1}`))}
		}
		res, err := diff.Apply(ctx, s, o, second)
		if err != nil {
			t.Fatal(err)
		}
		got := string(readAll(t, s, "u", res.Version)["a"])
		if withSeen && (got != `{"v":2}` || res.Receipts[0].Status != diff.StatusApplied) {
			t.Errorf("with seen: a = %s, receipt %s; want the second edit applied", got, res.Receipts[0].Status)
		}
		if !withSeen && (got != `{"v":1}` || res.Receipts[0].Status != diff.StatusConflict) {
			t.Errorf("without seen: a = %s, receipt %s; want a server-wins conflict", got, res.Receipts[0].Status)
		}
	}
}

// TestSeenStillDetectsOthers: Seen that does not match the head (another
// device changed the key) keeps the three-way merge against the base.
func TestSeenStillDetectsOthers(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	buildVersion(t, s, "u", []gen.Record{{Key: "a", Value: []byte(`{"x":0,"y":0}`)}})
	o := applyOpts("u", diff.PolicyClientWins)
	other := &diff.Patch{ID: "other", Base: 1, Ops: []diff.Op{{Op: diff.OpMerge, Key: "a", Patch: []byte(`{"x":5}`)}}}
	if _, err := diff.Apply(ctx, s, o, other); err != nil {
		t.Fatal(err)
	}
	mine := &diff.Patch{ID: "mine", Base: 1, Ops: []diff.Op{{Op: diff.OpMerge, Key: "a", Patch: []byte(`{"x":7}`)}},
		Seen: map[string]string{"a": diff.SeenHash([]byte(`{"x":0,"y":0}`))}}
	res, err := diff.Apply(ctx, s, o, mine)
	if err != nil {
		t.Fatal(err)
	}
	if rc := res.Receipts[0]; rc.Status != diff.StatusConflict || string(rc.ServerValue) != `{"x":5,"y":0}` {
		t.Fatalf("receipt %+v, want a conflict carrying the other device's value", rc)
	}
}

// TestDeleteOfKeyCreatedSinceBase: deleting a key the client never saw is
// an explicit intent: a conflict resolved by the policy, never a silent no-op.
func TestDeleteOfKeyCreatedSinceBase(t *testing.T) {
	ctx := context.Background()
	for _, policy := range []string{diff.PolicyClientWins, diff.PolicyServerWins} {
		s := memstore.New()
		buildVersion(t, s, "u", []gen.Record{{Key: "a", Value: []byte(`1`)}})
		buildVersion(t, s, "u", []gen.Record{{Key: "a", Value: []byte(`1`)}, {Key: "b", Value: []byte(`{"new":true}`)}})
		res, err := diff.Apply(ctx, s, applyOpts("u", policy), &diff.Patch{ID: "d", Base: 1, Ops: []diff.Op{{Op: diff.OpDelete, Key: "b"}}})
		if err != nil {
			t.Fatal(err)
		}
		rc := res.Receipts[0]
		_, present := readAll(t, s, "u", res.Version)["b"]
		if rc.Status != diff.StatusConflict || !rc.ClientDeleted || rc.ServerValue == nil || present != (policy == diff.PolicyServerWins) {
			t.Errorf("%s: receipt %+v, b present %v", policy, rc, present)
		}
	}
}

func TestSeenValidation(t *testing.T) {
	for name, seen := range map[string]map[string]string{
		"unknown key": {"zz": diff.SeenAbsent},
		"bad hash":    {"a": "xyz"},
	} {
		p := &diff.Patch{ID: "p", Base: 0, Ops: []diff.Op{{Op: diff.OpDelete, Key: "a"}}, Seen: seen}
		if err := p.Validate(diff.DefaultLimits()); !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestSeenMergeFoldsOntoHead: when Seen matches, merges fold onto the head's
// value, keeping fields the client's earlier patch and others added.
func TestSeenMergeFoldsOntoHead(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	buildVersion(t, s, "u", []gen.Record{{Key: "a", Value: []byte(`{"x":0}`)}})
	o := applyOpts("u", diff.PolicyServerWins)
	if _, err := diff.Apply(ctx, s, o, &diff.Patch{ID: "p1", Base: 1, Ops: []diff.Op{{Op: diff.OpMerge, Key: "a", Patch: []byte(`{"f1":1}`)}}}); err != nil {
		t.Fatal(err)
	}
	res, err := diff.Apply(ctx, s, o, &diff.Patch{ID: "p2", Base: 1, Ops: []diff.Op{{Op: diff.OpMerge, Key: "a", Patch: []byte(`{"f2":2}`)}},
		Seen: map[string]string{"a": diff.SeenHash([]byte(`{"f1":1,"x":0}`))}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(readAll(t, s, "u", res.Version)["a"]); got != `{"f1":1,"f2":2,"x":0}` || res.Receipts[0].Status != diff.StatusApplied {
		t.Fatalf("a = %s (%s), want both merges", got, res.Receipts[0].Status)
	}
}
