package deadline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// clock is the budget of one call. It runs only while the call waits on
// the store, and when the budget is spent it cancels the call's context
// with errExpired as the cause.
type clock struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	op, key string
	s       *Store

	mu      sync.Mutex
	left    time.Duration // budget left, as of since (if running)
	granted time.Duration // the whole budget, for the error
	running bool
	since   time.Time
	timer   *time.Timer
}

// errExpired is the cause of a call's context whose budget ran out.
var errExpired = errors.New("deadline: store call out of time")

// start starts the clock of a call with budget.
func (s *Store) start(parent context.Context, op, key string, budget time.Duration) *clock {
	ctx, cancel := context.WithCancelCause(parent)
	c := &clock{ctx: ctx, cancel: cancel, op: op, key: key, s: s,
		left: budget, granted: budget, running: true, since: time.Now()}
	c.timer = time.AfterFunc(budget, func() { c.cancel(errExpired) })
	return c
}

// pause stops the clock (the caller's code runs).
func (c *clock) pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return
	}
	c.running = false
	c.left -= time.Since(c.since)
	c.timer.Stop()
}

// resume starts the clock again (the store is asked).
func (c *clock) resume() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return
	}
	c.running, c.since = true, time.Now()
	c.timer.Reset(max(c.left, 0))
}

// grant adds d to the budget of a paused clock.
func (c *clock) grant(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left += d
	c.granted += d
}

// refill sets the budget left to d and runs the clock: a List's store
// gets d for each object it delivers.
func (c *clock) refill(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left, c.since, c.running = d, time.Now(), true
	c.timer.Reset(d)
}

// stop ends the call: the clock stops and its context is released.
func (c *clock) stop() {
	c.timer.Stop()
	c.cancel(nil)
}

// expired reports whether the budget ran out.
func (c *clock) expired() bool { return context.Cause(c.ctx) == errExpired }

// fail returns err, or, if the budget ran out, an error matching
// snapshot.ErrUnavailable that names the call. (The store's own error then
// is only the echo of the cancelled context.)
func (c *clock) fail(err error) error {
	if err == nil || !c.expired() {
		return err
	}
	if c.s.opts.OnTimeout != nil {
		c.s.opts.OnTimeout(c.op)
	}
	c.mu.Lock()
	granted := c.granted
	c.mu.Unlock()
	return &snapshot.ObjectError{Op: c.op, Key: c.key,
		Err: fmt.Errorf("no answer from the store within %v: %w", granted.Round(time.Millisecond), snapshot.ErrUnavailable)}
}
