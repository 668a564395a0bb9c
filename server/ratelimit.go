package server

import (
	"fmt"
	"github.com/valyala/fasthttp"
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

// maxPacksPerUser bounds the delta packs being sent to one user's devices
// at once, on one replica. A pack being sent holds about 7 MiB (its zstd
// encoder, the window verified before the answer, buffers) until the
// client has read it or WriteTimeout (30 minutes) closes its connection,
// so without a bound one token could open a thousand downloads, read none,
// and hold 7 GB. A device downloads one pack at a time; a user's devices
// rarely all at once.
const maxPacksPerUser = 8

// maxDecodersPerUser bounds the compressed uploads of one user decoding
// at once on one replica (blobs go one at a time from a device): without
// it one token could hold all of --max-decode-memory with uploads it
// trickles, and every other user's compressed uploads would wait.
const maxDecodersPerUser = 2

// maxPatchesPerUser bounds the patches of one user being applied at once
// on one replica. A patch's replay holds what the records it touches cost
// to merge (a merge on a 16 MiB record allocates hundreds of MB), and the
// patches of one data set race for its next version anyway: without a
// bound one token could send a hundred at once and exhaust the server's
// memory. A device sends one patch at a time; a user's devices rarely all
// at once to one replica.
const maxPatchesPerUser = 4

// userSlots counts what is under way per user (packs being sent,
// uploads decoding), up to max each.
type userSlots struct {
	max     int
	mu      sync.Mutex
	running map[string]int
}

// take claims a slot for user, false if the user has max already; a
// claimed slot must be given back (put).
func (p *userSlots) take(user string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[user] >= p.max {
		return false
	}
	if p.running == nil {
		p.running = map[string]int{}
	}
	p.running[user]++
	return true
}

// claim takes a slot for req's user, or answers 429 with Retry-After
// (retryAfter seconds) naming what (plural) is under way; release gives the
// slot back, once however often it is called.
func (p *userSlots) claim(ctx *fasthttp.RequestCtx, req *request, retryAfter int, what string) (release func(), err error) {
	user := req.Org + "/" + req.User
	if !p.take(user) {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(retryAfter))
		return nil, rateLimited(fmt.Sprintf("%d %s of this data set are under way already; retry when one is done", p.max, what))
	}
	var once sync.Once
	return func() { once.Do(func() { p.put(user) }) }, nil
}

func (p *userSlots) put(user string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[user]--; p.running[user] <= 0 {
		delete(p.running, user)
	}
}
