package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

func (e *testEnv) putConsumer(org, name, body string) response {
	e.t.Helper()
	return e.do("PUT", "/v1/admin/orgs/"+org+"/consumers/"+name, []byte(body), withToken(orgAdminToken(e.t, org)))
}

// TestConsumerAPI: a backend registers a consumer, acknowledges cursors,
// lists, reads and deletes it; bad names and cursors are refused and
// change nothing; the server's own consumer names cannot be written.
func TestConsumerAPI(t *testing.T) {
	mem := memstore.New()
	e := feedEnv(t, envConfig{store: mem})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	tok := orgAdminToken(t, "acme")
	e.clock.add(time.Second) // past FeedSettle
	page := e.orgFeed("acme", tok, "", 10, 0)
	if len(page.Entries) != 1 {
		t.Fatalf("feed: %+v", page)
	}

	r := e.putConsumer("acme", "billing", `{"cursor":""}`)
	var c diff.Consumer
	if r.status != 200 || json.Unmarshal(r.body, &c) != nil || c.Cursor != "" || c.RegisteredUnix == 0 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	r = e.putConsumer("acme", "billing", `{"cursor":"`+page.Next+`"}`)
	if json.Unmarshal(r.body, &c) != nil || r.status != 200 || c.Cursor != page.Next {
		t.Fatalf("ack: %d %s", r.status, r.body)
	}
	if r := e.putConsumer("acme", "audit", `{"cursor":"now"}`); r.status != 200 || !strings.Contains(string(r.body), `"cursor":"_feed/`) {
		t.Errorf("register now: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/v1/admin/orgs/acme/consumers", nil, withToken(tok))
	var list struct{ Consumers []diff.Consumer }
	if json.Unmarshal(r.body, &list) != nil || len(list.Consumers) != 2 || list.Consumers[1].Name != "billing" {
		t.Errorf("list: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/admin/orgs/acme/consumers/billing", nil, withToken(tok)); r.status != 200 || !strings.Contains(string(r.body), page.Next) {
		t.Errorf("get: %d %s", r.status, r.body)
	}

	before := storeContents(t, mem)
	for name, tc := range map[string]struct {
		name, body string
		status     int
	}{
		"server's own name": {"_webhook", `{"cursor":""}`, 400},
		"bad name":          {"-x", `{"cursor":""}`, 400},
		"no cursor":         {"x", `{}`, 400},
		"not a position":    {"x", `{"cursor":"somewhere"}`, 400},
		"a year ahead":      {"x", `{"cursor":"` + diff.FeedPositionAt(time.Now().Add(365*24*time.Hour)) + `"}`, 400},
		"unknown field":     {"x", `{"cursor":"","from":"now"}`, 400},
		"cursor a number":   {"x", `{"cursor":7}`, 400},
	} {
		if r := e.putConsumer("acme", tc.name, tc.body); r.status != tc.status {
			t.Errorf("%s: %d %s, want %d", name, r.status, r.body, tc.status)
		}
	}
	if r := e.do("DELETE", "/v1/admin/orgs/acme/consumers/nobody", nil, withToken(tok)); r.status != 404 {
		t.Errorf("delete missing: %d", r.status)
	}
	if !sameContents(before, storeContents(t, mem)) {
		t.Error("refused consumer requests changed the store")
	}
	if r := e.do("DELETE", "/v1/admin/orgs/acme/consumers/billing", nil, withToken(tok)); r.status != 200 {
		t.Errorf("delete: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/admin/orgs/acme/consumers/billing", nil, withToken(tok)); r.status != 404 {
		t.Errorf("get deleted: %d", r.status)
	}
}

// TestConsumerPathsValidated: every route of one consumer refuses a bad
// org or consumer name with 400 and changes nothing.
func TestConsumerPathsValidated(t *testing.T) {
	mem := memstore.New()
	e := newTestEnv(t, envConfig{store: mem})
	if r := e.putConsumer("acme", "billing", `{"cursor":""}`); r.status != 200 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	before := storeContents(t, mem)
	tok := withToken(adminToken(t))
	for _, method := range []string{"PUT", "GET", "DELETE"} {
		for _, path := range []string{"/v1/admin/orgs/acme/consumers/-x", "/v1/admin/orgs/acme/consumers/_webhook2x",
			"/v1/admin/orgs/Acme!/consumers/billing", "/v1/admin/orgs/-acme/consumers/billing"} {
			if r := e.do(method, path, []byte(`{"cursor":""}`), tok); r.status != 400 {
				t.Errorf("%s %s: %d %s, want 400", method, path, r.status, r.body)
			}
		}
	}
	if !sameContents(before, storeContents(t, mem)) {
		t.Error("refused requests changed the store")
	}
}

// TestFeedGoesByTheServersClock: the org feed's settle horizon and the
// "now" cursor of a consumer read the server's clock (Options.Now): with an
// hour's settle, a fresh entry shows once the clock has moved an hour on,
// and a consumer registered at "now" before that is placed before it.
// The deployment's feed (/v1/admin/changes) settles by the same injected
// clock as the org feeds, not by the process's.
func TestDeploymentFeedGoesByTheServersClock(t *testing.T) {
	e := feedEnv(t, envConfig{opts: func(o *Options) { o.FeedSettle = time.Hour }})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	count := func() int {
		r := e.do("GET", "/v1/admin/changes?limit=10", nil, withToken(adminToken(t)))
		var p struct{ Entries []json.RawMessage }
		if r.status != 200 || json.Unmarshal(r.body, &p) != nil {
			t.Fatalf("deployment feed: %d %s", r.status, r.body)
		}
		return len(p.Entries)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d entries before the entry settled, want 0", n)
	}
	e.clock.add(time.Hour + time.Second)
	if n := count(); n != 1 {
		t.Fatalf("an hour later by the server's clock: %d entries, want 1", n)
	}
}

func TestFeedGoesByTheServersClock(t *testing.T) {
	e := feedEnv(t, envConfig{opts: func(o *Options) { o.FeedSettle = time.Hour }})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	tok := orgAdminToken(t, "acme")
	if p := e.orgFeed("acme", tok, "", 10, 0); len(p.Entries) != 0 {
		t.Fatalf("an entry shows before it settled: %+v", p.Entries)
	}
	early := e.consumerAt("acme", "early", "now")
	e.clock.add(time.Hour)
	p := e.orgFeed("acme", tok, "", 10, 0)
	if len(p.Entries) != 1 {
		t.Fatalf("an hour later by the server's clock: %d entries, want 1", len(p.Entries))
	}
	entry := p.Entries[0].Cursor
	if early.Cursor >= entry {
		t.Errorf(`"now" an hour before: cursor %s, want one before the entry %s`, early.Cursor, entry)
	}
	e.clock.add(time.Second) // "now" a second after the entry settled, not in its millisecond
	if late := e.consumerAt("acme", "late", "now"); late.Cursor < entry {
		t.Errorf(`"now" after it settled: cursor %s, want one at or after the entry %s`, late.Cursor, entry)
	}
}

// consumerAt registers a consumer at cursor and returns it as stored.
func (e *testEnv) consumerAt(org, name, cursor string) diff.Consumer {
	e.t.Helper()
	var c diff.Consumer
	r := e.putConsumer(org, name, `{"cursor":"`+cursor+`"}`)
	if r.status != 200 || json.Unmarshal(r.body, &c) != nil {
		e.t.Fatalf("consumer %s at %q: %d %s", name, cursor, r.status, r.body)
	}
	return c
}

// TestConsumerLagAndStale: the replica holding the feed-worker lease
// exports each consumer's lag in entries and seconds, and flags (and logs)
// one that has not acknowledged for longer than ConsumerStale while
// entries wait; acknowledging clears both.
func TestConsumerLagAndStale(t *testing.T) {
	e := feedEnv(t, envConfig{opts: func(o *Options) {
		o.Backend.Worker, o.Backend.WorkerInterval, o.Backend.ConsumerStale = true, 20*time.Millisecond, time.Hour
	}})
	e.enableOrg("acme")
	for _, u := range []string{"a", "b", "c"} {
		e.upload("acme", u, []gen.Record{{Key: "k", Value: []byte(`1`)}})
	}
	if r := e.putConsumer("acme", "slow", `{"cursor":""}`); r.status != 200 {
		t.Fatal(r.status)
	}
	m := e.s.backend
	waitUntil(t, "the lag shows 3 entries", func() bool {
		return gauge(t, m.workerLeader) == 1 && gauge(t, m.consumerLagEntries.WithLabelValues("acme", "slow")) == 3
	})
	if s := gauge(t, m.consumerLagSeconds.WithLabelValues("acme", "slow")); s < 0 {
		t.Errorf("lag seconds %v", s)
	}
	if gauge(t, m.consumerStale.WithLabelValues("acme", "slow")) != 0 {
		t.Error("a consumer registered just now is reported stale")
	}
	e.clock.add(2 * time.Hour) // past ConsumerStale by the server's clock
	waitUntil(t, "the consumer is reported stale", func() bool {
		return gauge(t, m.consumerStale.WithLabelValues("acme", "slow")) == 1
	})
	if !strings.Contains(e.logs.String(), "feed consumer is stale") {
		t.Error("no log line for the stale consumer")
	}
	page := e.orgFeed("acme", orgAdminToken(t, "acme"), "", 10, 0)
	if r := e.putConsumer("acme", "slow", `{"cursor":"`+page.Next+`"}`); r.status != 200 {
		t.Fatal(r.status)
	}
	waitUntil(t, "the lag clears", func() bool {
		return gauge(t, m.consumerLagEntries.WithLabelValues("acme", "slow")) == 0 &&
			gauge(t, m.consumerStale.WithLabelValues("acme", "slow")) == 0
	})
	r := e.do("GET", "/metrics", nil)
	if !strings.Contains(string(r.body), `deltasync_feed_consumer_lag_entries{consumer="slow",org="acme"} 0`) {
		t.Errorf("/metrics lacks the consumer's lag")
	}
}

// TestConsumersPerOrgBounded: an org admin cannot register consumers
// without bound (each holds versions from gc and costs the feed worker).
func TestConsumersPerOrgBounded(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	for i := range maxConsumersPerOrg {
		if r := e.putConsumer("acme", fmt.Sprintf("c%02d", i), `{"cursor":""}`); r.status != 200 {
			t.Fatalf("consumer %d: %d %s", i, r.status, r.body)
		}
	}
	if r := e.putConsumer("acme", "onemore", `{"cursor":""}`); r.status != 409 {
		t.Errorf("consumer over the bound: %d %s", r.status, r.body)
	}
	if r := e.putConsumer("acme", "c00", `{"cursor":"now"}`); r.status != 200 {
		t.Errorf("acknowledging an existing consumer at the bound: %d %s", r.status, r.body)
	}
}
