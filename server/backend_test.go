package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

// readRecord reads one record of a user's head from the store.
func readRecord(t *testing.T, e *testEnv, org, user, key string) string {
	t.Helper()
	ctx := context.Background()
	head, err := snapshot.Head(ctx, e.s.store, org, user)
	if err != nil || head == 0 {
		t.Fatalf("head of %s/%s: %d %v", org, user, head, err)
	}
	m, err := snapshot.ReadManifest(ctx, e.s.store, org, user, head)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := e.s.secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	err = snapshot.NewReader(e.s.store, m, secret).Records(ctx, func(k, v []byte) error {
		if string(k) == key {
			got = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func patchAnswer(t *testing.T, r response) wire.PatchResponse {
	t.Helper()
	var pr wire.PatchResponse
	if r.status != 200 || json.Unmarshal(r.body, &pr) != nil {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	return pr
}

// TestAdminPatchOneUser: the backend's patch to one user applies at the
// head without a base (over a device's edit since, without conflict), is
// answered with receipts like a device's, and again as a duplicate.
func TestAdminPatchOneUser(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "tasks/1", Value: []byte(`{"status":"open","title":"a"}`)}})
	dev := e.do("POST", "/v1/patches", []byte(`{"id":"d1","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"done"}}]}`),
		withToken(userToken(t, "acme", "alice")))
	patchAnswer(t, dev)

	path := "/v1/admin/orgs/acme/users/alice/patches"
	body := []byte(`{"id":"b1","ops":[{"op":"merge","key":"tasks/1","patch":{"status":"archived"}},{"op":"put","key":"messages/9","value":{"text":"hi"}}]}`)
	for i := range 2 {
		pr := patchAnswer(t, e.do("POST", path, body, withToken(adminToken(t))))
		if pr.Version != 3 || pr.Duplicate != (i == 1) || len(pr.Conflicts) != 0 || pr.Receipts[0].Status != diff.StatusApplied {
			t.Fatalf("try %d: %+v", i, pr)
		}
	}
	if got := readRecord(t, e, "acme", "alice", "tasks/1"); got != `{"status":"archived","title":"a"}` {
		t.Errorf("tasks/1 = %s", got)
	}
	// With a base the backend's edit is merged, and wins the conflict.
	pr := patchAnswer(t, e.do("POST", path, []byte(`{"id":"b2","base":2,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"deleted"}}]}`),
		withToken(adminToken(t))))
	if len(pr.Conflicts) != 1 || !pr.Conflicts[0].Won {
		t.Errorf("with a base: %+v, want a conflict the backend won", pr)
	}
	for name, tc := range map[string]struct {
		path, body string
		status     int
	}{
		"bad user":       {"/v1/admin/orgs/acme/users/_x/patches", `{"id":"x","ops":[{"op":"delete","key":"k"}]}`, 400},
		"bad org":        {"/v1/admin/orgs/-a/users/alice/patches", `{"id":"x","ops":[{"op":"delete","key":"k"}]}`, 400},
		"no ops":         {path, `{"id":"x","ops":[]}`, 400},
		"unknown base":   {path, `{"id":"x","base":99,"ops":[{"op":"delete","key":"k"}]}`, 404},
		"id reused":      {path, `{"id":"b1","ops":[{"op":"delete","key":"k"}]}`, 409},
		"unknown member": {path, `{"id":"x","users":["a"],"ops":[{"op":"delete","key":"k"}]}`, 400},
	} {
		if r := e.do("POST", tc.path, []byte(tc.body), withToken(adminToken(t))); r.status != tc.status {
			t.Errorf("%s: %d %s, want %d", name, r.status, r.body, tc.status)
		}
	}
}

// fanout sends a fan-out and returns its result lines by user.
func (e *testEnv) fanout(org string, body []byte) (int, map[string]wire.FanoutResult) {
	e.t.Helper()
	r := e.doSlow("POST", "/v1/admin/orgs/"+org+"/patches", body, withToken(adminToken(e.t)))
	if r.status != 200 {
		return r.status, nil
	}
	if ct := r.header["Content-Type"]; ct != wire.ContentTypeNDJSON {
		e.t.Errorf("Content-Type %q", ct)
	}
	out := map[string]wire.FanoutResult{}
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var fr wire.FanoutResult
		if err := json.Unmarshal(sc.Bytes(), &fr); err != nil {
			e.t.Fatalf("line %q: %v", sc.Bytes(), err)
		}
		if _, dup := out[fr.User]; dup {
			e.t.Errorf("two lines for %s", fr.User)
		}
		out[fr.User] = fr
	}
	return r.status, out
}

func fanoutBody(id string, users []string, ops string) []byte {
	b, _ := json.Marshal(users)
	return fmt.Appendf(nil, `{"id":%q,"users":%s,"ops":%s}`, id, b, ops)
}

// TestFanoutAppliesOncePerUser: a fan-out answers one line per user, each
// user's data set gets the op once (also a user with no data set yet), and
// the same fan-out again answers duplicates and writes nothing.
func TestFanoutAppliesOncePerUser(t *testing.T) {
	mem := memstore.New()
	e := newTestEnv(t, envConfig{store: mem, opts: func(o *Options) { o.Backend.FanoutConcurrency = 3 }})
	e.e2eMembers("acme", 20)
	users := append(memberNames(20), "newcomer")
	body := fanoutBody("msg-1", users, `[{"op":"put","key":"channels/general/msgs/1","value":{"text":"hello all"}}]`)
	status, res := e.fanout("acme", body)
	if status != 200 || len(res) != len(users) {
		t.Fatalf("fan-out: %d, %d lines for %d users", status, len(res), len(users))
	}
	for _, u := range users {
		r := res[u]
		if r.Error != nil || r.PatchResponse == nil || !r.Created || r.Receipts[0].Status != diff.StatusApplied {
			t.Errorf("%s: %+v %+v", u, r.PatchResponse, r.Error)
		}
	}
	before := storeContents(t, mem)
	if _, again := e.fanout("acme", body); len(again) != len(users) {
		t.Fatalf("again: %d lines", len(again))
	} else {
		for u, r := range again {
			if r.PatchResponse == nil || !r.Duplicate || r.Version != res[u].Version {
				t.Errorf("again %s: %+v %+v", u, r.PatchResponse, r.Error)
			}
		}
	}
	if after := storeContents(t, mem); !sameContents(before, after) {
		t.Error("repeating the fan-out changed the store")
	}
	for _, u := range users {
		if got := readRecord(t, e, "acme", u, "channels/general/msgs/1"); got != `{"text":"hello all"}` {
			t.Errorf("%s: %q", u, got)
		}
	}
}

func sameContents(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}

func memberNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%03d", i)
	}
	return out
}

// e2eMembers uploads a small data set for n members of org.
func (e *testEnv) e2eMembers(org string, n int) {
	e.t.Helper()
	e.enableOrg(org)
	recs := gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3})
	for _, u := range memberNames(n) {
		e.upload(org, u, recs)
	}
}

// TestFanoutRefusedWritesNothing: a bad fan-out is refused whole before
// any user is touched.
func TestFanoutRefusedWritesNothing(t *testing.T) {
	mem := memstore.New()
	e := newTestEnv(t, envConfig{store: mem, opts: func(o *Options) { o.Backend.MaxFanoutUsers = 5 }})
	e.e2eMembers("acme", 2)
	e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"max_patch_ops":1}`), withToken(adminToken(t)))
	before := storeContents(t, mem)
	op := `[{"op":"put","key":"k","value":1}]`
	for name, tc := range map[string]struct {
		body   []byte
		status int
	}{
		"no users":        {fanoutBody("x", []string{}, op), 400},
		"too many users":  {fanoutBody("x", memberNames(6), op), 400},
		"user twice":      {fanoutBody("x", []string{"m000", "m000"}, op), 400},
		"bad user":        {fanoutBody("x", []string{"m000", "../m001"}, op), 400},
		"base given":      {[]byte(`{"id":"x","base":1,"users":["m000"],"ops":` + op + `}`), 400},
		"no id":           {fanoutBody("", []string{"m000"}, op), 400},
		"bad op":          {fanoutBody("x", []string{"m000"}, `[{"op":"put","key":"k"}]`), 400},
		"over org limits": {fanoutBody("x", []string{"m000"}, `[{"op":"delete","key":"a"},{"op":"delete","key":"b"}]`), 413},
		"trailing data":   {append(fanoutBody("x", []string{"m000"}, op), " {}"...), 400},
		"invalid UTF-8":   {fanoutBody("x", []string{"m000"}, "[{\"op\":\"put\",\"key\":\"k\xff\",\"value\":1}]"), 400},
	} {
		if status, _ := e.fanout("acme", tc.body); status != tc.status {
			t.Errorf("%s: %d, want %d", name, status, tc.status)
		}
	}
	if after := storeContents(t, mem); !sameContents(before, after) {
		t.Error("a refused fan-out changed the store")
	}
}

// TestFanoutCostPerUserIsAOneRecordEdit: what a fan-out writes per user
// (store bytes and requests) stays within twice what a device's one-record
// patch writes: O(change), never a rebuild.
func TestFanoutCostPerUserIsAOneRecordEdit(t *testing.T) {
	counting := snapshot.NewCountingStore(memstore.New())
	e := newTestEnv(t, envConfig{store: counting})
	const members = 30
	e.enableOrg("acme")
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 5})
	for _, u := range append(memberNames(members), "device") {
		e.upload("acme", u, recs)
	}
	msg := `{"author":"ops","text":"The quarterly review moves to Thursday 10:00, room 4.","channel":"general"}`
	c0 := counting.Counts()
	r := e.do("POST", "/v1/patches", fmt.Appendf(nil, `{"id":"one","base":1,"ops":[{"op":"put","key":"channels/general/msgs/1","value":%s}]}`, msg),
		withToken(userToken(t, "acme", "device")))
	patchAnswer(t, r)
	c1 := counting.Counts()
	_, res := e.fanout("acme", fanoutBody("m1", memberNames(members), `[{"op":"put","key":"channels/general/msgs/1","value":`+msg+`}]`))
	c2 := counting.Counts()
	if len(res) != members {
		t.Fatalf("%d results", len(res))
	}
	devBytes, devPuts := c1.BytesWritten-c0.BytesWritten, c1.Puts-c0.Puts
	perBytes, perPuts := float64(c2.BytesWritten-c1.BytesWritten)/members, float64(c2.Puts-c1.Puts)/members
	t.Logf("device patch: %d bytes in %d puts; fan-out per user: %.0f bytes in %.1f puts (data set %d bytes)",
		devBytes, devPuts, perBytes, perPuts, len(ndjsonOf(recs)))
	if perBytes > 2*float64(devBytes) || perPuts > 2*float64(devPuts) {
		t.Errorf("fan-out writes %.0f bytes in %.1f puts per user, over twice a one-record device patch (%d bytes, %d puts)",
			perBytes, perPuts, devBytes, devPuts)
	}
	if got := slices.Sorted(maps.Keys(res)); !slices.Equal(got, memberNames(members)) {
		t.Errorf("results for %v", got)
	}
	if !strings.Contains(readRecord(t, e, "acme", "m005", "channels/general/msgs/1"), "Thursday") {
		t.Error("message missing")
	}
}
