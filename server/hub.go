package server

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The change hub: long polls wait here, not on the store.
//
// Each replica keeps, for every user with a long poll waiting (and for a
// while after the last one left), the newest version it knows exists and
// the polls waiting for a newer one. A version committed through this
// replica wakes them at once (publish); versions committed elsewhere (other
// replicas, batch builds) are learned by the feed watcher (watcher.go),
// which checks each one exists before it publishes. A poll whose version
// equals the known head therefore waits without asking the store anything,
// and the store's cost of idle devices is the watcher's: one listing per
// interval per replica, whatever the number of devices.
//
// The known head of a user is first read from the store (observe), after
// the poll registered: a version committed between the read and the
// registration cannot be missed. It is trusted from then on because the
// watcher covers every version committed after the read. When nobody has
// waited for a user for Options.HubIdleGrace the user is forgotten, so
// memory follows the connected devices.

// userKey names one user's data set.
type userKey struct{ org, user string }

// hub is the change hub of one replica. It is safe for concurrent use.
type hub struct {
	mu    sync.Mutex
	users map[userKey]*hubUser
	grace time.Duration
	now   func() time.Time
	m     *hubMetrics
	// onKnown, if set, is told (outside the lock) each time a user's head
	// was read from the store, for the watcher to check the versions it
	// listed for that user before anyone here cared.
	onKnown func(k userKey, head uint64)
}

// hubUser is what the hub knows about one user.
type hubUser struct {
	head    uint64 // the newest version known to exist
	known   bool   // head was read from the store (or is a lower bound only)
	waiters map[*waiter]struct{}
	idle    time.Time // when the last waiter left
}

// waiter is one long poll.
type waiter struct {
	key  userKey
	from uint64
	ch   chan uint64 // receives the version that woke it (buffered)
}

func newHub(grace time.Duration, reg prometheus.Registerer) *hub {
	return &hub{users: map[userKey]*hubUser{}, grace: grace, now: time.Now, m: newHubMetrics(reg)}
}

// register adds a long poll for versions after from. It returns the known
// head (ok false if the user's head has not been read from the store yet).
func (h *hub) register(org, user string, from uint64) (w *waiter, head uint64, ok bool) {
	k := userKey{org, user}
	w = &waiter{key: k, from: from, ch: make(chan uint64, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[k]
	if u == nil {
		u = &hubUser{waiters: map[*waiter]struct{}{}}
		h.users[k] = u
		h.m.users.Set(float64(len(h.users)))
	}
	u.waiters[w] = struct{}{}
	h.m.waiters.Inc()
	return w, u.head, u.known
}

// unregister removes a long poll (woken or not).
func (h *hub) unregister(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[w.key]
	if u == nil {
		return
	}
	if _, ok := u.waiters[w]; ok {
		delete(u.waiters, w)
		h.m.waiters.Dec()
	}
	if len(u.waiters) == 0 {
		u.idle = h.now()
	}
}

// observe records a head just read from the store: the truth as of now.
func (h *hub) observe(org, user string, v uint64) {
	k := userKey{org, user}
	h.mu.Lock()
	u := h.users[k]
	if u == nil {
		h.mu.Unlock()
		return
	}
	u.known = true
	if v > u.head {
		u.head = v
		h.wakeLocked(u, v, "store")
	}
	head := u.head
	h.mu.Unlock()
	if h.onKnown != nil {
		h.onKnown(k, head)
	}
}

// publish records a version known to exist (committed through this
// replica, or checked by the watcher) and wakes the polls it is news to.
// Users nobody here waits for are not recorded.
func (h *hub) publish(org, user string, v uint64, source string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[userKey{org, user}]
	if u == nil || v <= u.head {
		return
	}
	u.head = v
	h.wakeLocked(u, v, source)
}

// wakeLocked wakes the waiters of u that are behind v.
func (h *hub) wakeLocked(u *hubUser, v uint64, source string) {
	for w := range u.waiters {
		if w.from >= v {
			continue
		}
		w.ch <- v // buffered, and each waiter is woken once: never blocks
		delete(u.waiters, w)
		h.m.waiters.Dec()
		h.m.wakeups.WithLabelValues(source).Inc()
	}
	if len(u.waiters) == 0 {
		u.idle = h.now()
	}
}

// wants reports whether a version v of k is news to this replica: someone
// waits for the user here (or did lately) and v is past the known head.
func (h *hub) wants(k userKey, v uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[k]
	return u != nil && (!u.known || v > u.head)
}

// knownHead returns the user's head if it was read from the store.
func (h *hub) knownHead(org, user string) (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u := h.users[userKey{org, user}]; u != nil && u.known {
		return u.head, true
	}
	return 0, false
}

// forget makes the user's head unknown again (the store disagreed with it).
func (h *hub) forget(org, user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if u := h.users[userKey{org, user}]; u != nil {
		u.known, u.head = false, 0
	}
}

// sweep forgets the users nobody has waited for since the grace period.
func (h *hub) sweep() {
	h.mu.Lock()
	defer h.mu.Unlock()
	cut := h.now().Add(-h.grace)
	for k, u := range h.users {
		if len(u.waiters) == 0 && u.idle.Before(cut) {
			delete(h.users, k)
		}
	}
	h.m.users.Set(float64(len(h.users)))
}

// counts returns the users the hub knows and the polls waiting.
func (h *hub) counts() (users, waiters int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, u := range h.users {
		waiters += len(u.waiters)
	}
	return len(h.users), waiters
}

// hubMetrics are the hub's and the watcher's metrics.
type hubMetrics struct {
	waiters      prometheus.Gauge
	users        prometheus.Gauge
	wakeups      *prometheus.CounterVec // source
	feedEntries  prometheus.Counter
	watchErrors  prometheus.Counter
	watchLag     prometheus.Gauge
	notifyErrors *prometheus.CounterVec // op
}

func newHubMetrics(reg prometheus.Registerer) *hubMetrics {
	m := &hubMetrics{
		waiters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "deltasync_hub_waiters",
			Help: "Long polls waiting for a new version on this replica.",
		}),
		users: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "deltasync_hub_users",
			Help: "Users whose newest version this replica keeps track of (they have, or lately had, a long poll here).",
		}),
		wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_hub_wakeups_total",
			Help: "Long polls woken by a new version, by how it was learned: local (committed through this replica), feed (the change-feed watcher), notify (the notification plug-in), store (a head read).",
		}, []string{"source"}),
		feedEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_watcher_feed_entries_total",
			Help: "New change-feed entries the watcher listed.",
		}),
		watchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_watcher_errors_total",
			Help: "Watcher rounds that failed (the next round lists from where the last good one did).",
		}),
		watchLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "deltasync_watcher_covered_seconds",
			Help: "Unix time up to which the watcher has listed the change feed (alert when it falls behind).",
		}),
	}
	m.notifyErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "deltasync_notify_errors_total",
		Help: "Failures of the notification plug-in, by operation (publish, subscribe); the feed watcher carries the news meanwhile.",
	}, []string{"op"})
	for _, s := range []string{"local", "feed", "notify", "store"} {
		m.wakeups.WithLabelValues(s)
	}
	reg.MustRegister(m.waiters, m.users, m.wakeups, m.feedEntries, m.watchErrors, m.watchLag, m.notifyErrors)
	return m
}

// maxPollHeadReads bounds the head reads long polls make at once on a
// replica.
const maxPollHeadReads = 64
