package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

// memNotifier is an in-process Notifier shared by test replicas: Publish
// calls every subscriber at once.
type memNotifier struct {
	mu   sync.Mutex
	subs map[int]func(org, user string, v uint64)
	next int
}

func newMemNotifier() *memNotifier {
	return &memNotifier{subs: map[int]func(string, string, uint64){}}
}

func (n *memNotifier) Publish(_ context.Context, org, user string, v uint64) error {
	n.mu.Lock()
	var fns []func(string, string, uint64)
	for _, fn := range n.subs {
		fns = append(fns, fn)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(org, user, v)
	}
	return nil
}

func (n *memNotifier) Subscribe(ctx context.Context, fn func(org, user string, v uint64)) error {
	n.mu.Lock()
	id := n.next
	n.next++
	n.subs[id] = fn
	n.mu.Unlock()
	<-ctx.Done()
	n.mu.Lock()
	delete(n.subs, id)
	n.mu.Unlock()
	return ctx.Err()
}

// holdPolls starts a long poll for each member (from version v) and waits
// until all of them wait in the replica's hub.
func (e *testEnv) holdPolls(org string, users []string, v uint64) map[string]<-chan response {
	e.t.Helper()
	polls := map[string]<-chan response{}
	for _, u := range users {
		polls[u] = e.pollAsync(fmt.Sprintf("/v1/sync?from=%d&wait=30s", v), userToken(e.t, org, u))
	}
	waitUntil(e.t, "every poll waits in the hub", func() bool { return waiters(e.s) == len(users) })
	return polls
}

// wantWokenTo checks that every held poll answers with version want.
func wantWokenTo(t *testing.T, polls map[string]<-chan response, want uint64) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for u, p := range polls {
		select {
		case r := <-p:
			if r.status != 200 || r.header["X-Deltasync-Version"] != fmt.Sprint(want) {
				t.Errorf("%s's poll: %d version %q, want %d", u, r.status, r.header["X-Deltasync-Version"], want)
			}
		case <-deadline:
			t.Fatalf("%s's poll was not woken by the fan-out", u)
		}
	}
}

// TestFanoutWakesHeldPolls: a fan-out to 200 members wakes each member's
// held long poll at once through the replica's hub (the watcher's next
// round is an hour away), each with the new version.
func TestFanoutWakesHeldPolls(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: slowWatch})
	e.client.MaxResponseBodySize = 8 << 20
	const n = 200
	e.e2eMembers("acme", n)
	users := memberNames(n)
	polls := e.holdPolls("acme", users, 1)
	status, res := e.fanout("acme", fanoutBody("msg-1", users, `[{"op":"put","key":"channels/general/msgs/1","value":{"text":"hello all"}}]`))
	if status != 200 || len(res) != n {
		t.Fatalf("fan-out: %d, %d lines", status, len(res))
	}
	wantWokenTo(t, polls, 2)
	if got := counter(t, e.s.hub.m.wakeups.WithLabelValues("local")); got != n {
		t.Errorf("local wake-ups %v, want %d", got, n)
	}
}

// TestAdminPatchesWakePollsOnOtherReplicas: admin patches (one user and
// fanned out) committed through replica A are announced through the
// notifier like device patches, so polls held on replica B wake without
// waiting for B's watcher (whose next round is an hour away).
func TestAdminPatchesWakePollsOnOtherReplicas(t *testing.T) {
	store := memstore.New()
	note := newMemNotifier()
	withNote := func(o *Options) { o.Notifier = note; slowWatch(o) }
	a := newTestEnv(t, envConfig{store: store, opts: withNote})
	b := newTestEnv(t, envConfig{store: store, opts: withNote})
	b.client.MaxResponseBodySize = 8 << 20
	a.e2eMembers("acme", 3)
	users := memberNames(3)
	polls := b.holdPolls("acme", users, 1)
	a.s.startWatcher() // subscribes A too, as a serving replica that held a poll would be
	if status, res := a.fanout("acme", fanoutBody("msg-1", users[:2], `[{"op":"put","key":"m/1","value":1}]`)); status != 200 || len(res) != 2 {
		t.Fatalf("fan-out: %d %v", status, res)
	}
	patchAnswer(t, a.do("POST", "/v1/admin/orgs/acme/users/"+users[2]+"/patches", []byte(`{"id":"one","ops":[{"op":"put","key":"m/1","value":1}]}`),
		withToken(adminToken(t))))
	wantWokenTo(t, polls, 2)
	if got := counter(t, b.s.hub.m.wakeups.WithLabelValues("notify")); got != 3 {
		t.Errorf("B's wake-ups by the notifier %v, want 3", got)
	}
}

// orgFeedAsync sends a per-org feed long poll and returns where its page
// arrives.
func (e *testEnv) orgFeedAsync(org, tok, after string, wait time.Duration) <-chan orgFeedPage {
	got := make(chan orgFeedPage, 1)
	go func() { got <- e.orgFeed(org, tok, after, 100, wait) }()
	return got
}

// TestIdleOrgFeedPollsCostTheStoreNothing: per-org feed long polls with
// nothing to read make no store requests of their own while they wait:
// the replica's one watcher lists the feed once per round, whatever the
// number of waiting readers (before, each reader listed the feed every
// --feed-poll-interval). One new entry then answers every reader.
func TestIdleOrgFeedPollsCostTheStoreNothing(t *testing.T) {
	counting := snapshot.NewCountingStore(memstore.New())
	e := feedEnv(t, envConfig{store: counting, opts: func(o *Options) { o.Watch.Interval = 100 * time.Millisecond }})
	e.enableOrg("acme") // announced in the feed, which is not news to readers
	tok := orgAdminToken(t, "acme")
	const readers = 10
	var polls []<-chan orgFeedPage
	for range readers {
		polls = append(polls, e.orgFeedAsync("acme", tok, "", 20*time.Second))
	}
	waitUntil(t, "every reader waits", func() bool { return e.s.orgFeeds.waiting("acme") == readers })
	waitUntil(t, "the watcher has listed", func() bool { return e.s.watcher.rounds.Load() >= 2 })
	lists0, others0 := storeCounts(counting)
	rounds0 := e.s.watcher.rounds.Load()
	time.Sleep(time.Second) // idle
	lists1, others1 := storeCounts(counting)
	rounds1 := e.s.watcher.rounds.Load()
	t.Logf("%d feed readers idle for a second: %d listings (%d watcher rounds), %d other store requests",
		readers, lists1-lists0, rounds1-rounds0, others1-others0)
	if others1 != others0 {
		t.Errorf("%d idle feed readers made %d store requests other than listings, want 0", readers, others1-others0)
	}
	if n := lists1 - lists0; n > rounds1-rounds0+1 {
		t.Errorf("%d listings in %d watcher rounds while %d feed readers waited, want one per round", n, rounds1-rounds0, readers)
	}
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	for i, p := range polls {
		select {
		case page := <-p:
			if len(page.Entries) != 1 || page.Entries[0].User != "alice" {
				t.Errorf("reader %d got %+v", i, page)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("reader %d was not woken by the new entry", i)
		}
	}
}

// TestOrgFeedWokenByAnotherReplica: a per-org feed reader waiting on
// replica B answers an entry committed through replica A, learned by B's
// watcher, and waiting readers of another org stay asleep.
func TestOrgFeedWokenByAnotherReplica(t *testing.T) {
	store := memstore.New()
	a := feedEnv(t, envConfig{store: store})
	b := feedEnv(t, envConfig{store: store, opts: fastWatch})
	a.enableOrg("acme")
	a.enableOrg("globex")
	a.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	tok := orgAdminToken(t, "acme")
	var start orgFeedPage
	waitUntil(t, "the upload's entry is readable", func() bool {
		start = b.orgFeed("acme", tok, "", 100, 0)
		return len(start.Entries) == 1
	})
	acme := b.orgFeedAsync("acme", tok, start.Next, 15*time.Second)
	globex := b.orgFeedAsync("globex", orgAdminToken(t, "globex"), "", 2*time.Second)
	waitUntil(t, "both readers wait on B", func() bool {
		return b.s.orgFeeds.waiting("acme") == 1 && b.s.orgFeeds.waiting("globex") == 1
	})
	patchAnswer(t, a.do("POST", "/v1/admin/orgs/acme/users/alice/patches", []byte(`{"id":"adm","ops":[{"op":"put","key":"k","value":2}]}`),
		withToken(adminToken(t))))
	select {
	case p := <-acme:
		if len(p.Entries) != 1 || p.Entries[0].PatchID != "adm" {
			t.Fatalf("acme's reader got %+v", p)
		}
	case <-time.After(14 * time.Second):
		t.Fatal("an entry committed through A did not reach the reader on B")
	}
	if p := <-globex; len(p.Entries) != 0 {
		t.Errorf("globex's reader got %+v", p)
	}
}

// TestOrgFeedReaderWokenWhenAnEntrySettles: an entry committed just
// before a reader came is too young for it to see (FeedSettle); the reader
// waits and is woken once the entry is old enough, with no commit after
// it to announce anything.
func TestOrgFeedReaderWokenWhenAnEntrySettles(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.FeedSettle = 500 * time.Millisecond; slowWatch(o) }})
	e.enableOrg("acme")
	tok := orgAdminToken(t, "acme")
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	if p := e.orgFeed("acme", tok, "", 100, 0); len(p.Entries) != 0 {
		t.Skipf("the entry was visible at once (the machine took %v to get here)", 500*time.Millisecond)
	}
	select {
	case p := <-e.orgFeedAsync("acme", tok, "", 15*time.Second):
		if len(p.Entries) != 1 || p.Entries[0].User != "alice" {
			t.Fatalf("reader got %+v", p)
		}
	case <-time.After(14 * time.Second):
		t.Fatal("the reader was not woken when the entry became visible")
	}
}

// orgFeedsTracked returns how many orgs a replica's orgFeeds keeps.
func orgFeedsTracked(s *Server) int {
	s.orgFeeds.mu.Lock()
	defer s.orgFeeds.mu.Unlock()
	return len(s.orgFeeds.orgs)
}

// TestOrgFeedReadsLeaveNothingBehind: reads without a wait, and waits
// that ended, leave no org behind in the replica's memory (an admin
// reading many orgs' feeds must not grow it), once their news is due.
func TestOrgFeedReadsLeaveNothingBehind(t *testing.T) {
	e := feedEnv(t, envConfig{opts: slowWatch})
	tok := adminToken(t)
	for i := range 20 {
		e.orgFeed(fmt.Sprintf("org%d", i), tok, "", 10, 0)
	}
	e.orgFeed("org0", tok, "", 10, 20*time.Millisecond)
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	waitUntil(t, "the orgs are forgotten", func() bool { return orgFeedsTracked(e.s) == 0 })
}

// TestRepeatedPatchesWakeNoFeedReader: a patch answered from storage (a
// retry, or an admin patch that changed nothing) commits nothing, so it
// wakes no per-org feed reader: a device retrying cannot make readers
// read the feed.
func TestRepeatedPatchesWakeNoFeedReader(t *testing.T) {
	counting := snapshot.NewCountingStore(memstore.New())
	e := feedEnv(t, envConfig{store: counting, opts: slowWatch})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	tok := orgAdminToken(t, "acme")
	dev := userToken(t, "acme", "alice")
	patch := []byte(`{"id":"p","base":1,"ops":[{"op":"put","key":"k","value":2}]}`)
	patchAnswer(t, e.do("POST", "/v1/patches", patch, withToken(dev)))
	var start orgFeedPage
	waitUntil(t, "both entries are readable", func() bool {
		start = e.orgFeed("acme", tok, "", 100, 0)
		return len(start.Entries) == 2
	})
	waitUntil(t, "earlier news is due", func() bool { return orgFeedsTracked(e.s) == 0 })
	poll := e.orgFeedAsync("acme", tok, start.Next, 2*time.Second)
	waitUntil(t, "the reader waits", func() bool { return e.s.orgFeeds.waiting("acme") == 1 })
	lists0, _ := storeCounts(counting)
	for range 5 {
		if r := patchAnswer(t, e.do("POST", "/v1/patches", patch, withToken(dev))); !r.Duplicate {
			t.Fatalf("retry not a duplicate: %+v", r)
		}
		patchAnswer(t, e.do("POST", "/v1/admin/orgs/acme/users/alice/patches", []byte(`{"id":"same","ops":[{"op":"put","key":"k","value":2}]}`),
			withToken(adminToken(t))))
	}
	if p := <-poll; len(p.Entries) != 0 {
		t.Fatalf("reader got %+v", p)
	}
	if lists1, _ := storeCounts(counting); lists1 != lists0 {
		t.Errorf("the reader listed the feed %d times after patches that committed nothing, want 0", lists1-lists0)
	}
}

// longNames returns n distinct user names of the longest length (128).
func longNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%05d%s", i, strings.Repeat("x", 123))
	}
	return out
}

// TestFanoutOfTenThousandUsersFits: with the default options a fan-out
// naming 10,000 users of the longest names fits the body limit and
// decodes; 10,001 users are refused whole before anything is written.
func TestFanoutOfTenThousandUsersFits(t *testing.T) {
	mem := memstore.New()
	e := newTestEnv(t, envConfig{store: mem})
	e.enableOrg("acme")
	op := `[{"op":"put","key":"channels/general/msgs/1","value":{"text":"hello all"}}]`
	body := fanoutBody("msg-1", longNames(10_000), op)
	if int64(len(body)) > e.s.fanoutBodyLimit() {
		t.Fatalf("10,000 users of 128 bytes make a %d-byte body, over the limit of %d", len(body), e.s.fanoutBodyLimit())
	}
	if _, users, err := e.s.decodeFanout(body); err != nil || len(users) != 10_000 {
		t.Fatalf("10,000 users: %d users, %v", len(users), err)
	}
	before := storeContents(t, mem)
	if status, _ := e.fanout("acme", fanoutBody("too-many", longNames(10_001), op)); status != 400 {
		t.Errorf("10,001 users: %d, want 400", status)
	}
	if after := storeContents(t, mem); !sameContents(before, after) {
		t.Fatal("a refused fan-out of 10,001 users changed the store")
	}
}

// TestBigFanoutOfTenThousandUsers: a fan-out to 10,000 users (the default
// maximum, the longest names) on the directory store answers one line
// per user, each applied. (The memory store lists by scanning every key,
// which would make it quadratic.)
func TestBigFanoutOfTenThousandUsers(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("10,000 replays: run without -race/-short (scripts/test does)")
	}
	dir, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, envConfig{store: dir})
	e.client.MaxResponseBodySize = 64 << 20 // before the first request: its host client keeps it
	e.enableOrg("acme")
	users := longNames(10_000)
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://deltasync.test/v1/admin/orgs/acme/patches")
	req.Header.Set("Authorization", "Bearer "+adminToken(t))
	req.SetBody(fanoutBody("msg-1", users, `[{"op":"put","key":"channels/general/msgs/1","value":{"text":"hello all"}}]`))
	start := time.Now()
	if err := e.client.DoTimeout(req, resp, 10*time.Minute); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("10,000 users: %v %d %.200s", err, resp.StatusCode(), resp.Body())
	}
	t.Logf("a fan-out to 10,000 users on the directory store took %v", time.Since(start).Round(time.Millisecond))
	applied := map[string]bool{}
	for line := range bytes.Lines(resp.Body()) {
		var r wire.FanoutResult
		if err := json.Unmarshal(line, &r); err != nil || r.Error != nil || r.PatchResponse == nil || !r.Created {
			t.Fatalf("line %.200s: %v", line, err)
		}
		applied[r.User] = true
	}
	for _, u := range users {
		if !applied[u] {
			t.Fatalf("no line for %s (%d lines)", u, len(applied))
		}
	}
}

// doSlow is e.do for requests that may take long under the race
// detector (fan-outs to hundreds of users): a two-minute deadline.
func (e *testEnv) doSlow(method, path string, body []byte, opts ...reqOpt) response {
	e.t.Helper()
	return e.doWithin(2*time.Minute, method, path, body, opts...)
}

// TestOrgFeedReadersShareTheirReads: readers of one org waiting at the same
// cursor, woken by one entry, share one read of the feed: many readers
// (an org admin opening hundreds of polls) do not multiply the store's
// work per entry.
func TestOrgFeedReadersShareTheirReads(t *testing.T) {
	counting := snapshot.NewCountingStore(memstore.New())
	e := feedEnv(t, envConfig{store: counting, opts: slowWatch})
	e.enableOrg("acme")
	tok := orgAdminToken(t, "acme")
	const readers = 30
	var polls []<-chan orgFeedPage
	for range readers {
		polls = append(polls, e.orgFeedAsync("acme", tok, "", 20*time.Second))
	}
	waitUntil(t, "every reader waits", func() bool { return e.s.orgFeeds.waiting("acme") == readers })
	lists0, _ := storeCounts(counting)
	// The upload's own listings are counted apart.
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	lists1, _ := storeCounts(counting)
	for i, p := range polls {
		select {
		case page := <-p:
			if len(page.Entries) != 1 {
				t.Errorf("reader %d got %+v", i, page)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("reader %d was not woken", i)
		}
	}
	lists2, _ := storeCounts(counting)
	t.Logf("%d readers woken by one entry: %d listings (the upload itself: %d)", readers, lists2-lists1, lists1-lists0)
	if n := lists2 - lists1; n > 3*4 {
		t.Errorf("%d readers woken by one entry made %d listings, want a shared read or few", readers, n)
	}
}
