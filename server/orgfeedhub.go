package server

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Per-org change feed long polls wait here, in memory, like devices' long
// polls in the change hub: a waiting reader costs the store nothing.
//
// A reader reads the feed only when it may hold a new entry of its org
// that the reader can see. Readers see an entry Settle after the time in
// its name (diff.FeedOptions.Settle), so news of an entry dated ms wakes
// the org's readers at ms+Settle, not at once. The news comes from the
// replica's own commits (committed: dated now, which is no earlier than
// the entry), from the feed watcher's listings (every entry it lists,
// dated by its name; watcher.go) and from the notifier. News is kept per
// org until it is due whether or not anyone waits yet, so a reader whose
// read held back an entry too young to see is woken when it can see it.
//
// A reader takes the org's wake channel before each read of the feed; the
// channel closes (waking every reader that took it) when news falls due.
// News whose due time is already past closes it at once.

// orgFeedGrain coalesces due times: an org keeps at most Settle/grain of
// them, and a reader wakes at most a grain after an entry became visible.
const orgFeedGrain = 50 * time.Millisecond

// orgFeeds is a replica's hub of per-org feed long polls. It is safe for
// concurrent use.
type orgFeeds struct {
	settle time.Duration
	now    func() time.Time
	gauge  prometheus.Gauge

	mu   sync.Mutex
	orgs map[string]*orgFeedState
	gen  uint64 // wake generations, across orgs: 0 is none
}

// orgFeedState is one org's readers and pending news.
type orgFeedState struct {
	waiters int
	wake    chan struct{} // closed when news falls due, then replaced
	gen     uint64        // the generation of wake
	// reads are the reads of the feed made in this generation, by cursor
	// and limit (orgFeedRead): a reader that takes the generation later
	// would read the same, since no news fell due in between.
	reads map[string]orgFeedResult
	due   []time.Time // when pending news becomes visible, ascending
	timer *time.Timer // armed for due[0]
}

func newOrgFeeds(settle time.Duration, reg prometheus.Registerer) *orgFeeds {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "deltasync_org_feed_waiters",
		Help: "Per-org change feed long polls waiting on this replica.",
	})
	reg.MustRegister(g)
	return &orgFeeds{settle: settle, now: time.Now, gauge: g, orgs: map[string]*orgFeedState{}}
}

// stateLocked returns org's state, created if needed.
func (f *orgFeeds) stateLocked(org string) *orgFeedState {
	st := f.orgs[org]
	if st == nil {
		f.gen++
		st = &orgFeedState{wake: make(chan struct{}), gen: f.gen}
		f.orgs[org] = st
	}
	return st
}

// join registers a waiting reader of org; leave must follow.
func (f *orgFeeds) join(org string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stateLocked(org).waiters++
	f.gauge.Inc()
}

// leave unregisters a reader of org.
func (f *orgFeeds) leave(org string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.orgs[org]
	if st == nil {
		return
	}
	st.waiters--
	f.gauge.Dec()
	f.dropIdleLocked(org, st)
}

// dropIdleLocked forgets an org nobody waits for and with no news pending.
func (f *orgFeeds) dropIdleLocked(org string, st *orgFeedState) {
	if st.waiters == 0 && len(st.due) == 0 {
		delete(f.orgs, org)
	}
}

// wakeChan returns the channel that closes when news of org falls due
// after this call, and its generation (never 0; reads started in one
// generation may be shared, orgFeedRead). Take it before reading the feed.
func (f *orgFeeds) wakeChan(org string) (<-chan struct{}, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stateLocked(org)
	return st.wake, st.gen
}

// waiting returns how many readers of org wait (for tests and metrics).
func (f *orgFeeds) waiting(org string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.orgs[org]; st != nil {
		return st.waiters
	}
	return 0
}

// news records an entry of org dated ms (unix milliseconds, the writer's
// clock): its readers wake once it is Settle old.
func (f *orgFeeds) news(org string, ms int64) {
	at := time.UnixMilli(ms).Add(f.settle).Truncate(orgFeedGrain).Add(orgFeedGrain)
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stateLocked(org)
	if !at.After(f.now()) {
		f.fireLocked(st)
		f.dropIdleLocked(org, st)
		return
	}
	i := 0
	for i < len(st.due) && st.due[i].Before(at) {
		i++
	}
	if i < len(st.due) && st.due[i].Equal(at) {
		return // coalesced with news due at the same time
	}
	st.due = slices.Insert(st.due, i, at)
	if i == 0 {
		f.armLocked(org, st)
	}
}

// fireLocked wakes every reader that took the current wake channel.
func (f *orgFeeds) fireLocked(st *orgFeedState) {
	close(st.wake)
	f.gen++
	st.wake, st.gen, st.reads = make(chan struct{}), f.gen, nil
}

// maxSharedOrgReads bounds the reads an org keeps for one generation.
const maxSharedOrgReads = 64

// sharedRead returns the read of org's feed at key made in generation gen,
// if there is one.
func (f *orgFeeds) sharedRead(org string, gen uint64, key string) (orgFeedResult, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.orgs[org]
	if st == nil || st.gen != gen {
		return orgFeedResult{}, false
	}
	r, ok := st.reads[key]
	return r, ok
}

// share keeps a read of org's feed at key made in generation gen, while
// that generation lasts.
func (f *orgFeeds) share(org string, gen uint64, key string, r orgFeedResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.orgs[org]
	if st == nil || st.gen != gen || len(st.reads) >= maxSharedOrgReads {
		return
	}
	if st.reads == nil {
		st.reads = map[string]orgFeedResult{}
	}
	st.reads[key] = r
}

// armLocked sets st's timer for its earliest due news.
func (f *orgFeeds) armLocked(org string, st *orgFeedState) {
	if st.timer != nil {
		st.timer.Stop()
	}
	st.timer = time.AfterFunc(st.due[0].Sub(f.now()), func() { f.due(org, st) })
}

// due is st's timer: news that has fallen due wakes the readers, and the
// timer is set for the next.
func (f *orgFeeds) due(org string, st *orgFeedState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.orgs[org] != st {
		return // forgotten meanwhile
	}
	now := f.now()
	n := 0
	for n < len(st.due) && !st.due[n].After(now) {
		n++
	}
	if n > 0 {
		st.due = st.due[n:]
		f.fireLocked(st)
	}
	if len(st.due) > 0 {
		f.armLocked(org, st)
		return
	}
	st.timer = nil
	f.dropIdleLocked(org, st)
}

// wait blocks until wake closes (true), or until passes, ctx ends or stop
// closes (false).
func waitOrgFeed(ctx context.Context, wake <-chan struct{}, until time.Time, stop <-chan struct{}) bool {
	d := time.Until(until)
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wake:
		return true
	case <-t.C:
	case <-ctx.Done():
	case <-stop:
	}
	return false
}
