package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/snapshot"
)

// The feed watcher: how a replica learns of versions committed elsewhere.
//
// Every version's change set is written to the change feed
// (_feed/<hour>/<ms>~<org>~<user>~<version>~<nonce>.changes) before the
// version is claimed. Once per interval the watcher lists the feed after a
// position a little behind the last round (ListAfter: one request, whatever
// the number of devices), and for each entry new to it that names a user
// someone waits for here, reads that version's manifest: if it exists, the
// hub wakes the user's polls (and the sync they make finds the manifest in
// the cache); if not yet, the writer is between writing its entry and
// claiming the version, or lost the race, or crashed: the check is repeated
// with backoff for a while, then dropped.
//
// Entries can appear out of order: a replica's clock may be a little
// behind, or its write of the entry slow. So each round lists from
// Window before the start of the last good round, not from the last key
// seen (and remembers the keys it has already handled); every
// SweepEvery it looks SweepWindow back instead, for stragglers. Listing by
// position crosses hour buckets like any other key boundary. A failed round
// changes nothing: the next lists from the last good round, so an outage of
// the store delays news but loses none.

// WatchOptions configure the feed watcher.
type WatchOptions struct {
	// Interval between listings of the change feed: the delay of a
	// cross-replica wake-up, and the watcher's store cost (one listing
	// per interval per replica while the feed is quiet).
	Interval time.Duration
	// Window is how far behind its last round each listing starts: more
	// than replicas' clocks differ plus the time a change-set write takes.
	Window time.Duration
	// SweepEvery and SweepWindow: a wider listing, now and then, for
	// entries later than Window.
	SweepEvery, SweepWindow time.Duration
}

// DefaultWatchOptions: a listing every 500 ms, 5 s behind; a sweep of the
// last 5 minutes every 30 s.
func DefaultWatchOptions() WatchOptions {
	return WatchOptions{Interval: 500 * time.Millisecond, Window: 5 * time.Second,
		SweepEvery: 30 * time.Second, SweepWindow: 5 * time.Minute}
}

func (o WatchOptions) validate() error {
	if o.Interval <= 0 || o.Window <= 0 || o.SweepEvery <= 0 || o.SweepWindow < o.Window {
		return fmt.Errorf("server: watch interval (%v), window (%v) and sweep period (%v) must be positive, the sweep window (%v) at least the window",
			o.Interval, o.Window, o.SweepEvery, o.SweepWindow)
	}
	return nil
}

// watcher lists the change feed for one replica.
type watcher struct {
	store snapshot.Lister // the watcher only lists the feed
	hub   *hub
	opts  WatchOptions
	log   *slog.Logger
	now   func() time.Time
	// check reads the manifest of a version listed in the feed (caching
	// it), reporting an error matching snapshot.ErrNotExist while it is
	// not claimed.
	check func(ctx context.Context, k userKey, v uint64) error

	mu        sync.Mutex
	covered   time.Time // start of the last good round; zero before the first
	lastSweep time.Time
	seen      map[string]int64       // feed keys handled, by their time (unix ms)
	recent    map[userKey][]feedNews // versions listed lately, for users not waited for yet
	pending   map[feedNews]*pendingCheck
	lastLog   time.Time

	// onSettings is told of an org whose settings changed.
	onSettings func(org string)
	// onEntry is told of every new entry listed (org, and its time in
	// unix ms), for the per-org feed's long polls (orgfeedhub.go).
	onEntry func(org string, ms int64)
	// kick makes the loop check the pending versions now (a notifier's
	// news), without a listing.
	kick chan struct{}

	started atomic.Bool
	rounds  atomic.Int64 // good rounds, for tests
}

// running reports whether the watcher has been started: from then on, what
// is read from the store is kept current by it.
func (w *watcher) running() bool { return w.started.Load() }

// feedNews is one version named by the feed.
type feedNews struct {
	key userKey
	v   uint64
	ms  int64
}

// pendingCheck is a version to check (again).
type pendingCheck struct {
	first, next time.Time
	delay       time.Duration
	source      string // how it was learned: feed, notify
}

func newWatcher(store snapshot.Lister, h *hub, opts WatchOptions, log *slog.Logger,
	check func(context.Context, userKey, uint64) error) *watcher {
	w := &watcher{store: store, hub: h, opts: opts, log: log, now: time.Now, check: check, kick: make(chan struct{}, 1),
		seen: map[string]int64{}, recent: map[userKey][]feedNews{}, pending: map[feedNews]*pendingCheck{}}
	h.onKnown = w.known
	return w
}

// run lists the feed every interval until stop closes, and forgets idle
// users of the hub now and then.
func (w *watcher) run(ctx context.Context, stop <-chan struct{}) {
	w.started.Store(true)
	tick := time.NewTicker(w.opts.Interval)
	defer tick.Stop()
	lastHubSweep := w.now()
	w.round(ctx)
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-w.kick:
			w.checkPending(ctx)
		case <-tick.C:
			w.round(ctx)
			if now := w.now(); now.Sub(lastHubSweep) >= w.hub.grace/4 {
				w.hub.sweep()
				lastHubSweep = now
			}
		}
	}
}

// notified is told of a version by the notifier: if someone here waits
// for it, it is checked at once.
func (w *watcher) notified(k userKey, v uint64) {
	if !w.hub.wants(k, v) {
		return
	}
	w.mu.Lock()
	w.addPendingLocked(feedNews{key: k, v: v}, w.now(), "notify")
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// round is one listing of the feed and the checks of what it found.
func (w *watcher) round(ctx context.Context) {
	start := w.now()
	after := w.position(start)
	var keys []string
	err := w.store.ListAfter(ctx, snapshot.FeedPrefix, after, func(oi snapshot.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	})
	if err != nil {
		w.failed(err) // what it listed is listed again by the next round
		return
	}
	w.mu.Lock()
	w.covered = start
	news := w.noteLocked(keys)
	for _, n := range news {
		if n.key.user == snapshot.FeedSettingsUser {
			if w.onSettings != nil {
				w.onSettings(n.key.org)
			}
			continue
		}
		if w.onEntry != nil && n.v > 0 {
			w.onEntry(n.key.org, n.ms)
		}
		w.recent[n.key] = append(w.recent[n.key], n)
		if w.hub.wants(n.key, n.v) {
			w.addPendingLocked(n, start, "feed")
		}
	}
	w.pruneLocked()
	w.mu.Unlock()
	w.hub.m.feedEntries.Add(float64(len(news)))
	w.hub.m.watchLag.Set(float64(start.UnixMilli()) / 1000)
	w.checkPending(ctx)
	w.rounds.Add(1)
}

// position is where the round starting at now lists from: Window (or, when
// a sweep is due, SweepWindow) before the start of the last good round.
func (w *watcher) position(now time.Time) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	base := w.covered
	if base.IsZero() {
		base = now
	}
	back := w.opts.Window
	if now.Sub(w.lastSweep) >= w.opts.SweepEvery {
		back = w.opts.SweepWindow
		w.lastSweep = now
	}
	return feedPosition(base.Add(-back).UnixMilli())
}

// feedPosition is the listing position before every feed entry dated ms or
// later (feed keys are "<hour>/<ms, 13 digits>~..."), across hours alike.
func feedPosition(ms int64) string {
	return fmt.Sprintf("%s%013d", snapshot.FeedHourPrefix(ms), max(ms, 0))
}

// noteLocked records the keys of a good listing and returns the versions
// named by the entries the watcher had not handled yet.
func (w *watcher) noteLocked(keys []string) []feedNews {
	var news []feedNews
	for _, key := range keys {
		k, ok := snapshot.ParseFeedKey(key)
		if !ok {
			continue
		}
		if _, dup := w.seen[key]; dup {
			continue
		}
		w.seen[key] = k.Millis
		news = append(news, feedNews{key: userKey{k.Org, k.User}, v: k.Version, ms: k.Millis})
	}
	return news
}

// known is told by the hub that a user's head was just read: versions of
// that user listed before anyone here waited for them, and newer than the
// head, may be claimed any moment now; they are checked like new ones.
func (w *watcher) known(k userKey, head uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	for _, n := range w.recent[k] {
		if n.v > head {
			w.addPendingLocked(n, now, "feed")
		}
	}
}

func (w *watcher) addPendingLocked(n feedNews, now time.Time, source string) {
	n.ms = 0 // one check per version, whichever entries name it
	if p, ok := w.pending[n]; ok {
		if now.Before(p.next) {
			p.next = now // news again: check at once
		}
		return
	}
	w.pending[n] = &pendingCheck{first: now, next: now, delay: w.opts.Interval, source: source}
}

// checkPending reads the manifests of the versions due for a check, the
// newest of each user first (if it exists, the older ones need no check),
// a few at a time.
func (w *watcher) checkPending(ctx context.Context) {
	due := w.due()
	if len(due) == 0 {
		return
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, versions := range due {
		g.Go(func() error {
			for _, n := range versions {
				if !w.hub.wants(n.key, n.v) {
					w.settle(n, nil)
					continue
				}
				err := w.check(gctx, n.key, n.v)
				if err == nil {
					w.hub.publish(n.key.org, n.key.user, n.v, w.source(n))
				}
				w.settle(n, err)
			}
			return nil
		})
	}
	_ = g.Wait()
}

// due returns the pending versions whose check is due, grouped by user,
// newest first.
func (w *watcher) due() map[userKey][]feedNews {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	out := map[userKey][]feedNews{}
	for n, p := range w.pending {
		if !p.next.After(now) {
			out[n.key] = append(out[n.key], n)
		}
	}
	for _, vs := range out {
		slices.SortFunc(vs, func(a, b feedNews) int { return compareDesc(a.v, b.v) })
	}
	return out
}

func compareDesc(a, b uint64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// source is how a pending version was learned.
func (w *watcher) source(n feedNews) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.pending[n]; p != nil {
		return p.source
	}
	return "feed"
}

// settle ends or reschedules the check of n after err.
func (w *watcher) settle(n feedNews, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.pending[n]
	if p == nil {
		return
	}
	now := w.now()
	switch {
	case err == nil:
		delete(w.pending, n)
	case errors.Is(err, snapshot.ErrNotExist) && now.Sub(p.first) > w.opts.SweepWindow:
		delete(w.pending, n) // never claimed: the writer lost or crashed
	case errors.Is(err, snapshot.ErrNotExist):
		p.next = now.Add(p.delay)
		p.delay = min(2*p.delay, 30*time.Second)
	case errors.Is(err, snapshot.ErrCorrupt):
		delete(w.pending, n) // logged where it was read; syncs report it
	default:
		p.next = now.Add(w.opts.Interval) // the store failed: next round
	}
}

// pruneLocked forgets the keys no listing can return any more (older than
// the widest window behind the last good round).
func (w *watcher) pruneLocked() {
	cut := w.covered.Add(-w.opts.SweepWindow - time.Minute).UnixMilli()
	for key, ms := range w.seen {
		if ms < cut {
			delete(w.seen, key)
		}
	}
	for k, ns := range w.recent {
		ns = slices.DeleteFunc(ns, func(n feedNews) bool { return n.ms < cut })
		if len(ns) == 0 {
			delete(w.recent, k)
		} else {
			w.recent[k] = ns
		}
	}
}

// failed counts a failed round, logging at most one a minute.
func (w *watcher) failed(err error) {
	w.hub.m.watchErrors.Inc()
	w.mu.Lock()
	now := w.now()
	quiet := now.Sub(w.lastLog) < time.Minute
	if !quiet {
		w.lastLog = now
	}
	w.mu.Unlock()
	if !quiet && !errors.Is(err, context.Canceled) {
		w.log.Warn("change-feed watcher cannot list the feed; long polls learn of versions from other replicas when it can again",
			slog.Any("error", err))
	}
}
