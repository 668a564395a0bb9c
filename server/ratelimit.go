package server

import (
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// userLimiter limits requests per user with a token bucket each (limit per
// second, burst). It protects the store from one runaway client; each replica
// counts on its own, so the effective limit behind a load balancer is per
// replica.
type userLimiter struct {
	mu      sync.Mutex
	limit   rate.Limit
	burst   int
	buckets map[string]*rate.Limiter
}

const maxLimitedUsers = 100_000

func newUserLimiter(perSecond float64, burst int) *userLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &userLimiter{limit: rate.Limit(perSecond), burst: max(burst, 1), buckets: map[string]*rate.Limiter{}}
}

// allow reports whether a request of user may go ahead now, and if not,
// how long until it may.
func (l *userLimiter) allow(user string) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	b, ok := l.buckets[user]
	if !ok {
		if len(l.buckets) >= maxLimitedUsers {
			l.buckets = map[string]*rate.Limiter{} // idle buckets are full anyway
		}
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[user] = b
	}
	l.mu.Unlock()
	r := b.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return false, d
	}
	return true, 0
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(d/time.Second) + 1)
}
