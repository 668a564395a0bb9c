package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/wire"
)

// device is one simulated phone.
type device struct {
	user    string
	replica int
	token   string
	version atomic.Uint64
	polling atomic.Bool // a poll is in flight
}

// costUser is the user of the cost phase: no device follows it.
const costUser = "cost"

// seed enables the org and uploads every user's data set.
func (r *run) seed(ctx context.Context) error {
	var err error
	if r.admin, err = server.MintToken(r.o.JWTSecret, server.Claims{Admin: true}, 24*time.Hour); err != nil {
		return err
	}
	if _, err := r.call(ctx, 0, r.admin, "PUT", "/v1/admin/orgs/"+r.o.Org, []byte(`{"offline_mode":true}`)); err != nil {
		return fmt.Errorf("enable org: %w", err)
	}
	n := r.o.Devices / 2
	r.users = make([]string, n)
	for u := range n {
		r.users[u] = fmt.Sprintf("u%06d", u)
	}
	versions := make([]uint64, n+1)
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for u, name := range append(append([]string{}, r.users...), costUser) {
		g.Go(func() (err error) {
			versions[u], err = r.upload(gctx, u%len(r.o.Replicas), name)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	r.logf("seeded %d users with %d records each in %.1f s", n+1, r.o.Records, time.Since(start).Seconds())
	return r.makeDevices(versions)
}

func (r *run) makeDevices(versions []uint64) error {
	nrep := len(r.o.Replicas)
	for u, name := range r.users {
		tok, err := mintUser(r.o, name)
		if err != nil {
			return err
		}
		for i := range 2 {
			d := &device{user: name, replica: (u + i) % nrep, token: tok}
			d.version.Store(versions[u])
			r.devices = append(r.devices, d)
		}
	}
	return nil
}

func mintUser(o Options, user string) (string, error) {
	return server.MintToken(o.JWTSecret, server.Claims{Org: o.Org, User: user}, 24*time.Hour)
}

// upload makes a small data set the user's next version.
func (r *run) upload(ctx context.Context, replica int, user string) (uint64, error) {
	var b bytes.Buffer
	for i := range r.o.Records {
		fmt.Fprintf(&b, `{"key":"tasks/%04d","value":{"title":"task %d of %s","status":"open","points":%d}}`+"\n", i, i, user, i%8)
	}
	body, err := r.call(ctx, replica, r.admin, "PUT", "/v1/admin/orgs/"+r.o.Org+"/users/"+user+"/dataset", b.Bytes())
	if err != nil {
		return 0, fmt.Errorf("upload %s: %w", user, err)
	}
	var res struct{ Version uint64 }
	if err := json.Unmarshal(body, &res); err != nil || res.Version == 0 {
		return 0, fmt.Errorf("upload %s: answer %q", user, body)
	}
	return res.Version, nil
}

// call sends one request and returns the body of a 200 answer.
func (r *run) call(ctx context.Context, replica int, token, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.o.Replicas[replica].URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := r.reqc[replica].Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out, nil
}

// pollLoop is a device's life: a long poll, the delta it brings, the next.
// The first poll waits a random part of Wait, so that the fleet's polls
// end spread over time as a real fleet's do, not all together as they
// were connected. A failed poll is retried after a backoff with jitter, as the client
// library does (1 s doubling to 30 s, each delay drawn from [d/2, d)), so
// that a fleet does not come back all at once to a struggling server.
func (r *run) pollLoop(ctx context.Context, d *device) {
	wait := r.o.Wait/10 + time.Duration(r.intn(int(r.o.Wait*9/10/time.Millisecond)+1))*time.Millisecond
	backoff := time.Second
	for ctx.Err() == nil {
		ok := r.pollOnce(ctx, d, wait)
		wait = r.o.Wait
		if ok || ctx.Err() != nil {
			backoff = time.Second
			continue
		}
		r.fail("poll")
		sleep(ctx, backoff/2+time.Duration(r.intn(int(backoff/2/time.Millisecond)+1))*time.Millisecond)
		backoff = min(2*backoff, 30*time.Second)
	}
}

// pollOnce holds one long poll; it reports whether it was answered well.
func (r *run) pollOnce(ctx context.Context, d *device, wait time.Duration) bool {
	from := d.version.Load()
	url := fmt.Sprintf("%s/v1/sync?from=%d&wait=%dms", r.o.Replicas[d.replica].URL, from, wait.Milliseconds())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "Bearer "+d.token)
	d.polling.Store(true)
	resp, err := r.pollc[d.replica].Do(req)
	d.polling.Store(false)
	at := time.Now()
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	_, err = io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return false
	}
	r.polls.Add(1)
	if ct != wire.ContentTypeDelta {
		return true
	}
	v, err := strconv.ParseUint(resp.Header.Get("X-Deltasync-Version"), 10, 64)
	if err != nil {
		return false
	}
	raise(&d.version, v)
	r.woke(d, v, at)
	return true
}

// raise sets a to v unless it is higher already.
func raise(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if cur >= v || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// commitKey names a version made by an edit.
type commitKey struct {
	user string
	v    uint64
}

// commit is an edit's version: when its receipt arrived, through which
// replica, and the wake-ups that arrived before it.
type commit struct {
	at      time.Time
	done    bool
	replica int
	early   []wake
}

type wake struct {
	replica int
	at      time.Time
}

// committed records the receipt of an edit's version.
func (r *run) committed(user string, v uint64, replica int, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.measure {
		return
	}
	k := commitKey{user, v}
	c := r.commits[k]
	if c == nil {
		c = &commit{}
		r.commits[k] = c
	}
	c.at, c.done, c.replica = at, true, replica
	for _, w := range c.early {
		r.wakeLocked(c, w)
	}
	c.early = nil
}

// woke records a poll answered with version v: its wake-up latency is the
// time from the receipt of the edit that made v (0 if it came first).
func (r *run) woke(d *device, v uint64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.measure {
		return
	}
	k := commitKey{d.user, v}
	c := r.commits[k]
	if c == nil {
		c = &commit{}
		r.commits[k] = c
	}
	w := wake{replica: d.replica, at: at}
	if !c.done {
		c.early = append(c.early, w)
		return
	}
	r.wakeLocked(c, w)
}

func (r *run) wakeLocked(c *commit, w wake) {
	d := max(w.at.Sub(c.at), 0)
	if w.replica == c.replica {
		r.wakeSame = append(r.wakeSame, d)
	} else {
		r.wakeX = append(r.wakeX, d)
	}
}

// activity makes edits and syncs at the configured rates until ctx ends.
func (r *run) activity(ctx context.Context) {
	var wg sync.WaitGroup
	tick := func(rate float64, op func(context.Context)) {
		defer wg.Done()
		if rate <= 0 {
			return
		}
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		var ops sync.WaitGroup
		defer ops.Wait()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				ops.Go(func() { op(ctx) })
			}
		}
	}
	wg.Add(2)
	go tick(r.o.EditRate, r.edit)
	go tick(r.o.SyncRate, r.sync)
	wg.Wait()
}

// edit is a one-record patch by the first device of a random user.
func (r *run) edit(ctx context.Context) {
	d := r.devices[2*r.intn(len(r.users))]
	n := r.intn(1 << 30)
	body := fmt.Sprintf(`{"id":"e%d-%d","base":%d,"ops":[{"op":"put","key":"tasks/%04d","value":{"status":"done","n":%d}}]}`,
		n, time.Now().UnixNano(), d.version.Load(), n%r.o.Records, n)
	start := time.Now()
	out, err := r.call(ctx, d.replica, d.token, "POST", "/v1/patches", []byte(body))
	at := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			r.fail("patch")
		}
		return
	}
	r.observe("patch", at.Sub(start))
	var pr wire.PatchResponse
	if json.Unmarshal(out, &pr) != nil || pr.Version == 0 {
		r.fail("patch")
		return
	}
	r.committed(d.user, pr.Version, d.replica, at)
}

// sync is what a device does when the app opens: a status and a sync.
func (r *run) sync(ctx context.Context) {
	d := r.devices[r.intn(len(r.devices))]
	start := time.Now()
	if _, err := r.call(ctx, d.replica, d.token, "GET", "/v1/status", nil); err != nil {
		if ctx.Err() == nil {
			r.fail("status")
		}
		return
	}
	r.observe("status", time.Since(start))
	start = time.Now()
	if _, err := r.call(ctx, d.replica, d.token, "GET", fmt.Sprintf("/v1/sync?from=%d", d.version.Load()), nil); err != nil {
		if ctx.Err() == nil && !strings.Contains(err.Error(), ": 404 ") {
			r.fail("sync")
		}
		return
	}
	r.observe("sync", time.Since(start))
}
