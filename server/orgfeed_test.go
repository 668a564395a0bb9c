package server

import (
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
)

// feedEnv is a test server whose feed holds nothing back (FeedSettle 1ms).
func feedEnv(t *testing.T, cfg envConfig) *testEnv {
	opts := cfg.opts
	cfg.opts = func(o *Options) {
		o.FeedSettle = time.Millisecond
		if opts != nil {
			opts(o)
		}
	}
	return newTestEnv(t, cfg)
}

func (e *testEnv) orgFeed(org, tok, after string, limit int, wait time.Duration) orgFeedPage {
	e.t.Helper()
	q := url.Values{"after": {after}, "limit": {fmt.Sprint(limit)}}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	r := e.do("GET", "/v1/admin/orgs/"+org+"/changes?"+q.Encode(), nil, withToken(tok))
	var p orgFeedPage
	if r.status != 200 || json.Unmarshal(r.body, &p) != nil {
		e.t.Fatalf("org feed: %d %s", r.status, r.body)
	}
	return p
}

// TestOrgFeedNamesEveryChange: an org admin reads its org's entries only,
// in order, each naming org, user, version, source, patch id, the ops with
// their receipts and the device's edit time.
func TestOrgFeedNamesEveryChange(t *testing.T) {
	e := feedEnv(t, envConfig{})
	e.enableOrg("acme")
	e.enableOrg("globex")
	e.upload("acme", "alice", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	e.upload("globex", "gus", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	patchAnswer(t, e.do("POST", "/v1/patches", []byte(`{"id":"dev-1","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"s":"done"},"at":1780000000123},{"op":"put","key":"forms/9","value":{"ok":true}}]}`),
		withToken(userToken(t, "acme", "alice"))))
	patchAnswer(t, e.do("POST", "/v1/admin/orgs/acme/users/alice/patches", []byte(`{"id":"adm-1","ops":[{"op":"put","key":"msgs/1","value":"hi"}]}`),
		withToken(adminToken(t))))

	tok := orgAdminToken(t, "acme")
	e.clock.add(time.Second) // past FeedSettle: the entries are all visible
	p := e.orgFeed("acme", tok, "", 100, 0)
	if len(p.Entries) != 3 {
		t.Fatalf("%d entries, want 3: %+v", len(p.Entries), p.Entries)
	}
	want := []struct {
		source, patch string
		version       uint64
	}{{diff.SourceBuild, "", 1}, {diff.SourceDevice, "dev-1", 2}, {diff.SourceAdmin, "adm-1", 3}}
	for i, ev := range p.Entries {
		w := want[i]
		if ev.Org != "acme" || ev.User != "alice" || ev.Source != w.source || ev.PatchID != w.patch || ev.Version != w.version || ev.Cursor == "" {
			t.Errorf("entry %d: %+v, want %+v", i, ev, w)
		}
	}
	dev := p.Entries[1]
	if len(dev.Ops) != 2 || dev.Ops[0].Edit.At != 1780000000123 || dev.Ops[0].Receipt.Status != diff.StatusApplied ||
		dev.Ops[1].Edit.Key != "forms/9" || dev.Ops[1].Receipt.Key != "forms/9" {
		t.Errorf("device entry ops %+v", dev.Ops)
	}
	if len(dev.Changes) != 2 || string(dev.Changes[1].New) != `{"s":"done"}` {
		t.Errorf("device entry changes %+v", dev.Changes)
	}
	if p.Next != p.Entries[2].Cursor {
		t.Errorf("next %q, want the last entry's cursor", p.Next)
	}
	// Read on one at a time: the same entries, and then nothing.
	var got []uint64
	for after := ""; ; {
		q := e.orgFeed("acme", tok, after, 1, 0)
		for _, ev := range q.Entries {
			got = append(got, ev.Version)
		}
		if q.Next == after {
			break
		}
		after = q.Next
	}
	if fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("paged one by one: %v", got)
	}
	if r := e.do("GET", "/v1/admin/orgs/acme/changes?after=nonsense", nil, withToken(tok)); r.status != 400 {
		t.Errorf("bad cursor: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/admin/orgs/acme/changes?limit=0", nil, withToken(tok)); r.status != 400 {
		t.Errorf("limit 0: %d", r.status)
	}
}

// TestOrgFeedLongPoll: a poll with nothing to read waits, passes other
// orgs' entries, and answers as soon as an entry of its org arrives.
func TestOrgFeedLongPoll(t *testing.T) {
	e := feedEnv(t, envConfig{})
	e.enableOrg("acme")
	e.enableOrg("globex")
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	tok := orgAdminToken(t, "acme")
	start := e.orgFeed("acme", tok, "", 100, 5*time.Second)
	if len(start.Entries) != 1 {
		t.Fatalf("start: %+v", start)
	}
	// Nothing new: the wait ends empty, the cursor where it was.
	if p := e.orgFeed("acme", tok, start.Next, 100, 50*time.Millisecond); len(p.Entries) != 0 || p.Next != start.Next {
		t.Fatalf("empty poll: %+v", p)
	}
	done := make(chan orgFeedPage, 1)
	go func() { done <- e.orgFeed("acme", tok, start.Next, 100, 9*time.Second) }()
	for i := range 5 { // other orgs' entries do not end the poll
		e.upload("globex", fmt.Sprintf("g%d", i), []gen.Record{{Key: "k", Value: []byte(`1`)}})
	}
	select {
	case p := <-done:
		t.Fatalf("poll answered before an entry of its org: %+v", p)
	case <-time.After(100 * time.Millisecond):
	}
	patchAnswer(t, e.do("POST", "/v1/patches", []byte(`{"id":"p","base":1,"ops":[{"op":"put","key":"k","value":2}]}`),
		withToken(userToken(t, "acme", "alice"))))
	select {
	case p := <-done:
		if len(p.Entries) != 1 || p.Entries[0].Version != 2 || p.Entries[0].PatchID != "p" {
			t.Fatalf("poll answered %+v", p)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the poll did not answer the new entry")
	}
}
