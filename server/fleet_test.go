package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
	"github.com/deltasync/deltasync/wire"
)

// fastWatch makes the watcher list the feed every few milliseconds, so that
// cross-replica tests do not wait for the default interval.
func fastWatch(o *Options) { o.Watch.Interval = 10 * time.Millisecond }

// slowWatch leaves the watcher its first round only: the replica learns
// of versions committed elsewhere from its clients (min=) or the store.
func slowWatch(o *Options) { o.Watch.Interval = time.Hour }

// pollAsync sends a long poll and returns where its answer arrives.
func (e *testEnv) pollAsync(path, tok string) <-chan response {
	got := make(chan response, 1)
	go func() {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://deltasync.test" + path)
		req.Header.Set("Authorization", "Bearer "+tok)
		r := response{status: -1, header: map[string]string{}}
		if err := e.client.DoTimeout(req, resp, time.Minute); err == nil {
			r.status, r.body = resp.StatusCode(), append([]byte(nil), resp.Body()...)
			for k, v := range resp.Header.All() {
				r.header[string(k)] = string(v)
			}
		}
		got <- r
	}()
	return got
}

// waiters returns how many long polls wait in the server's hub.
func waiters(s *Server) int {
	_, n := s.hub.counts()
	return n
}

// storeCounts is what the store behind a test env saw so far.
func storeCounts(c *snapshot.CountingStore) (lists, others int64) {
	n := c.Counts()
	return n.Lists, n.Gets + n.Puts + n.Stats + n.Deletes
}

// TestIdleLongPollsCostTheStoreNothing: long polls waiting for news make
// no store requests of their own; the replica's one watcher lists the feed
// once per round, whatever the number of polls. (Before the hub, each poll
// asked the store for the next manifest every 250 ms: 4 requests per
// device per second.)
func TestIdleLongPollsCostTheStoreNothing(t *testing.T) {
	counting := snapshot.NewCountingStore(memstore.New())
	e := newTestEnv(t, envConfig{store: counting, opts: func(o *Options) { o.Watch.Interval = 100 * time.Millisecond }})
	e.enableOrg("acme")
	const users = 10
	var polls []<-chan response
	for i := range users {
		user := fmt.Sprintf("u%d", i)
		v := e.upload("acme", user, gen.Dataset(gen.Options{Size: 4 << 10, Seed: int64(i)}))
		polls = append(polls, e.pollAsync(fmt.Sprintf("/v1/sync?from=%d&wait=5s", v), userToken(t, "acme", user)))
	}
	waitUntil(t, "every poll waits in the hub", func() bool { return waiters(e.s) == users })
	lists0, others0 := storeCounts(counting)
	rounds0 := e.s.watcher.rounds.Load()
	time.Sleep(time.Second) // idle: the old polling would have asked 40 times
	lists1, others1 := storeCounts(counting)
	rounds1 := e.s.watcher.rounds.Load()
	if others1 != others0 {
		t.Errorf("%d idle long polls made %d store requests other than the watcher's listings, want 0", users, others1-others0)
	}
	if n := lists1 - lists0; n > rounds1-rounds0+1 {
		t.Errorf("%d listings in %d watcher rounds, want one per round", n, rounds1-rounds0)
	}
	for _, p := range polls {
		if r := <-p; r.status != 200 || !strings.Contains(string(r.body), `"up_to_date":true`) {
			t.Errorf("idle poll answered %d %s, want up to date", r.status, r.body)
		}
	}
	// The next poll of a user the hub keeps track of costs nothing either.
	_, others2 := storeCounts(counting)
	p := e.pollAsync("/v1/sync?from=1&wait=50ms", userToken(t, "acme", "u0"))
	if r := <-p; r.status != 200 {
		t.Fatalf("poll again: %d %s", r.status, r.body)
	}
	if _, others3 := storeCounts(counting); others3 != others2 {
		t.Errorf("polling again made %d store requests, want 0", others3-others2)
	}
}

// TestLongPollWokenByAnotherReplica: a version committed through replica A
// wakes a long poll waiting on replica B (both on one store), through B's
// feed watcher, and the answer is the delta to it.
func TestLongPollWokenByAnotherReplica(t *testing.T) {
	store := memstore.New()
	a := newTestEnv(t, envConfig{store: store})
	b := newTestEnv(t, envConfig{store: store, opts: fastWatch})
	b.client.MaxResponseBodySize = 8 << 20
	a.enableOrg("acme")
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 1})
	v := a.upload("acme", "alice", recs)
	poll := b.pollAsync(fmt.Sprintf("/v1/sync?from=%d&wait=30s", v), userToken(t, "acme", "alice"))
	waitUntil(t, "the poll waits on B", func() bool { return waiters(b.s) == 1 })
	a.upload("acme", "alice", gen.EditOneField(recs, 1))
	select {
	case r := <-poll:
		if r.status != 200 || r.header["Content-Type"] != wire.ContentTypeDelta || r.header["X-Deltasync-Version"] != fmt.Sprint(v+1) {
			t.Fatalf("poll on B: %d %q version %q", r.status, r.header["Content-Type"], r.header["X-Deltasync-Version"])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a version committed through A did not wake the poll on B")
	}
	if n := counter(t, b.s.hub.m.wakeups.WithLabelValues("feed")); n != 1 {
		t.Errorf("B counted %v wake-ups from the feed, want 1", n)
	}
}

// TestLongPollWokenAtOnceByItsReplica: a patch committed through the
// replica a poll waits on wakes it without the watcher (whose next round
// is an hour away).
func TestLongPollWokenAtOnceByItsReplica(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: slowWatch})
	e.client.MaxResponseBodySize = 8 << 20
	e.enableOrg("acme")
	v := e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 2}))
	tok := userToken(t, "acme", "alice")
	poll := e.pollAsync(fmt.Sprintf("/v1/sync?from=%d&wait=30s", v), tok)
	waitUntil(t, "the poll waits", func() bool { return waiters(e.s) == 1 })
	patch := fmt.Sprintf(`{"id":"p1","base":%d,"ops":[{"op":"put","key":"k/1","value":1}]}`, v)
	if r := e.do("POST", "/v1/patches", []byte(patch), withToken(tok)); r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	select {
	case r := <-poll:
		if r.status != 200 || r.header["X-Deltasync-Version"] != fmt.Sprint(v+1) {
			t.Fatalf("poll: %d version %q", r.status, r.header["X-Deltasync-Version"])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a patch through the same replica did not wake the poll")
	}
	if n := counter(t, e.s.hub.m.wakeups.WithLabelValues("local")); n != 1 {
		t.Errorf("local wake-ups %v, want 1", n)
	}
}

// TestSyncMinReadsTheHeadAgain: read-your-writes across replicas without
// stickiness. A client got version V from replica A; replica B's cached
// head trails. Asked from=V-1 with min=V, B must not answer "up to date":
// it reads the head again. (Before, B answered up to date at V-1 until its
// cache expired.)
func TestSyncMinReadsTheHeadAgain(t *testing.T) {
	store := memstore.New()
	a := newTestEnv(t, envConfig{store: store})
	b := newTestEnv(t, envConfig{store: store, opts: func(o *Options) {
		o.HeadCacheTTL = time.Hour // B's cache trails for the whole test
		slowWatch(o)
	}})
	b.client.MaxResponseBodySize = 8 << 20
	a.enableOrg("acme")
	v := a.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 4}))
	tok := userToken(t, "acme", "alice")
	if r := b.do("GET", fmt.Sprintf("/v1/sync?from=%d", v), nil, withToken(tok)); r.status != 200 || !strings.Contains(string(r.body), `"up_to_date":true`) {
		t.Fatalf("sync on B: %d %s", r.status, r.body)
	}
	// B's hub keeps track of alice too (a poll ended there).
	if r := <-b.pollAsync(fmt.Sprintf("/v1/sync?from=%d&wait=10ms", v), tok); r.status != 200 {
		t.Fatalf("poll on B: %d %s", r.status, r.body)
	}
	patch := fmt.Sprintf(`{"id":"p1","base":%d,"ops":[{"op":"put","key":"k/1","value":1}]}`, v)
	r := a.do("POST", "/v1/patches", []byte(patch), withToken(tok))
	if r.status != 200 {
		t.Fatalf("patch on A: %d %s", r.status, r.body)
	}
	for _, path := range []string{
		fmt.Sprintf("/v1/sync?from=%d&min=%d", v, v+1),
		fmt.Sprintf("/v1/sync?from=%d&min=%d&wait=30s", v, v+1),
	} {
		r := b.do("GET", path, nil, withToken(tok))
		if r.status != 200 || r.header["X-Deltasync-Version"] != fmt.Sprint(v+1) {
			t.Errorf("GET %s on B: %d version %q %s, want the delta to %d", path, r.status, r.header["X-Deltasync-Version"], r.body, v+1)
		}
	}
	// min names a version the store does not have (a confused client):
	// the head read again is the answer, not an error.
	if r := b.do("GET", fmt.Sprintf("/v1/sync?from=%d&min=%d", v+1, v+5), nil, withToken(tok)); r.status != 200 || !strings.Contains(string(r.body), `"up_to_date":true`) {
		t.Errorf("min past the head: %d %s, want up to date", r.status, r.body)
	}
	if r := b.do("GET", "/v1/sync?from=1&min=x", nil, withToken(tok)); r.status != 400 {
		t.Errorf("min=x: %d, want 400", r.status)
	}
}

// TestAbandonedLongPollLeavesNothing: a client that disconnects mid-poll
// leaves no waiter in the hub and causes no further store requests.
func TestAbandonedLongPollLeavesNothing(t *testing.T) {
	counting := snapshot.NewCountingStore(memstore.New())
	e, addr := newTCPEnv(t, envConfig{store: counting, opts: func(o *Options) { o.LongPollMax = time.Hour }})
	e.enableOrg("acme")
	v := e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /v1/sync?from=%d&wait=1h HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", v, userToken(t, "acme", "alice"))
	waitUntil(t, "the long poll waits", func() bool { return waiters(e.s) == 1 })
	c.Close()
	waitUntil(t, "the server drops the abandoned poll", func() bool {
		return waiters(e.s) == 0 && gauge(t, e.s.metrics.inFlight) == 0
	})
	_, before := storeCounts(counting)
	time.Sleep(600 * time.Millisecond) // the old polling asked every 250 ms
	if _, after := storeCounts(counting); after != before {
		t.Errorf("the abandoned poll caused %d store requests after its client left, want 0", after-before)
	}
	if users, w := e.s.hub.counts(); w != 0 || users > 1 {
		t.Errorf("hub holds %d users and %d waiters after the client left, want no waiter", users, w)
	}
}

// TestHeldLongPollsCostOneGoroutineEach: a long poll held on a socket costs
// the server one goroutine, fasthttp's worker parked in the hub; noticing
// its client leave costs none of its own (peerWatcher), and every client
// that leaves is still noticed (issue 10: memory per connected device).
func TestHeldLongPollsCostOneGoroutineEach(t *testing.T) {
	e, addr := newTCPEnv(t, envConfig{opts: func(o *Options) { o.LongPollMax = time.Hour }})
	e.enableOrg("acme")
	v := e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3}))
	tok := userToken(t, "acme", "alice")
	poll := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /v1/sync?from=%d&wait=1h HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", v, tok)
		return c
	}
	// A first poll starts what runs once per server (the feed watcher,
	// the client watch) and lets the hub learn alice's head.
	first := poll()
	waitUntil(t, "the first poll waits", func() bool { return waiters(e.s) == 1 })
	first.Close()
	waitUntil(t, "the first poll ends", func() bool { return waiters(e.s) == 0 && gauge(t, e.s.metrics.inFlight) == 0 })

	const n = 50
	before := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = poll()
	}
	waitUntil(t, "every poll waits", func() bool { return waiters(e.s) == n })
	if extra := runtime.NumGoroutine() - before; extra > n+n/5 {
		t.Errorf("%d held long polls run %d more goroutines, want about one each", n, extra)
	}
	for _, c := range conns {
		c.Close()
	}
	waitUntil(t, "the server drops every abandoned poll", func() bool {
		return waiters(e.s) == 0 && gauge(t, e.s.metrics.inFlight) == 0
	})
	if got := counter(t, e.s.guards.clientsGone); got != n+1 {
		t.Errorf("clients noticed leaving: %v, want %d", got, n+1)
	}
}

// TestSettingsChangeReachesPollsOnOtherReplicas: long polls take the org's
// settings from the cache while the feed watcher keeps it current (no store
// read per poll), and a change made through another replica still reaches
// them: it is announced in the feed.
func TestSettingsChangeReachesPollsOnOtherReplicas(t *testing.T) {
	counting := snapshot.NewCountingStore(memstore.New())
	a := newTestEnv(t, envConfig{store: counting})
	b := newTestEnv(t, envConfig{store: counting, opts: func(o *Options) {
		fastWatch(o)
		o.SettingsTTL = time.Millisecond // only the watcher keeps them
	}})
	a.enableOrg("acme")
	v := a.upload("acme", "alice", gen.Dataset(gen.Options{Size: 4 << 10, Seed: 5}))
	tok := userToken(t, "acme", "alice")
	path := fmt.Sprintf("/v1/sync?from=%d&wait=1ms", v)
	for range 2 { // the first starts the watcher, the second reads the settings under it
		if r := <-b.pollAsync(path, tok); r.status != 200 {
			t.Fatalf("poll on B: %d %s", r.status, r.body)
		}
	}
	before := counting.Counts()
	if r := <-b.pollAsync(path, tok); r.status != 200 {
		t.Fatalf("poll on B: %d %s", r.status, r.body)
	}
	if after := counting.Counts(); after.Gets != before.Gets || after.Stats != before.Stats {
		t.Errorf("a poll read the store (%d gets, %d stats), want settings and head from the caches",
			after.Gets-before.Gets, after.Stats-before.Stats)
	}
	if r := a.do("PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode":false}`), withToken(adminToken(t))); r.status != 200 {
		t.Fatalf("disable org on A: %d %s", r.status, r.body)
	}
	waitUntil(t, "a poll on B sees the org's offline mode switched off", func() bool {
		r := <-b.pollAsync(path, tok)
		return r.status == 403 && strings.Contains(string(r.body), wire.CodeOfflineDisabled)
	})
}

// TestMetricsCountStoreRequests: /metrics counts every request the store
// receives, by kind (as a counting store under the server sees them), with
// latency histograms, and shows the hub's waiters and wake-ups.
func TestMetricsCountStoreRequests(t *testing.T) {
	counting := snapshot.NewCountingStore(memstore.New())
	e := newTestEnv(t, envConfig{store: counting})
	e.client.MaxResponseBodySize = 8 << 20
	e.enableOrg("acme")
	v := e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 6}))
	tok := userToken(t, "acme", "alice")
	if r := e.do("GET", "/v1/sync?from=0", nil, withToken(tok)); r.status != 200 {
		t.Fatalf("sync: %d", r.status)
	}
	if r := e.do("GET", fmt.Sprintf("/v1/sync?from=%d&wait=1ms", v), nil, withToken(tok)); r.status != 200 {
		t.Fatalf("poll: %d", r.status)
	}
	waitUntil(t, "the watcher's first round", func() bool { return e.s.watcher.rounds.Load() > 0 })
	c := counting.Counts()
	text := string(e.do("GET", "/metrics", nil).body)
	sum := func(op string) int64 {
		var n int64
		for _, line := range strings.Split(text, "\n") {
			if strings.HasPrefix(line, `deltasync_store_requests_total{op="`+op+`"`) {
				var x float64
				fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &x)
				n += int64(x)
			}
		}
		return n
	}
	for op, want := range map[string]int64{"get": c.Gets, "put": c.Puts, "stat": c.Stats, "delete": c.Deletes} {
		if got := sum(op); got != want {
			t.Errorf("metrics count %d %s requests, the store saw %d", got, op, want)
		}
	}
	if got := sum("list"); got < c.Lists || got > c.Lists+1 { // a watcher round may fall between the readings
		t.Errorf("metrics count %d listings, the store saw %d", got, c.Lists)
	}
	for _, want := range []string{
		`deltasync_store_request_duration_seconds_count{op="get"}`,
		`deltasync_store_read_bytes_total`,
		`deltasync_hub_waiters 0`,
		`deltasync_hub_wakeups_total{source="local"} 0`,
		`deltasync_watcher_feed_entries_total`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// gateStore holds every Get of a key that gate maps to an open channel,
// until the channel closes, counting the Gets of each key and the most
// held at once.
type gateStore struct {
	*storetest.Faults
	gate       atomic.Pointer[func(key string) chan struct{}]
	mu         sync.Mutex
	calls      map[string]int
	held, most int
}

func newGateStore() *gateStore {
	g := &gateStore{Faults: storetest.Wrap(memstore.New()), calls: map[string]int{}}
	g.GetFunc = func(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
		g.hold(ctx, key)
		return g.Faults.Store.Get(ctx, key)
	}
	return g
}

func (g *gateStore) hold(ctx context.Context, key string) {
	f := g.gate.Load()
	if f == nil {
		return
	}
	ch := (*f)(key)
	if ch == nil {
		return
	}
	g.mu.Lock()
	g.calls[key]++
	g.held++
	g.most = max(g.most, g.held)
	g.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
	g.mu.Lock()
	g.held--
	g.mu.Unlock()
}

func (g *gateStore) stats(key string) (calls, held, most int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[key], g.held, g.most
}

// TestFirstPollsShareTheirReads: devices reconnecting at once to a replica
// that does not know their users yet (a restart, a failover) must not each
// read the org's settings and their user's head: polls of one org share one
// settings read, polls of one user one head read, and the head reads of
// many users at once are bounded, so that a slow store sees a queue, not a
// stampede that times out and comes back. (Before, each poll read both:
// against a slow store, 10,000 reconnecting devices kept it overloaded.)
func TestFirstPollsShareTheirReads(t *testing.T) {
	gate := newGateStore()
	e := newTestEnv(t, envConfig{store: gate, opts: func(o *Options) { o.SettingsTTL = time.Millisecond }})
	e.enableOrg("acme")
	const users, devices = 100, 3
	for u := range users {
		e.upload("acme", fmt.Sprintf("u%d", u), gen.Dataset(gen.Options{Size: 1 << 10, Seed: int64(u)}))
	}
	e.clock.add(time.Second) // the settings cached by the uploads expire
	settingsKey := snapshot.OrgSettingsKey("acme")
	settingsGate, headGate := make(chan struct{}), make(chan struct{})
	f := func(key string) chan struct{} {
		switch {
		case key == settingsKey:
			return settingsGate
		case strings.HasSuffix(key, "/head"):
			return headGate
		}
		return nil
	}
	gate.gate.Store(&f)
	var polls []<-chan response
	for u := range users {
		for range devices {
			// Up to date (from=1): the watcher's news of version 1 wakes none.
			polls = append(polls, e.pollAsync("/v1/sync?from=1&wait=5s", userToken(t, "acme", fmt.Sprintf("u%d", u))))
		}
	}
	waitUntil(t, "every poll reached the server", func() bool { return gauge(t, e.s.metrics.inFlight) == users*devices })
	if n, _, _ := gate.stats(settingsKey); n != 1 {
		t.Errorf("%d polls of one org read its settings %d times, want once", users*devices, n)
	}
	close(settingsGate)
	waitUntil(t, "head reads wait at the store", func() bool { _, held, _ := gate.stats(""); return held >= maxPollHeadReads })
	if _, _, most := gate.stats(""); most > maxPollHeadReads {
		t.Errorf("%d head reads at once, want at most %d", most, maxPollHeadReads)
	}
	close(headGate)
	for _, p := range polls {
		if r := <-p; r.status != 200 {
			t.Fatalf("poll: %d %s", r.status, r.body)
		}
	}
	for u := range users {
		if n, _, _ := gate.stats(snapshot.HeadKey("acme", fmt.Sprintf("u%d", u))); n > 1 {
			t.Errorf("%d polls of user u%d read the head %d times, want once at most", devices, u, n)
		}
	}
}

// TestAbandonedFirstPollReadsNothing: a poll waiting for its turn to read
// its user's head (every slot taken by other users' reads) whose client
// leaves makes no read afterwards: no store work outlives its connection.
func TestAbandonedFirstPollReadsNothing(t *testing.T) {
	gate := newGateStore()
	e, addr := newTCPEnv(t, envConfig{store: gate})
	e.enableOrg("acme")
	for u := range maxPollHeadReads + 1 {
		e.upload("acme", fmt.Sprintf("u%d", u), gen.Dataset(gen.Options{Size: 1 << 10, Seed: int64(u)}))
	}
	if r := <-e.pollAsync("/v1/sync?from=0&wait=1ms", userToken(t, "acme", "u0")); r.status != 200 { // settings cached, watcher started
		t.Fatalf("first poll: %d %s", r.status, r.body)
	}
	e.s.hub.forget("acme", "u0")
	headGate := make(chan struct{})
	f := func(key string) chan struct{} {
		if strings.HasSuffix(key, "/head") {
			return headGate
		}
		return nil
	}
	gate.gate.Store(&f)
	var polls []<-chan response
	for u := range maxPollHeadReads {
		polls = append(polls, e.pollAsync("/v1/sync?from=1&wait=5s", userToken(t, "acme", fmt.Sprintf("u%d", u))))
	}
	waitUntil(t, "every slot holds a read", func() bool { _, held, _ := gate.stats(""); return held == maxPollHeadReads })
	last := fmt.Sprintf("u%d", maxPollHeadReads)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /v1/sync?from=1&wait=30s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", userToken(t, "acme", last))
	waitUntil(t, "the last poll waits for a slot", func() bool { return waiters(e.s) == maxPollHeadReads+1 })
	c.Close()
	waitUntil(t, "the server drops the abandoned poll", func() bool { return waiters(e.s) == maxPollHeadReads })
	close(headGate)
	for _, p := range polls {
		if r := <-p; r.status != 200 {
			t.Fatalf("poll: %d %s", r.status, r.body)
		}
	}
	if n, _, _ := gate.stats(snapshot.HeadKey("acme", last)); n != 0 {
		t.Errorf("the abandoned poll's head was read %d times after its client left, want 0", n)
	}
}
