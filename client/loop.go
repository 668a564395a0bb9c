package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"
)

// ErrRunning reports Start on a client whose background sync already runs.
var ErrRunning = errors.New("background sync is already running")

// loopState is the background sync loop's bookkeeping.
type loopState struct {
	mu           sync.Mutex
	running      bool
	cancel       context.CancelFunc
	done         chan struct{}
	wakeCh       chan struct{} // buffered 1: "there is work"
	cycleCancel  context.CancelFunc
	pollCancel   context.CancelFunc // set while a long poll waits for news
	fgCancel     context.CancelFunc // cancels an app-requested Pull/Push/Sync
	disconnected bool               // NotifyConnectivity(false)
	patchOpsCap  int                // after a bare 413: most edits per patch
	patchByteCap int64              // after a bare 413: most bytes per patch
}

// Start runs push-then-pull in the background until ctx ends or Stop:
//
//   - after a successful sync it long-polls the server (Options.
//     LongPollSeconds) for a new version, and pulls it when it comes;
//   - an edit, SetOfflineMode(false), NotifyConnectivity(true) or
//     SetServer wakes it at once (an edit ends a long poll early, so the
//     edit is pushed without waiting);
//   - a failure is retried after an exponential backoff with jitter
//     (Options.RetryMinMillis doubling up to RetryMaxMillis), which any
//     wake cuts short; an auth or policy error waits for a wake or the
//     longest backoff;
//   - offline mode, or NotifyConnectivity(false), stops all network use at
//     once (a running request is cancelled; a download resumes later).
//
// The app reads and writes the whole time; Status and OnStatus follow it.
func (c *Client) Start(ctx context.Context) error {
	l := &c.loop
	l.mu.Lock()
	if l.running {
		l.mu.Unlock()
		return ErrRunning
	}
	ctx, cancel := context.WithCancel(ctx)
	l.running, l.cancel, l.done = true, cancel, make(chan struct{})
	l.wakeCh = make(chan struct{}, 1)
	wake, done := l.wakeCh, l.done
	l.mu.Unlock()
	go c.runLoop(ctx, wake, done)
	return nil
}

// Stop ends the background sync and waits for it to finish. A sync in
// progress is cancelled: a download resumes, a patch in flight is resent
// under its id, at the next sync.
func (c *Client) Stop() {
	l := &c.loop
	l.mu.Lock()
	if !l.running {
		l.mu.Unlock()
		return
	}
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	cancel()
	<-done
	l.mu.Lock()
	l.running, l.cancel, l.done, l.wakeCh = false, nil, nil, nil
	l.mu.Unlock()
}

// NotifyConnectivity tells the client whether the device has a network
// connection (from the platform's reachability API). Without one the
// client makes no requests and reports offline/no_connection; when it
// comes back the background loop syncs at once.
func (c *Client) NotifyConnectivity(online bool) {
	c.loop.mu.Lock()
	c.loop.disconnected = !online
	c.loop.mu.Unlock()
	if !online {
		c.setState(StateOffline, ReasonNoConnection, "no network connection")
	}
	c.kickLoop()
}

// kickLoop wakes the loop; if the network is now off limits it also
// cancels what the loop is doing.
func (c *Client) kickLoop() {
	off := c.OfflineMode()
	l := &c.loop
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.wakeCh != nil {
		select {
		case l.wakeCh <- struct{}{}:
		default:
		}
	}
	if l.pollCancel != nil {
		l.pollCancel()
	}
	if off || l.disconnected {
		if l.cycleCancel != nil {
			l.cycleCancel()
		}
		if l.fgCancel != nil {
			l.fgCancel()
		}
	}
}

// dataArrived ends the wake-cancellability of a long poll: once a delta
// pack streams in, an edit must not abort the download.
func (c *Client) dataArrived() {
	c.loop.mu.Lock()
	c.loop.pollCancel = nil
	c.loop.mu.Unlock()
}

func (c *Client) networkAllowed() bool {
	if c.OfflineMode() {
		return false
	}
	c.loop.mu.Lock()
	defer c.loop.mu.Unlock()
	return !c.loop.disconnected
}

// runLoop is the background sync (Start). Each turn waits for the network
// if there is none, plans a cycle (a sync, or a long poll when there is
// nothing to push), runs it, and reports it, or reports the failure and
// waits out a backoff.
func (c *Client) runLoop(ctx context.Context, wake chan struct{}, done chan struct{}) {
	defer close(done)
	failures := 0 // in a row
	fresh := true // the next cycle follows a wake or a failure: report syncing
	for ctx.Err() == nil {
		if !c.networkAllowed() {
			if !c.waitForNetwork(ctx, wake) {
				return
			}
			fresh = true
			continue
		}
		cy := c.planCycle(fresh)
		err := c.runCycle(ctx, wake, cy)
		switch {
		case ctx.Err() != nil:
			return
		case interrupted(err):
			// Woken out of a long poll, or the network was switched off.
			fresh = true
		case err == nil:
			failures, fresh = 0, false
			c.reportCycle(cy)
		default:
			failures, fresh = failures+1, true
			if !c.retryAfter(ctx, wake, err, failures) {
				return
			}
		}
	}
}

// cycle is what one turn of the loop does.
type cycle struct {
	blocked bool // a rebase is needed: pull only
	wait    int  // long-poll seconds; 0 for a plain sync
	res     SyncResult
}

// waitForNetwork reports offline/no_connection (offline mode reports
// itself) and waits for a wake. It returns false if ctx ended first.
func (c *Client) waitForNetwork(ctx context.Context, wake chan struct{}) bool {
	if !c.OfflineMode() {
		c.setState(StateOffline, ReasonNoConnection, "no network connection")
	}
	select {
	case <-ctx.Done():
		return false
	case <-wake:
		return true
	}
}

// planCycle chooses the next cycle: a plain sync after a wake or a
// failure (fresh) or while edits wait to be pushed, otherwise a long poll
// for the next version.
func (c *Client) planCycle(fresh bool) *cycle {
	cy := &cycle{blocked: c.RebaseNeeded()}
	if !fresh && (cy.blocked || c.Status().PendingEdits == 0) {
		cy.wait = c.opts.LongPollSeconds
	}
	return cy
}

// runCycle runs one push-then-pull under the network lock. kickLoop can
// cancel it while it runs (the cycle's cancel), and a long poll's wait for
// news (the poll's cancel, until data arrives: dataArrived).
func (c *Client) runCycle(ctx context.Context, wake chan struct{}, cy *cycle) error {
	cycleCtx, cycleCancel := context.WithCancel(ctx)
	pollCtx, pollCancel := cycleCtx, context.CancelFunc(func() {})
	if cy.wait > 0 {
		pollCtx, pollCancel = context.WithCancel(cycleCtx)
	}
	c.loop.mu.Lock()
	c.loop.cycleCancel = cycleCancel
	if cy.wait > 0 {
		c.loop.pollCancel = pollCancel
	}
	c.loop.mu.Unlock()
	// A wake that came before this point is for work this cycle does.
	select {
	case <-wake:
	default:
	}

	c.netMu.Lock()
	err := context.Canceled
	if c.networkAllowed() {
		err = c.syncLocked(pollCtx, !cy.blocked, true, cy.wait, &cy.res)
	}
	c.netMu.Unlock()

	c.loop.mu.Lock()
	c.loop.cycleCancel, c.loop.pollCancel = nil, nil
	c.loop.mu.Unlock()
	pollCancel()
	cycleCancel()
	return err
}

// interrupted reports a cycle cancelled before its end: by a wake during
// a long poll, or by the network being switched off.
func interrupted(err error) bool {
	return err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}

// reportCycle reports a cycle that succeeded. A quiet long poll (no new
// version) only notes that the client is still in touch.
func (c *Client) reportCycle(cy *cycle) {
	switch {
	case cy.blocked:
		c.reportOutcome(ErrRebaseNeeded, 0)
	case cy.wait == 0 || !cy.res.UpToDate:
		c.reportOutcome(nil, 0)
	default:
		c.touchSynced()
	}
}

// retryAfter reports failure number failures and waits out its backoff,
// which a wake cuts short. It returns false if ctx ended first.
func (c *Client) retryAfter(ctx context.Context, wake chan struct{}, err error, failures int) bool {
	c.reportOutcome(err, failures)
	delay := c.backoff(failures)
	if !temporary(err) {
		// Someone must act (new token, org settings): no point in
		// asking often.
		delay = time.Duration(c.opts.RetryMaxMillis) * time.Millisecond
	}
	c.setRetry(c.statusNow().Add(delay))
	timer := time.NewTimer(delay)
	select {
	case <-ctx.Done():
		timer.Stop()
		c.setRetry(time.Time{})
		return false
	case <-timer.C:
	case <-wake:
		timer.Stop()
	}
	return true
}

// backoff is the delay before retry number failures: exponential from
// RetryMinMillis, capped at RetryMaxMillis, with jitter in [d/2, d) so that
// many devices failing together do not retry together.
func (c *Client) backoff(failures int) time.Duration {
	lo := time.Duration(c.opts.RetryMinMillis) * time.Millisecond
	hi := time.Duration(c.opts.RetryMaxMillis) * time.Millisecond
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if half := d / 2; half > 0 {
		d = half + rand.N(half)
	}
	return d
}
