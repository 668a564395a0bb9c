package server

import (
	"context"
	"sync"
)

// sharedReads runs one read per key for all the requests that want it at
// the same time (the head of a user whose devices reconnect together), and
// cancels it when every one of them has left (its client gone, its wait
// over): no store work outlives the requests it is for.
type sharedReads struct {
	mu    sync.Mutex
	calls map[string]*sharedCall
}

// sharedCall is one read in flight; v and err are set when done closes.
type sharedCall struct {
	done    chan struct{}
	v       uint64
	err     error
	callers int
	cancel  context.CancelFunc
}

// join returns the read of key, starting read under parent if none runs
// and known (asked under the lock that a finishing read is removed under,
// so a read that has just told the caches is never repeated) has no
// answer. The caller must leave it.
func (g *sharedReads) join(parent context.Context, key string, known func() (uint64, bool),
	read func(context.Context) (uint64, error)) *sharedCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.calls[key]; c != nil {
		c.callers++
		return c
	}
	if known != nil {
		if v, ok := known(); ok {
			c := &sharedCall{done: make(chan struct{}), v: v, callers: 1, cancel: func() {}}
			close(c.done)
			return c
		}
	}
	if g.calls == nil {
		g.calls = map[string]*sharedCall{}
	}
	ctx, cancel := context.WithCancel(parent)
	c := &sharedCall{done: make(chan struct{}), callers: 1, cancel: cancel}
	g.calls[key] = c
	go func() {
		v, err := read(ctx)
		g.mu.Lock()
		if g.calls[key] == c {
			delete(g.calls, key)
		}
		g.mu.Unlock()
		c.v, c.err = v, err
		close(c.done)
		cancel()
	}()
	return c
}

// leave drops a caller of c; the last to leave cancels the read.
func (g *sharedReads) leave(key string, c *sharedCall) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.callers--; c.callers > 0 {
		return
	}
	c.cancel()
	if g.calls[key] == c {
		delete(g.calls, key) // a new caller starts a new read
	}
}
