package server

import (
	"context"
	"log/slog"
	"time"
)

// Notifier carries the news of committed versions between replicas through
// a notification system an operator already runs (redisnotify: Redis
// pub/sub). It is optional: without one, the feed watcher alone learns of
// versions committed elsewhere, one listing per interval. With one, a
// commit reaches the other replicas' long polls in milliseconds, and the
// watcher can list less often (it stays on: batch builds and replicas
// without the notifier announce nothing, and a message can be lost).
//
// A note is a hint, never trusted: the replica that receives it reads the
// version's manifest before it wakes anyone, as for a feed entry.
type Notifier interface {
	// Publish announces version v of org/user, committed by this replica.
	Publish(ctx context.Context, org, user string, v uint64) error
	// Subscribe calls fn for every announcement (this replica's own
	// included) until ctx ends or the subscription fails; it returns the
	// error that ended it.
	Subscribe(ctx context.Context, fn func(org, user string, v uint64)) error
}

// notifyPublishTimeout bounds the announcement of a commit: it runs after
// the answer, and a lost one only costs the watcher's delay.
const notifyPublishTimeout = 2 * time.Second

// patched notes the outcome of a patch replayed here: a version it
// created is committed; a stored answer or a patch that changed nothing
// only tells the caches the head it saw (it announces nothing).
func (s *Server) patched(org, user string, created bool, v uint64) {
	if created {
		s.committed(org, user, v)
		return
	}
	s.noteHead(org, user, v)
}

// committed is told of every version committed through this replica: the
// caches learn it, the user's long polls here wake, and the notifier (if
// any) tells the other replicas.
func (s *Server) committed(org, user string, v uint64) {
	s.noteHead(org, user, v)
	s.orgFeeds.news(org, time.Now().UnixMilli()) // its entry is no younger
	if s.opts.Notifier == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(s.baseCtx, notifyPublishTimeout)
		defer cancel()
		if err := s.opts.Notifier.Publish(ctx, org, user, v); err != nil {
			s.hub.m.notifyErrors.WithLabelValues("publish").Inc()
			s.log.Debug("notifier: publish failed; the watcher will carry the news", "org", org, "user", user, "version", v, "err", err)
		}
	}()
}

// subscribe listens to the notifier until stop closes, subscribing again
// after a failure (1 s doubling to 30 s).
func (s *Server) subscribe(ctx context.Context, stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	delay := time.Second
	for ctx.Err() == nil {
		start := time.Now()
		err := s.opts.Notifier.Subscribe(ctx, func(org, user string, v uint64) {
			s.watcher.notified(userKey{org, user}, v)
			s.orgFeeds.news(org, time.Now().UnixMilli())
		})
		if ctx.Err() != nil {
			return
		}
		s.hub.m.notifyErrors.WithLabelValues("subscribe").Inc()
		s.log.Warn("notifier: subscription ended; subscribing again (the watcher carries the news meanwhile)", slog.Any("error", err))
		if time.Since(start) > time.Minute {
			delay = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}
