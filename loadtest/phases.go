package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// connect starts every device's poll loop, ConnectRate a second, and waits
// until the replicas hold all the polls; it measures the servers' memory
// before and after.
func (r *run) connect(ctx, devCtx context.Context, rep *Report) error {
	rep.RSSBeforeMB = r.rssMB()
	var err error
	if r.liveBefore, r.stacksBefore, r.goroutinesBefore, err = r.live(ctx); err != nil {
		return err
	}
	if r.memBefore, err = r.mem(ctx); err != nil {
		return err
	}
	start := time.Now()
	every := time.Second / time.Duration(r.o.ConnectRate)
	batch := max(1, int(time.Millisecond*10/every))
	for i := 0; i < len(r.devices); i += batch {
		for _, d := range r.devices[i:min(i+batch, len(r.devices))] {
			go r.pollLoop(devCtx, d)
		}
		sleep(ctx, time.Duration(batch)*every)
	}
	deadline := time.Now().Add(time.Minute + time.Duration(len(r.devices))*every)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		held, err := r.waiters(ctx)
		if err != nil {
			return err
		}
		rep.Connected = max(rep.Connected, held)
		if held >= len(r.devices) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loadtest: only %d of %d long polls held after %.0f s (errors: %v)",
				held, len(r.devices), time.Since(start).Seconds(), r.errors())
		}
		sleep(ctx, 250*time.Millisecond)
	}
	rep.ConnectSeconds = time.Since(start).Seconds()
	settled, err := r.settle(ctx)
	if err != nil {
		return err
	}
	rep.SettleSeconds = settled
	rep.RSSHeldMB = r.rssMB()
	rep.RSSHeldPerDeviceKB = perDeviceKB(rep.RSSBeforeMB, rep.RSSHeldMB, len(r.devices))
	mem, err := r.mem(ctx)
	if err != nil {
		return err
	}
	rep.MemHeld = mem.perDevice(r.memBefore, len(r.devices))
	r.logf("%d long polls held after %.1f s, store settled %.1f s later; servers' memory %v MB -> %v MB", rep.Connected,
		rep.ConnectSeconds, rep.SettleSeconds, roundAll(rep.RSSBeforeMB), roundAll(rep.RSSHeldMB))
	return nil
}

// perDeviceKB is the servers' memory growth per device.
func perDeviceKB(before, after []float64, devices int) float64 {
	var grown float64
	for i := range after {
		grown += after[i] - before[i]
	}
	return grown * 1024 / float64(devices)
}

// live sums the replicas' Go heap and stacks in use, their stacks (bytes)
// and goroutines.
func (r *run) live(ctx context.Context) (bytes, stacks, goroutines float64, err error) {
	ms, err := r.scrapeAll(ctx)
	for _, m := range ms {
		bytes += m.live
		stacks += m.stacks
		goroutines += m.goroutines
	}
	return bytes, stacks, goroutines, err
}

// settle waits until the replicas have read what connecting devices need
// (each user's head, once): until their store requests other than listings
// stay under one a second for 2 s, at most 5 minutes. It returns how long
// that took, or -1 if they never settled (the idle phase then measures
// the end of the connecting too).
func (r *run) settle(ctx context.Context) (float64, error) {
	start := time.Now()
	prev, err := r.readsSoFar(ctx)
	if err != nil {
		return 0, err
	}
	for time.Since(start) < 5*time.Minute {
		sleep(ctx, 2*time.Second)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, err := r.readsSoFar(ctx)
		if err != nil {
			return 0, err
		}
		if n-prev <= 2 {
			return time.Since(start).Seconds(), nil
		}
		prev = n
	}
	r.logf("the replicas were still reading for connecting devices after 5 minutes")
	return -1, nil
}

// readsSoFar is the replicas' store requests other than listings so far.
func (r *run) readsSoFar(ctx context.Context) (float64, error) {
	ms, err := r.scrapeAll(ctx)
	var n float64
	for _, m := range ms {
		for kind, v := range m.store {
			if kind != "list" {
				n += v
			}
		}
	}
	return n, err
}

// waiters is the number of long polls the replicas hold now.
func (r *run) waiters(ctx context.Context) (int, error) {
	n := 0
	for i := range r.o.Replicas {
		m, err := r.scrape(ctx, i)
		if err != nil {
			return 0, err
		}
		n += int(m.waiters)
	}
	return n, nil
}

// phase runs activity (if any) for d and measures the store's traffic.
func (r *run) phase(ctx context.Context, d time.Duration, name string, activity func(context.Context)) (Phase, error) {
	var p Phase
	if d <= 0 {
		return p, nil
	}
	before, err := r.scrapeAll(ctx)
	if err != nil {
		return p, err
	}
	polls := r.polls.Load()
	start := time.Now()
	r.setMeasure(activity != nil)
	actx, stop := context.WithTimeout(ctx, d)
	if activity != nil {
		activity(actx)
	} else {
		<-actx.Done()
	}
	stop()
	r.setMeasure(false)
	if err := ctx.Err(); err != nil {
		return p, err
	}
	after, err := r.scrapeAll(ctx)
	if err != nil {
		return p, err
	}
	p.Seconds = time.Since(start).Seconds()
	p.Polls = r.polls.Load() - polls
	p.ByKind = map[string]float64{}
	for i := range after {
		var total float64
		for kind, n := range after[i].store {
			delta := n - before[i].store[kind]
			total += delta
			p.ByKind[kind] += delta / p.Seconds
		}
		p.StorePerSec = append(p.StorePerSec, total/p.Seconds)
	}
	r.logf("%s: %.0f s, store requests per second per replica %v, %d polls answered", name, p.Seconds, roundAll(p.StorePerSec), p.Polls)
	return p, nil
}

func (r *run) setMeasure(on bool) {
	r.mu.Lock()
	r.measure = on
	r.mu.Unlock()
}

// cost measures the store requests of single operations on the first
// replica, one at a time, on a user no device follows: a patch, a delta
// sync from the version before, a full sync, a status. Listings are left
// out: only the watchers list, whatever the operations.
func (r *run) cost(ctx context.Context) (map[string]map[string]float64, error) {
	if r.o.CostSamples == 0 {
		return nil, nil
	}
	tok, err := mintUser(r.o, costUser)
	if err != nil {
		return nil, err
	}
	body, err := r.call(ctx, 0, tok, "GET", "/v1/status", nil)
	if err != nil {
		return nil, err
	}
	v, err := headOf(body)
	if err != nil {
		return nil, err
	}
	ops := []struct {
		name string
		path func() (method, path string, body []byte)
	}{
		{"patch", func() (string, string, []byte) {
			return "POST", "/v1/patches", fmt.Appendf(nil, `{"id":"cost-%d-%d","base":%d,"ops":[{"op":"put","key":"tasks/0001","value":{"n":%d}}]}`,
				v, time.Now().UnixNano(), v, v)
		}},
		{"delta_sync", func() (string, string, []byte) { return "GET", fmt.Sprintf("/v1/sync?from=%d", v-1), nil }},
		{"full_sync", func() (string, string, []byte) { return "GET", "/v1/sync?from=0", nil }},
		{"status", func() (string, string, []byte) { return "GET", "/v1/status", nil }},
	}
	out := map[string]map[string]float64{}
	for range r.o.CostSamples {
		for _, op := range ops {
			before, err := r.scrape(ctx, 0)
			if err != nil {
				return nil, err
			}
			method, path, b := op.path()
			if _, err := r.call(ctx, 0, tok, method, path, b); err != nil {
				return nil, fmt.Errorf("cost of %s: %w", op.name, err)
			}
			after, err := r.scrape(ctx, 0)
			if err != nil {
				return nil, err
			}
			if out[op.name] == nil {
				out[op.name] = map[string]float64{}
			}
			for kind, n := range after.store {
				if kind != "list" {
					out[op.name][kind] += (n - before.store[kind]) / float64(r.o.CostSamples)
				}
			}
		}
		v++
	}
	return out, nil
}

func headOf(status []byte) (uint64, error) {
	const field = `"head":`
	i := strings.Index(string(status), field)
	if i < 0 {
		return 0, fmt.Errorf("status without a head: %s", status)
	}
	rest := string(status[i+len(field):])
	end := strings.IndexAny(rest, ",}")
	return strconv.ParseUint(strings.TrimSpace(rest[:end]), 10, 64)
}

// metrics is what the load test reads from a replica's /metrics.
type metrics struct {
	store      map[string]float64 // store requests by kind, every outcome
	waiters    float64
	live       float64 // Go heap and stacks in use, bytes
	stacks     float64 // of which stacks
	goroutines float64
	mem        MemClasses
}

// MemClasses is where a Go server's memory is, in bytes (from the
// go_memstats_* of its /metrics).
type MemClasses struct {
	HeapInuse float64 `json:"heap_inuse"`
	// HeapFree is heap the runtime keeps for reuse and has not returned
	// to the system: free, but resident.
	HeapFree float64 `json:"heap_free"`
	Stacks   float64 `json:"stacks"`
	// Runtime is the runtime's own: spans, caches, GC metadata, profiling
	// buckets and the rest of other_sys.
	Runtime float64 `json:"runtime"`
}

func (a MemClasses) add(b MemClasses) MemClasses {
	return MemClasses{a.HeapInuse + b.HeapInuse, a.HeapFree + b.HeapFree, a.Stacks + b.Stacks, a.Runtime + b.Runtime}
}

// perDevice is the growth from before to a, in KB per device.
func (a MemClasses) perDevice(before MemClasses, devices int) MemClasses {
	f := func(x, y float64) float64 { return (x - y) / 1024 / float64(devices) }
	return MemClasses{f(a.HeapInuse, before.HeapInuse), f(a.HeapFree, before.HeapFree),
		f(a.Stacks, before.Stacks), f(a.Runtime, before.Runtime)}
}

func (r *run) scrapeAll(ctx context.Context) ([]metrics, error) {
	out := make([]metrics, len(r.o.Replicas))
	for i := range r.o.Replicas {
		m, err := r.scrape(ctx, i)
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

func (r *run) scrape(ctx context.Context, replica int) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", r.o.Replicas[replica].URL+"/metrics", nil)
	if err != nil {
		return metrics{}, err
	}
	resp, err := r.reqc[replica].Do(req)
	if err != nil {
		return metrics{}, fmt.Errorf("metrics of replica %d: %w", replica, err)
	}
	defer resp.Body.Close()
	return parseMetrics(resp.Body)
}

// parseMetrics reads the lines of the Prometheus text format it needs.
func parseMetrics(rd io.Reader) (metrics, error) {
	m := metrics{store: map[string]float64{}}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		val, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		if rest, ok := strings.CutPrefix(line, `deltasync_store_requests_total{op="`); ok {
			m.store[rest[:strings.IndexByte(rest, '"')]] += val
		} else if strings.HasPrefix(line, "deltasync_hub_waiters ") {
			m.waiters = val
		} else if strings.HasPrefix(line, "go_memstats_heap_inuse_bytes ") {
			m.live += val
		} else if strings.HasPrefix(line, "go_memstats_stack_inuse_bytes ") {
			m.live += val
			m.stacks = val
		} else if strings.HasPrefix(line, "go_goroutines ") {
			m.goroutines = val
		}
		m.mem.note(line[:sp], val)
	}
	return m, sc.Err()
}

// note takes a go_memstats_* gauge into the classes. The heap's free part
// is heap_idle less heap_released, counted positive and negative.
func (c *MemClasses) note(name string, val float64) {
	switch name {
	case "go_memstats_heap_inuse_bytes":
		c.HeapInuse += val
	case "go_memstats_heap_idle_bytes":
		c.HeapFree += val
	case "go_memstats_heap_released_bytes":
		c.HeapFree -= val
	case "go_memstats_stack_inuse_bytes":
		c.Stacks += val
	case "go_memstats_mspan_inuse_bytes", "go_memstats_mcache_inuse_bytes", "go_memstats_gc_sys_bytes",
		"go_memstats_other_sys_bytes", "go_memstats_buck_hash_sys_bytes":
		c.Runtime += val
	}
}

// mem sums the replicas' memory classes now.
func (r *run) mem(ctx context.Context) (MemClasses, error) {
	ms, err := r.scrapeAll(ctx)
	var sum MemClasses
	for _, m := range ms {
		sum = sum.add(m.mem)
	}
	return sum, err
}

// rssMB is each replica's resident memory now (0 where unknown).
func (r *run) rssMB() []float64 {
	out := make([]float64, len(r.o.Replicas))
	for i, rp := range r.o.Replicas {
		if rp.PID != 0 {
			out[i] = rssKB(rp.PID) / 1024
		}
	}
	return out
}

// rssKB reads a process's VmRSS (Linux).
func rssKB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb
		}
	}
	return 0
}

// loadAverage is the 1-minute load average (Linux; 0 elsewhere).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	x, _ := strconv.ParseFloat(f[0], 64)
	return x
}

// summarise fills in the latencies and errors.
func (r *run) summarise(rep *Report) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.WakeSame = summary(r.wakeSame)
	rep.WakeCross = summary(r.wakeX)
	for k, ds := range r.reqs {
		rep.Requests[k] = summary(ds)
	}
	rep.Errors = maps.Clone(r.errs)
}

func (r *run) errors() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.errs)
}

// summary is the percentiles of ds (nearest rank).
func summary(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := int(p*float64(len(s))+0.999999) - 1
		return ms(s[min(max(i, 0), len(s)-1)])
	}
	return Latency{N: len(s), P50: at(0.50), P99: at(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func roundAll(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(int(x*100+0.5)) / 100
	}
	return out
}
