package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/deltasync/deltasync/loadtest"
)

const loadtestSynopsis = `  deltasync loadtest [--devices 1000] [--replicas 1] [--store URL] [--json]

Starts --replicas deltasync serve processes on one store (a fresh local
directory unless --store names one; an S3 store takes its credentials from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), connects --devices simulated
devices that each hold a long poll, two per user on different replicas,
and reports: store requests per second per replica with the fleet idle and
while it makes --edit-rate edits and --sync-rate syncs a second, wake-up
latency on the replica that committed a version and on the others,
request latency while the polls are held, the servers' memory per
connected device, and the store requests of one patch, delta sync, full
sync and status.

Every device is a connection in this process and in a server: the command
raises its descriptor limit (RLIMIT_NOFILE, soft and hard, which the
servers inherit) to 2 x devices + 4096 where it may (as root), else to the
hard limit, and says so. 10,000 devices need about 24,000 descriptors.
`

// loadtestOptions are the flags of `deltasync loadtest`.
type loadtestOptions struct {
	loadtest.Options
	Replicas  int
	Store     string
	ServeArgs []string
	JSON      bool
}

func loadtestFlags(e *env) (*loadtestOptions, *flag.FlagSet) {
	o := &loadtestOptions{Options: loadtest.DefaultOptions(), Replicas: 1}
	fs := newFlagSet(e, "loadtest", loadtestSynopsis)
	fs.IntVar(&o.Devices, "devices", o.Devices, "simulated devices, each holding a long poll (two per user)")
	fs.IntVar(&o.Replicas, "replicas", o.Replicas, "serve processes to start on the store")
	fs.StringVar(&o.Store, "store", "", "store URL (default: a fresh temporary directory)")
	fs.IntVar(&o.Records, "records", o.Records, "records in each user's data set")
	fs.DurationVar(&o.Wait, "wait", o.Wait, "long-poll wait the devices ask for")
	fs.IntVar(&o.ConnectRate, "connect-rate", o.ConnectRate, "devices that start polling per second")
	fs.DurationVar(&o.Idle, "idle", o.Idle, "how long the connected fleet is watched idle")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long the fleet is active")
	fs.Float64Var(&o.EditRate, "edit-rate", o.EditRate, "one-record patches per second across the fleet while active")
	fs.Float64Var(&o.SyncRate, "sync-rate", o.SyncRate, "status + sync request pairs per second across the fleet while active")
	fs.IntVar(&o.CostSamples, "cost-samples", o.CostSamples, "operations of each kind the per-operation store cost is averaged over")
	fs.Var(&listFlag{list: &o.ServeArgs}, "serve-arg", "extra argument for every serve process, e.g. --serve-arg=--watch-interval=1s; repeatable")
	fs.BoolVar(&o.JSON, "json", false, "print the report as one JSON object")
	return o, fs
}

func runLoadtest(ctx context.Context, e *env, args []string) error {
	o, fs := loadtestFlags(e)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.Replicas < 1 {
		return usagef("--replicas must be at least 1")
	}
	limit, err := raiseNoFile(uint64(2*o.Devices + 4096))
	if err != nil {
		fmt.Fprintf(e.stderr, "loadtest: %v\n", err)
	}
	if !o.JSON {
		o.Log = e.stderr
		fmt.Fprintf(e.stderr, "descriptor limit %d\n", limit)
	}
	if o.Store == "" {
		dir, err := os.MkdirTemp("", "deltasync-loadtest-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.Store = "file://" + dir
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	o.JWTSecret = []byte(hex.EncodeToString(secret))
	fleet, err := startReplicas(ctx, o)
	defer fleet.stop()
	if err != nil {
		return err
	}
	o.Options.Replicas = fleet.replicas
	rep, err := loadtest.Run(ctx, o.Options)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, fleet.logs())
	}
	if o.JSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintln(e.stdout, string(b))
		return nil
	}
	printLoadtest(e, o, rep)
	return nil
}

// raiseNoFile raises the process's descriptor limit to want (soft and
// hard; the hard limit only as root), or the soft limit to the hard one.
// Child processes inherit it. It returns the soft limit in force.
func raiseNoFile(want uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur >= want {
		return rl.Cur, nil
	}
	up := syscall.Rlimit{Cur: want, Max: max(rl.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up); err == nil {
		return want, nil
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return rl.Cur, fmt.Errorf("descriptor limit %d, not the %d wanted: raise the hard limit (ulimit -Hn, LimitNOFILE=, or run as root)", rl.Cur, want)
}

// fleet is the serve processes of a load test.
type fleet struct {
	replicas []loadtest.Replica
	cmds     []*exec.Cmd
	outs     []*processOutput
}

// startReplicas starts o.Replicas serve processes (this executable) on
// o.Store and waits until each answers /healthz.
func startReplicas(ctx context.Context, o *loadtestOptions) (*fleet, error) {
	f := &fleet{}
	exe, err := os.Executable()
	if err != nil {
		return f, err
	}
	for i := range o.Replicas {
		addr, err := freeAddr()
		if err != nil {
			return f, err
		}
		args := append([]string{"serve", "--addr", addr, "--store", o.Store, "--log-level", "warn",
			"--max-conns", strconv.Itoa(o.Devices + 1024), "--rate-limit", "0"}, o.ServeArgs...)
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "DELTASYNC_JWT_SECRET="+string(o.JWTSecret))
		out := &processOutput{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			return f, fmt.Errorf("start replica %d: %w", i, err)
		}
		f.cmds, f.outs = append(f.cmds, cmd), append(f.outs, out)
		f.replicas = append(f.replicas, loadtest.Replica{URL: "http://" + addr, PID: cmd.Process.Pid})
	}
	for i, r := range f.replicas {
		if err := waitHealthy(ctx, r.URL); err != nil {
			return f, fmt.Errorf("replica %d: %w\n%s", i, err, f.outs[i].String())
		}
	}
	return f, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHealthy(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("did not answer /healthz within 30 s")
}

// stop ends the serve processes (SIGTERM, then waits).
func (f *fleet) stop() {
	for _, c := range f.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range f.cmds {
		_ = c.Wait()
	}
}

func (f *fleet) logs() string {
	var b bytes.Buffer
	for i, o := range f.outs {
		if s := o.String(); s != "" {
			fmt.Fprintf(&b, "replica %d:\n%s", i, s)
		}
	}
	return b.String()
}

// processOutput collects a process's output.
type processOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *processOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil // enough to tell what went wrong
	}
	return l.b.Write(p)
}

func (l *processOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func printLoadtest(e *env, o *loadtestOptions, r *loadtest.Report) {
	out := e.stdout
	fmt.Fprintf(out, "%d devices (two per user) on %d replica(s), store %s\n", r.Devices, r.Replicas, o.Store)
	fmt.Fprintf(out, "long polls held at once: %d (connected in %.1f s, store settled %.1f s later); load average %.1f then %.1f on %d CPUs\n",
		r.Connected, r.ConnectSeconds, r.SettleSeconds, r.LoadAverage[0], r.LoadAverage[1], runtime.NumCPU())
	fmt.Fprintf(out, "server memory: %s MB before, %s MB once every poll was held, %s MB after the idle phase: %.1f KB per connected device\n",
		floats(r.RSSBeforeMB), floats(r.RSSHeldMB), floats(r.RSSIdleMB), r.RSSPerDeviceKB)
	fmt.Fprintf(out, "per connected device: %.1f KB once held, %.1f KB after the idle phase (the polls renewed), %.1f KB after the active phase\n",
		r.RSSHeldPerDeviceKB, r.RSSPerDeviceKB, r.RSSActivePerDeviceKB)
	for _, m := range []struct {
		when string
		c    loadtest.MemClasses
	}{{"held", r.MemHeld}, {"after idle", r.MemIdle}, {"after active", r.MemActive}} {
		fmt.Fprintf(out, "  Go memory per device, %s: heap in use %.1f KB, heap free but resident %.1f KB, stacks %.1f KB, runtime %.1f KB\n",
			m.when, m.c.HeapInuse, m.c.HeapFree, m.c.Stacks, m.c.Runtime)
	}
	fmt.Fprintf(out, "Go heap and stacks in use: %.1f KB per connected device (stacks %.1f KB); %.2f goroutines per device\n",
		r.LivePerDeviceKB, r.StacksPerDeviceKB, r.GoroutinesPerDevice)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\nphase\tseconds\tstore req/s per replica\tby kind (all replicas)\tpolls answered")
	for _, p := range []struct {
		name string
		ph   loadtest.Phase
	}{{"idle", r.Idle}, {"active", r.Active}} {
		fmt.Fprintf(w, "%s\t%.0f\t%s\t%s\t%d\n", p.name, p.ph.Seconds, floats(p.ph.StorePerSec), kinds(p.ph.ByKind), p.ph.Polls)
	}
	fmt.Fprintln(w, "\nlatency\tn\tp50 ms\tp99 ms\tmax ms")
	lat := func(name string, l loadtest.Latency) {
		fmt.Fprintf(w, "%s\t%d\t%.1f\t%.1f\t%.1f\n", name, l.N, l.P50, l.P99, l.Max)
	}
	lat("wake-up, same replica", r.WakeSame)
	lat("wake-up, other replica", r.WakeCross)
	for _, k := range []string{"status", "patch", "sync"} {
		lat(k+" (polls held)", r.Requests[k])
	}
	if len(r.Cost) > 0 {
		fmt.Fprintln(w, "\nstore requests per operation\tget\tput\tstat\tdelete\t")
		for _, op := range []string{"patch", "delta_sync", "full_sync", "status"} {
			c := r.Cost[op]
			fmt.Fprintf(w, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t\n", op, c["get"], c["put"], c["stat"], c["delete"])
		}
	}
	w.Flush()
	if len(r.Errors) > 0 {
		fmt.Fprintf(out, "\nerrors: %v\n", r.Errors)
	}
}

func floats(xs []float64) string {
	var b bytes.Buffer
	for i, x := range xs {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.2f", x)
	}
	return b.String()
}

func kinds(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		if m[k] >= 0.005 {
			fmt.Fprintf(&b, "%s %.2f ", k, m[k])
		}
	}
	return b.String()
}
