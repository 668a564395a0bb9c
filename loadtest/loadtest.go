// Package loadtest drives a fleet of simulated devices against running
// deltasync replicas and measures what the fleet costs: the requests the
// store receives (counted by the replicas themselves, in /metrics), how
// fast a new version reaches the devices waiting for it (on the replica
// that committed it and on the others), how fast ordinary requests are
// answered while every device holds a long poll, and the servers' memory
// per connected device.
//
// A device is what the client library does when idle: it holds a long
// poll (GET /v1/sync?from=V&wait=W), and when a new version arrives it
// reads the delta and polls again from it. Devices come in pairs, one pair
// per user, on different replicas when there are several, so that an edit
// through one device's replica wakes the other device across replicas and
// the editing device on its own replica.
//
// Run goes through phases: seed the users' data sets; connect every device
// (ConnectRate polls a second) and wait until the replicas have read what
// the new polls need (each user's head); hold them Idle with nothing happening (the
// store cost of idle devices); then Duration of activity at EditRate edits
// (a one-record patch) and SyncRate syncs (a status and a sync request) a
// second across the fleet; then CostSamples sequential patches, delta syncs
// and full syncs of a user no device follows, whose store requests are the
// per-operation costs. The caller starts the replicas (Replica) and sizes
// the process's descriptor limit; see cmd/deltasync loadtest.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Replica is one server under test.
type Replica struct {
	URL string // http://host:port
	PID int    // the server's process, for its memory (0: not measured)
}

// Options configure Run.
type Options struct {
	Replicas  []Replica
	JWTSecret []byte // HS256 secret the replicas accept
	Org       string
	// Devices is the number of simulated devices (two per user).
	Devices int
	// Records is the size of each user's data set.
	Records int
	// Wait is the long-poll wait the devices ask for.
	Wait time.Duration
	// ConnectRate is how many devices start polling per second.
	ConnectRate int
	// Idle is how long the connected fleet is watched doing nothing.
	Idle time.Duration
	// Duration is how long the fleet is active, at EditRate edits and
	// SyncRate syncs a second (fleet-wide).
	Duration           time.Duration
	EditRate, SyncRate float64
	// CostSamples is how many of each operation the cost phase measures.
	CostSamples int
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// DefaultOptions: 1,000 devices with 20-record data sets, 30 s polls,
// 30 s idle, 30 s at 5 edits and 10 syncs a second, 20 cost samples.
func DefaultOptions() Options {
	return Options{Org: "loadtest", Devices: 1000, Records: 20, Wait: 30 * time.Second, ConnectRate: 2000,
		Idle: 30 * time.Second, Duration: 30 * time.Second, EditRate: 5, SyncRate: 10, CostSamples: 20}
}

func (o Options) validate() error {
	switch {
	case len(o.Replicas) == 0:
		return errors.New("loadtest: no replicas")
	case o.Devices < 2 || o.Devices%2 != 0:
		return fmt.Errorf("loadtest: devices must be even and at least 2, not %d", o.Devices)
	case o.Wait <= 0 || o.ConnectRate <= 0 || o.Idle < 0 || o.Duration < 0:
		return errors.New("loadtest: wait and connect rate must be positive, idle and duration not negative")
	case o.EditRate < 0 || o.SyncRate < 0 || o.CostSamples < 0 || o.Records < 1:
		return errors.New("loadtest: rates and samples must not be negative, records at least 1")
	case len(o.JWTSecret) == 0 || o.Org == "":
		return errors.New("loadtest: a JWT secret and an org are required")
	}
	return nil
}

// Report is what Run measured.
type Report struct {
	Devices  int `json:"devices"`
	Replicas int `json:"replicas"`
	// Connected is how many long polls the replicas held at once.
	Connected      int     `json:"connected"`
	ConnectSeconds float64 `json:"connect_seconds"`
	// SettleSeconds is how long after that the replicas still read the
	// store for the connecting devices (each user's head, once); -1 if
	// they had not stopped after 5 minutes.
	SettleSeconds float64 `json:"settle_seconds"`
	// Memory of the servers: resident set before the devices connected,
	// once every poll was held, and at the end of the idle phase (the
	// steady state: what connecting allocated and freed is returned to
	// the system by then); the growth per connected device, to the end of
	// the idle phase.
	RSSBeforeMB    []float64 `json:"rss_before_mb"`
	RSSHeldMB      []float64 `json:"rss_held_mb"`
	RSSIdleMB      []float64 `json:"rss_idle_mb"`
	RSSPerDeviceKB float64   `json:"rss_per_device_kb"`
	// LivePerDeviceKB is the growth of the servers' Go heap and stacks in
	// use per device (from their /metrics), at the end of the idle phase:
	// the memory the connections hold, without what the runtime keeps
	// for reuse; GoroutinesPerDevice likewise.
	LivePerDeviceKB     float64 `json:"live_per_device_kb"`
	StacksPerDeviceKB   float64 `json:"stacks_per_device_kb"` // of LivePerDeviceKB
	GoroutinesPerDevice float64 `json:"goroutines_per_device"`
	// RSSHeldPerDeviceKB is the growth of the resident set per device
	// once every poll was held (before any was answered: the first waits
	// are drawn from [Wait/10, Wait]); RSSPerDeviceKB is the growth to the
	// end of the idle phase, after the polls have renewed.
	RSSHeldPerDeviceKB float64 `json:"rss_held_per_device_kb"`
	// MemHeld and MemIdle are where the servers' memory grew, per device
	// in KB, at those two times.
	MemHeld MemClasses `json:"mem_held_per_device_kb"`
	MemIdle MemClasses `json:"mem_idle_per_device_kb"`
	// RSSActiveMB and RSSActivePerDeviceKB are the same at the end of the
	// active phase, after polls were answered with deltas.
	RSSActiveMB          []float64  `json:"rss_active_mb"`
	RSSActivePerDeviceKB float64    `json:"rss_active_per_device_kb"`
	MemActive            MemClasses `json:"mem_active_per_device_kb"`

	Idle   Phase `json:"idle"`
	Active Phase `json:"active"`

	WakeSame  Latency            `json:"wake_same_replica"`
	WakeCross Latency            `json:"wake_cross_replica"`
	Requests  map[string]Latency `json:"requests"` // status, patch, sync
	Errors    map[string]int64   `json:"errors"`

	// Cost is the store requests of one operation, by kind (get, put,
	// stat, list, delete), averaged over the cost samples.
	Cost map[string]map[string]float64 `json:"cost"`

	// LoadAverage is the machine's 1-minute load average when the devices
	// had connected and at the end (latencies mean little on a machine
	// busy with other work).
	LoadAverage [2]float64 `json:"load_average"`
}

// Phase is the store traffic of one phase.
type Phase struct {
	Seconds float64 `json:"seconds"`
	// StorePerSec is store requests a second, per replica.
	StorePerSec []float64 `json:"store_requests_per_s"`
	// ByKind is store requests a second by kind, all replicas together.
	ByKind map[string]float64 `json:"by_kind_per_s"`
	// Polls is the long polls answered during the phase.
	Polls int64 `json:"polls_answered"`
}

// Latency summarises one kind of measurement, in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// run is the state of one Run.
type run struct {
	o       Options
	devices []*device
	users   []string
	// Clients: long polls (one connection each) and other requests, per replica.
	pollc, reqc []*http.Client
	admin       string
	// The servers' Go heap and stacks in use and goroutines before the
	// devices connected.
	liveBefore, stacksBefore, goroutinesBefore float64
	memBefore                                  MemClasses
	rng                                        *rand.Rand
	rngMu                                      sync.Mutex

	mu       sync.Mutex
	measure  bool // the active phase runs: record latencies
	commits  map[commitKey]*commit
	wakeSame []time.Duration
	wakeX    []time.Duration
	reqs     map[string][]time.Duration
	errs     map[string]int64
	polls    atomic.Int64
}

// Run runs the load test.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	r := newRun(o)
	defer r.closeIdle()
	rep := &Report{Devices: o.Devices, Replicas: len(o.Replicas), Requests: map[string]Latency{}}
	if err := r.seed(ctx); err != nil {
		return nil, err
	}
	devCtx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	if err := r.connect(ctx, devCtx, rep); err != nil {
		return nil, err
	}
	rep.LoadAverage[0] = loadAverage()
	var err error
	if rep.Idle, err = r.phase(ctx, o.Idle, "idle", nil); err != nil {
		return nil, err
	}
	rep.RSSIdleMB = r.rssMB()
	rep.RSSPerDeviceKB = perDeviceKB(rep.RSSBeforeMB, rep.RSSIdleMB, len(r.devices))
	live, stacks, goroutines, err := r.live(ctx)
	if err != nil {
		return nil, err
	}
	rep.LivePerDeviceKB = (live - r.liveBefore) / 1024 / float64(len(r.devices))
	rep.StacksPerDeviceKB = (stacks - r.stacksBefore) / 1024 / float64(len(r.devices))
	rep.GoroutinesPerDevice = (goroutines - r.goroutinesBefore) / float64(len(r.devices))
	mem, err := r.mem(ctx)
	if err != nil {
		return nil, err
	}
	rep.MemIdle = mem.perDevice(r.memBefore, len(r.devices))
	if rep.Active, err = r.phase(ctx, o.Duration, "active", r.activity); err != nil {
		return nil, err
	}
	rep.RSSActiveMB = r.rssMB()
	rep.RSSActivePerDeviceKB = perDeviceKB(rep.RSSBeforeMB, rep.RSSActiveMB, len(r.devices))
	if mem, err = r.mem(ctx); err != nil {
		return nil, err
	}
	rep.MemActive = mem.perDevice(r.memBefore, len(r.devices))
	if rep.Cost, err = r.cost(ctx); err != nil {
		return nil, err
	}
	rep.LoadAverage[1] = loadAverage()
	stopDevices()
	r.summarise(rep)
	return rep, nil
}

func newRun(o Options) *run {
	r := &run{o: o, rng: rand.New(rand.NewPCG(1, 2)), commits: map[commitKey]*commit{},
		reqs: map[string][]time.Duration{}, errs: map[string]int64{}}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	for range o.Replicas {
		r.pollc = append(r.pollc, &http.Client{Transport: &http.Transport{
			DialContext: dialer.DialContext, MaxIdleConnsPerHost: o.Devices + 64,
			IdleConnTimeout: 5 * time.Minute, DisableCompression: true,
			ResponseHeaderTimeout: o.Wait + 30*time.Second,
		}})
		r.reqc = append(r.reqc, &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			DialContext: dialer.DialContext, MaxIdleConnsPerHost: 256, DisableCompression: true,
		}})
	}
	return r
}

func (r *run) closeIdle() {
	for i := range r.pollc {
		r.pollc[i].CloseIdleConnections()
		r.reqc[i].CloseIdleConnections()
	}
}

func (r *run) logf(format string, args ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, format+"\n", args...)
	}
}

func (r *run) intn(n int) int {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return r.rng.IntN(n)
}

// fail counts an error of the given kind.
func (r *run) fail(kind string) {
	r.mu.Lock()
	r.errs[kind]++
	r.mu.Unlock()
}

// observe records the latency of a request of the given kind, during the
// active phase.
func (r *run) observe(kind string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.measure {
		r.reqs[kind] = append(r.reqs[kind], d)
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
