package diff_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

func adminOpts(user string, atHead bool) diff.ApplyOptions {
	o := applyOpts(user, diff.PolicyReject) // Admin overrides the org's policy
	o.Admin, o.AtHead = true, atHead
	return o
}

// TestAdminPatchAtHeadAppliesToTheHead: an admin patch without a base
// applies its ops to the head as the system of record, over a device's
// edit made since: no conflict, nothing merged, the backend's value wins.
func TestAdminPatchAtHeadAppliesToTheHead(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 20)
	dev := &diff.Patch{ID: "d1", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{"status":"done"}`)}}
	if _, err := diff.Apply(ctx, mem, applyOpts("u", ""), dev); err != nil {
		t.Fatal(err)
	}
	adm := &diff.Patch{ID: "a1", Ops: []diff.Op{
		mergeOp("tasks/001", `{"status":"archived"}`),
		{Op: diff.OpPut, Key: "messages/1", Value: json.RawMessage(`{"text":"hello"}`)},
	}}
	res, err := diff.Apply(ctx, mem, adminOpts("u", true), adm)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 3 || !res.Created || len(res.Conflicts) != 0 {
		t.Fatalf("result %+v, want version 3 created without conflicts", res)
	}
	for _, rc := range res.Receipts {
		if rc.Status != diff.StatusApplied {
			t.Errorf("receipt %+v, want applied", rc)
		}
	}
	got := readAll(t, mem, "u", 3)
	if want := `{"n":1,"status":"archived","title":"task 1"}`; string(got["tasks/001"]) != want {
		t.Errorf("tasks/001 = %s, want %s", got["tasks/001"], want)
	}
	if string(got["messages/1"]) != `{"text":"hello"}` {
		t.Errorf("messages/1 = %s", got["messages/1"])
	}
	cs := changeSetOf(t, mem, "u", 3)
	if cs.Kind != diff.KindAdminPatch || cs.Source() != diff.SourceAdmin || cs.Patch.ID != "a1" {
		t.Errorf("change set kind %q source %q patch %+v, want an admin patch a1", cs.Kind, cs.Source(), cs.Patch)
	}
	if src := changeSetOf(t, mem, "u", 2).Source(); src != diff.SourceDevice {
		t.Errorf("device patch source %q", src)
	}
	if src := changeSetOf(t, mem, "u", 1).Source(); src != diff.SourceBuild {
		t.Errorf("build source %q", src)
	}
}

// TestAdminPatchWithBaseWinsConflicts: an admin patch with a base is
// merged three-way like a device's, and the backend's edit wins a conflict
// whatever the org's policy (here reject, which would refuse a device).
func TestAdminPatchWithBaseWinsConflicts(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 5)
	dev := &diff.Patch{ID: "d1", Base: 1, Ops: []diff.Op{mergeOp("tasks/002", `{"status":"done"}`)}}
	if _, err := diff.Apply(ctx, mem, applyOpts("u", ""), dev); err != nil {
		t.Fatal(err)
	}
	adm := &diff.Patch{ID: "a1", Base: 1, Ops: []diff.Op{mergeOp("tasks/002", `{"status":"cancelled"}`)}}
	res, err := diff.Apply(ctx, mem, adminOpts("u", false), adm)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Conflicts) != 1 || !res.Conflicts[0].Won || res.Conflicts[0].Policy != diff.PolicyClientWins {
		t.Fatalf("conflicts %+v, want one won by the backend under client-wins", res.Conflicts)
	}
	if got := readAll(t, mem, "u", res.Version)["tasks/002"]; string(got) != `{"n":2,"status":"cancelled","title":"task 2"}` {
		t.Errorf("tasks/002 = %s", got)
	}
}

// TestAdminPatchIDsApartFromDevices: a device and the backend may choose
// the same patch id for one user; each is applied once, and each retry
// gets its own answer (the same stored-answer mechanism, apart).
func TestAdminPatchIDsApartFromDevices(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 5)
	dev := &diff.Patch{ID: "same", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{"status":"done"}`)}}
	adm := &diff.Patch{ID: "same", Ops: []diff.Op{mergeOp("tasks/003", `{"status":"done"}`)}}
	for range 2 {
		rd, err := diff.Apply(ctx, mem, applyOpts("u", ""), dev)
		if err != nil {
			t.Fatal(err)
		}
		ra, err := diff.Apply(ctx, mem, adminOpts("u", true), adm)
		if err != nil {
			t.Fatal(err)
		}
		if rd.Version != 2 || ra.Version != 3 || rd.Receipts[0].Key != "tasks/001" || ra.Receipts[0].Key != "tasks/003" {
			t.Fatalf("device %+v admin %+v: want versions 2 and 3, each with its own receipts", rd, ra)
		}
	}
	if h := head(t, mem, "u"); h != 3 {
		t.Errorf("head %d, want 3: each patch once", h)
	}
	// The same admin id with other ops is refused, as for a device.
	other := &diff.Patch{ID: "same", Ops: []diff.Op{mergeOp("tasks/004", `{"status":"done"}`)}}
	if _, err := diff.Apply(ctx, mem, adminOpts("u", true), other); !errors.Is(err, diff.ErrPatchIDReused) {
		t.Errorf("reused admin id: %v, want ErrPatchIDReused", err)
	}
}

// TestCheckRefusesOps: the ops a Check refuses become rejected receipts
// with its reason and the others apply; a retry is answered from storage
// without asking again; a failing Check writes nothing.
func TestCheckRefusesOps(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 5)
	var asked atomic.Int32
	o := applyOpts("u", "")
	o.Check = func(_ context.Context, p *diff.Patch) (map[int]string, error) {
		asked.Add(1)
		return map[int]string{1: "one action per task while offline"}, nil
	}
	p := &diff.Patch{ID: "v1", Base: 1, Ops: []diff.Op{
		mergeOp("tasks/001", `{"status":"done"}`),
		mergeOp("tasks/001", `{"status":"reopened"}`),
		mergeOp("tasks/002", `{"status":"done"}`),
	}}
	for i := range 2 {
		res, err := diff.Apply(ctx, mem, o, p)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{diff.StatusApplied, diff.StatusRejected, diff.StatusApplied}
		for j, rc := range res.Receipts {
			if rc.Status != want[j] {
				t.Errorf("try %d: receipt %d %+v, want %s", i, j, rc, want[j])
			}
		}
		if r := res.Receipts[1].Reason; r != "one action per task while offline" {
			t.Errorf("reason %q", r)
		}
		if res.Duplicate != (i == 1) {
			t.Errorf("try %d: duplicate %v", i, res.Duplicate)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("check asked %d times, want once (the retry is answered from storage)", n)
	}
	if got := readAll(t, mem, "u", 2)["tasks/001"]; string(got) != `{"n":1,"status":"done","title":"task 1"}` {
		t.Errorf("tasks/001 = %s: the refused op applied", got)
	}

	down := errors.New("validator down")
	o.Check = func(context.Context, *diff.Patch) (map[int]string, error) { return nil, down }
	before := objectCount(t, mem)
	q := &diff.Patch{ID: "v2", Base: 2, Ops: []diff.Op{mergeOp("tasks/003", `{"status":"done"}`)}}
	if _, err := diff.Apply(ctx, mem, o, q); !errors.Is(err, down) {
		t.Fatalf("apply with a failing check: %v", err)
	}
	if after := objectCount(t, mem); after != before {
		t.Errorf("a failing check left %d objects, had %d", after, before)
	}
	o.Check = func(context.Context, *diff.Patch) (map[int]string, error) { return map[int]string{0: "no"}, nil }
	res, err := diff.Apply(ctx, mem, o, q)
	if err != nil || res.Created || res.Receipts[0].Status != diff.StatusRejected {
		t.Fatalf("all refused: %+v %v, want no version and a rejected receipt", res, err)
	}
	o.Check = func(context.Context, *diff.Patch) (map[int]string, error) { return map[int]string{7: "no"}, nil }
	if _, err := diff.Apply(ctx, mem, o, &diff.Patch{ID: "v3", Base: 2, Ops: q.Ops}); err == nil {
		t.Error("a check refusing an op the patch lacks was taken")
	}
}

// TestEditTimeTravelsToTheFeed: a device's edit time (Op.At) is kept in
// the change set; a negative one is refused.
func TestEditTimeTravelsToTheFeed(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 3)
	op := mergeOp("tasks/001", `{"status":"done"}`)
	op.At = 1_780_000_000_123
	p := &diff.Patch{ID: "t1", Base: 1, Ops: []diff.Op{op}}
	if _, err := diff.Apply(ctx, mem, applyOpts("u", ""), p); err != nil {
		t.Fatal(err)
	}
	if at := changeSetOf(t, mem, "u", 2).Patch.Ops[0].At; at != op.At {
		t.Errorf("change set op at %d, want %d", at, op.At)
	}
	body, err := diff.EncodePatch(p)
	if err != nil {
		t.Fatal(err)
	}
	if n := diff.EncodedSize(p); n != int64(len(body)) {
		t.Errorf("EncodedSize %d, encoded %d bytes (%s)", n, len(body), body)
	}
	op.At = -1
	bad := &diff.Patch{ID: "t2", Base: 2, Ops: []diff.Op{op}}
	if _, err := diff.Apply(ctx, mem, applyOpts("u", ""), bad); !errors.Is(err, snapshot.ErrInvalid) {
		t.Errorf("negative at: %v, want ErrInvalid", err)
	}
}

func changeSetOf(t *testing.T, s snapshot.Store, user string, v uint64) *diff.ChangeSet {
	t.Helper()
	ctx := context.Background()
	m, err := snapshot.ReadManifestHeader(ctx, s, "acme", user, v)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := diff.ReadChangeSet(ctx, s, m)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func objectCount(t *testing.T, s snapshot.Store) int {
	t.Helper()
	n := 0
	if err := s.List(context.Background(), "", func(snapshot.ObjectInfo) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFeedOfOneOrg: FeedOptions.Org keeps one org's entries, in order, and
// passes the others by their names without reading them; Limit counts the
// kept entries only; no cursor it returns names another org or user.
func TestFeedOfOneOrg(t *testing.T) {
	mem := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 4 << 10, Seed: 9})
	build := func(org, user string) {
		o := buildOpts(user)
		o.Org = org
		if _, _, err := diff.BuildVersion(context.Background(), mem, o, gen.NewSource(recs)); err != nil {
			t.Fatal(err)
		}
	}
	build("acme", "a1")
	for i := range 20 {
		build("globex", fmt.Sprintf("g%d", i))
	}
	build("acme", "a2")
	build("globex", "after")
	s := storetest.Wrap(mem)
	var otherReads atomic.Int32
	s.Before = func(_ context.Context, op storetest.Op, key string) error {
		if (op == storetest.OpGet || op == storetest.OpGetRange) && strings.Contains(key, "globex") {
			otherReads.Add(1)
		}
		return nil
	}
	o := diff.FeedOptions{Org: "acme", Limit: 1, Settle: time.Millisecond, Now: time.Now().Add(time.Second)}
	var users []string
	for {
		entries, next, err := diff.ReadFeed(t.Context(), s, o)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			users = append(users, e.ChangeSet.User)
		}
		if strings.Contains(next, "globex") || strings.Contains(next, "~g") || strings.Contains(next, "after") {
			t.Errorf("cursor %q names another org or its users", next)
		}
		if next == o.After {
			break
		}
		o.After = next
	}
	if strings.Join(users, ",") != "a1,a2" {
		t.Errorf("entries of %v, want a1,a2", users)
	}
	if n := otherReads.Load(); n != 0 {
		t.Errorf("%d reads of another org's objects", n)
	}
}

// TestEditTimeIsNotPartOfThePatch: a patch resent with edit times it did
// not carry before (a device upgraded while the patch was in flight) is
// the same patch: it gets its stored answer, not ErrPatchIDReused.
func TestEditTimeIsNotPartOfThePatch(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 3)
	p := &diff.Patch{ID: "up", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{"status":"done"}`)}}
	if _, err := diff.Apply(ctx, mem, applyOpts("u", ""), p); err != nil {
		t.Fatal(err)
	}
	p.Ops[0].At = 1_780_000_000_000
	res, err := diff.Apply(ctx, mem, applyOpts("u", ""), p)
	if err != nil || !res.Duplicate || res.Version != 2 {
		t.Fatalf("resent with edit times: %+v %v, want the stored answer", res, err)
	}
}
