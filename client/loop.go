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

func (c *Client) runLoop(ctx context.Context, wake chan struct{}, done chan struct{}) {
	defer close(done)
	failures := 0 // in a row
	fresh := true // the next cycle follows a wake or a failure: report syncing
	for ctx.Err() == nil {
		if !c.networkAllowed() {
			if !c.OfflineMode() {
				c.setState(StateOffline, ReasonNoConnection, "no network connection")
			}
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			fresh = true
			continue
		}
		blocked := c.RebaseNeeded()
		wait := 0
		if !fresh && (blocked || c.Status().PendingEdits == 0) {
			wait = c.opts.LongPollSeconds
		}
		cycleCtx, cycleCancel := context.WithCancel(ctx)
		pollCtx, pollCancel := cycleCtx, context.CancelFunc(func() {})
		if wait > 0 {
			pollCtx, pollCancel = context.WithCancel(cycleCtx)
		}
		c.loop.mu.Lock()
		c.loop.cycleCancel = cycleCancel
		if wait > 0 {
			c.loop.pollCancel = pollCancel
		}
		c.loop.mu.Unlock()
		// A wake that came before this point is for work this cycle does.
		select {
		case <-wake:
		default:
		}

		res := &SyncResult{}
		c.netMu.Lock()
		var err error
		if c.networkAllowed() {
			err = c.syncLocked(pollCtx, !blocked, true, wait, res)
		} else {
			err = context.Canceled
		}
		c.netMu.Unlock()

		c.loop.mu.Lock()
		c.loop.cycleCancel, c.loop.pollCancel = nil, nil
		c.loop.mu.Unlock()
		pollCancel()
		cycleCancel()

		switch {
		case ctx.Err() != nil:
			return
		case err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
			// Woken out of a long poll, or the network was switched off.
			fresh = true
			continue
		case err == nil:
			failures = 0
			if blocked {
				c.reportOutcome(ErrRebaseNeeded, 0)
			} else if wait == 0 || !res.UpToDate {
				c.reportOutcome(nil, 0)
			} else {
				c.touchSynced() // a quiet long poll: still in touch
			}
			fresh = false
			continue
		}
		failures++
		c.reportOutcome(err, failures)
		fresh = true
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
			return
		case <-timer.C:
		case <-wake:
			timer.Stop()
		}
	}
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
