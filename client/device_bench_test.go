package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// The device's figures (issue 13): a full sync's records per second of
// client CPU, its peak RSS and heap, the disk it leaves per byte of
// canonical stream, how long Put and Get take while it installs; a
// one-record delta's time; Get and Scan on the synced version.
//
// The server answers once, before the measurement: its delta packs are
// captured, and each measurement runs in a process of its own (this test
// binary, TestDeviceChild) that reads a pack from a file through an
// http.RoundTripper. So the figures are the client's alone: its CPU, and
// its peak RSS as the kernel counts it, with nothing of the server or of
// the data set's generation in the process.
//
//	go test -run '^$' -bench Device -benchtime 3x ./client
//	DELTASYNC_BENCH_256MB=1 go test -run '^$' -bench 'DeviceFullSync/256MB' -benchtime 1x ./client

// deviceFixture is one data set's packs, in files.
type deviceFixture struct {
	full, delta string // packs 0→1 and 1→2 (one record changed)
	delta2      string // pack 2→3 (another record changed)
	records     int
	streamLen   int64
	keys        string // a file of the keys, one a line
	synced      string // a state directory at version 1
}

// deviceFixtures keeps a benchmark's fixtures for its sub-benchmarks;
// they are removed when it ends (a sub-benchmark's function runs more than
// once).
type deviceFixtures struct {
	b  testing.TB
	mu sync.Mutex
	by map[int64]*deviceFixture
}

func newDeviceFixtures(b testing.TB) *deviceFixtures {
	return &deviceFixtures{b: b, by: map[int64]*deviceFixture{}}
}

func deviceSizes() []int64 {
	sizes := []int64{1 << 20, 64 << 20}
	if os.Getenv("DELTASYNC_BENCH_256MB") != "" {
		sizes = append(sizes, 256<<20)
	}
	return sizes
}

func sizeName(n int64) string { return fmt.Sprintf("%dMB", n>>20) }

// get makes the data set, serves it and records the packs (once per
// size), and a state directory synced to it.
func (fs *deviceFixtures) get(b testing.TB, size int64) *deviceFixture {
	b.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fx := fs.by[size]; fx != nil {
		return fx
	}
	dir, err := os.MkdirTemp("", "device-bench-")
	if err != nil {
		b.Fatal(err)
	}
	fs.b.Cleanup(func() { os.RemoveAll(dir) })
	ts := newTestServer(fs.b)
	recs := gen.Dataset(gen.Options{Size: size, Seed: 7})
	ts.upload("ann", recs)
	fx := &deviceFixture{records: len(recs), full: filepath.Join(dir, "full.pack"), delta: filepath.Join(dir, "delta.pack"),
		delta2: filepath.Join(dir, "delta2.pack"), keys: filepath.Join(dir, "keys"), synced: filepath.Join(dir, "synced")}
	var keys []byte
	for _, r := range recs {
		keys = append(append(keys, r.Key...), '\n')
	}
	writeFile(b, fx.keys, keys)
	writeFile(b, fx.full, capturePack(b, ts, 0, 0))
	m, err := snapshot.ReadManifest(context.Background(), ts.store, testOrg, "ann", 1)
	if err != nil {
		b.Fatal(err)
	}
	fx.streamLen = int64(m.StreamLen)
	v2 := editRecord(recs, len(recs)/2, 1)
	ts.upload("ann", v2)
	writeFile(b, fx.delta, capturePack(b, ts, 1, deltaFormat()))
	ts.upload("ann", editRecord(v2, len(recs)/3, 2))
	writeFile(b, fx.delta2, capturePack(b, ts, 2, deltaFormat()))
	runChild(b, childJob{Mode: "full", Pack: fx.full, Dir: fx.synced, Keys: fx.keys})
	fs.by[size] = fx
	return fx
}

func writeFile(b testing.TB, name string, data []byte) {
	b.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		b.Fatal(err)
	}
}

// deltaFormat is the format of the one-record deltas: what the client asks
// for (wire.DeltaFormat), or DELTASYNC_BENCH_DELTA_FORMAT (2: an old
// client's). (The full sync's pack is what an old client gets: the
// figures of the full-sync table were measured with it.)
func deltaFormat() int {
	if f, err := strconv.Atoi(os.Getenv("DELTASYNC_BENCH_DELTA_FORMAT")); err == nil {
		return f
	}
	return wire.DeltaFormat
}

// capturePack returns the body of GET /v1/sync?from=from&format=format
// (0: no format asked, what an old client gets).
func capturePack(tb testing.TB, ts *testServer, from uint64, format int) []byte {
	tb.Helper()
	u := fmt.Sprintf("%s/v1/sync?from=%d", ts.url, from)
	if format != 0 {
		u += fmt.Sprintf("&format=%d", format)
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+ts.token("ann"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != wire.ContentTypeDelta {
		tb.Fatalf("capture pack from %d: %d %v", from, resp.StatusCode, err)
	}
	return b
}

// childJob is what one measuring process does; childFigures what it
// measured (durations in nanoseconds).
type childJob struct {
	Mode string // full (sync into Dir), delta (pull Pack onto Dir), read (Gets and a Scan of Dir)
	Pack string
	// Then (delta) is a second delta, pulled after Pack by the same
	// process: an app that runs already.
	Then string
	Dir  string
	Keys string
	Gets int
	// Profile (delta): repeat the two pulls Repeat times, each on a fresh
	// copy of Dir, under the CPU profiler (the pulls labelled phase=pull)
	// and the allocation profiler, written to Profile+".cpu" and
	// Profile+".mem".
	Profile string
	Repeat  int
}

type childFigures struct {
	Wall, CPU      time.Duration // of the sync alone (full, delta) or the Scan (read)
	Install        time.Duration // delta: from the request to the version switched
	Warm           *childFigures // delta: Wall, CPU and Install of job.Then
	PeakHeap       uint64        // most the heap grew by during the sync
	Disk           int64         // both files afterwards
	PutP99, GetP99 time.Duration // during the sync (full), of the Gets (read)
	Ops            int
	Records        int           // scanned (read)
	RecordsChanged int           // delta
	MaxRSS         int64         // VmHWM
	ProcCPU        time.Duration // the whole process, from the kernel
}

const childEnv = "DELTASYNC_DEVICE_CHILD"

// runChild runs job in a process of its own and returns what it measured,
// with its peak RSS and CPU as the kernel counted them.
func runChild(b testing.TB, job childJob) childFigures {
	b.Helper()
	js, _ := json.Marshal(job)
	cmd := exec.Command(os.Args[0], "-test.run=^TestDeviceChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("measuring process: %v\n%s", err, out)
	}
	var f childFigures
	i := slices.Index(out, '{')
	if i < 0 || json.NewDecoder(bytes.NewReader(out[i:])).Decode(&f) != nil {
		b.Fatalf("measuring process printed %s", out)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		f.ProcCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return f
}

// TestDeviceChild is the measuring process of the device benchmarks; it
// does nothing in a normal test run.
func TestDeviceChild(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("runs as the measuring process of BenchmarkDevice*")
	}
	var job childJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		t.Fatal(err)
	}
	var f childFigures
	defer func() {
		// The kernel's high-water mark of this process's RSS (VmHWM; its
		// rusage would count the parent's memory shared before exec).
		b, _ := os.ReadFile("/proc/self/status")
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
				f.MaxRSS = kb << 10
			}
		}
		js, _ := json.Marshal(f)
		fmt.Printf("%s\n", js)
	}()
	switch job.Mode {
	case "full":
		f = childFullSync(t, job)
	case "delta":
		if job.Profile != "" {
			f = childProfile(t, job)
			break
		}
		f = childDelta(t, job)
	case "read":
		f = childRead(t, job)
	}
}

// fileTransport answers each request with the pack in a file, streamed:
// the first with names[0], the next with names[1], the last one again and
// again.
type fileTransport struct {
	names  []string
	served *atomic.Int32
	asked  func() // called when a request is made
}

func (p fileTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	if p.asked != nil {
		p.asked()
	}
	i := min(int(p.served.Add(1))-1, len(p.names)-1)
	f, err := os.Open(p.names[i])
	if err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: req,
		Header: http.Header{"Content-Type": {wire.ContentTypeDelta}}, Body: f, ContentLength: -1,
	}, nil
}

func openWithPack(t *testing.T, dir, pack string, asked ...func()) *Client {
	t.Helper()
	return openWithPacks(t, dir, []string{pack}, asked...)
}

// openWithPacks opens dir with a fileTransport of packs.
func openWithPacks(t *testing.T, dir string, packs []string, asked ...func()) *Client {
	t.Helper()
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = "http://device.invalid", "token"
	tr := fileTransport{names: packs, served: new(atomic.Int32)}
	if len(asked) > 0 {
		tr.asked = asked[0]
	}
	opts.HTTPClient = &http.Client{Transport: tr}
	c, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readKeys(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for len(b) > 0 {
		i := slices.Index(b, '\n')
		keys, b = append(keys, string(b[:i])), b[i+1:]
	}
	return keys
}

// uiEvery is how often the UI of the benchmark makes a Put and a Get
// during an install: 200 of each a second, far more than a person makes
// (each edit is a transaction of its own, and bbolt's leaves it copies are
// garbage the install's heap then grows by).
const uiEvery = 5 * time.Millisecond

// childFullSync runs one full sync into job.Dir with a Put and a Get
// every uiEvery meanwhile.
func childFullSync(t *testing.T, job childJob) childFigures {
	keys := readKeys(t, job.Keys)
	c := openWithPack(t, job.Dir, job.Pack)
	var f childFigures
	heap := watchHeap()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var putLat, getLat []time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(uiEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			t0 := time.Now()
			if err := c.Put(fmt.Sprintf("ui/%06d", i), []byte(`{"note":"typed during the install"}`)); err != nil {
				t.Error(err)
				return
			}
			t1 := time.Now()
			c.Get(keys[rng.IntN(len(keys))])
			putLat, getLat = append(putLat, t1.Sub(t0)), append(getLat, time.Since(t1))
		}
	}()
	cpu0, t0 := cpuTime(), time.Now()
	res, err := c.Pull(context.Background())
	f.Wall, f.CPU = time.Since(t0), cpuTime()-cpu0
	close(stop)
	wg.Wait()
	f.PeakHeap = heap.stop()
	if err != nil || !res.Full {
		t.Fatalf("full sync: %+v, %v", res, err)
	}
	f.PutP99, f.GetP99, f.Ops = p99(putLat), p99(getLat), len(putLat)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	f.Disk = dirSize(t, job.Dir)
	return f
}

// childDelta pulls a delta onto job.Dir, the first thing the process
// does after Open; then job.Then, if set.
func childDelta(t *testing.T, job childJob) childFigures {
	var asked, installed time.Time
	c := openWithPacks(t, job.Dir, []string{job.Pack, job.Then}, func() { asked = time.Now() })
	defer c.Close()
	c.onInstalled = func(installedChange) { installed = time.Now() }
	pull := func() childFigures {
		var f childFigures
		cpu0, t0 := cpuTime(), time.Now()
		res, err := c.Pull(context.Background())
		f.Wall, f.CPU, f.Install = time.Since(t0), cpuTime()-cpu0, installed.Sub(asked)
		if err != nil || res.Full {
			t.Fatalf("delta: %+v, %v", res, err)
		}
		f.RecordsChanged = res.RecordsChanged
		return f
	}
	f := pull()
	if job.Then != "" {
		warm := pull()
		f.Warm = &warm
	}
	return f
}

// childProfile runs childDelta job.Repeat times, each on a fresh copy of
// job.Dir, under the CPU profiler (see childJob.Profile).
func childProfile(t *testing.T, job childJob) childFigures {
	cpuf, err := os.Create(job.Profile + ".cpu")
	if err != nil {
		t.Fatal(err)
	}
	defer cpuf.Close()
	runtime.MemProfileRate = 4096
	if err := pprof.StartCPUProfile(cpuf); err != nil {
		t.Fatal(err)
	}
	var f childFigures
	for range job.Repeat {
		dir := t.TempDir()
		copyFiles(t, job.Dir, dir)
		one := job
		one.Dir = dir
		pprof.Do(context.Background(), pprof.Labels("phase", "pull"), func(context.Context) { f = childDelta(t, one) })
		fmt.Fprintf(os.Stderr, "pull %v install %v cpu %v; warm pull %v install %v cpu %v\n", f.Wall, f.Install, f.CPU, f.Warm.Wall, f.Warm.Install, f.Warm.CPU)
		os.RemoveAll(dir)
	}
	pprof.StopCPUProfile()
	memf, err := os.Create(job.Profile + ".mem")
	if err != nil {
		t.Fatal(err)
	}
	defer memf.Close()
	if err := pprof.Lookup("allocs").WriteTo(memf, 0); err != nil {
		t.Fatal(err)
	}
	return f
}

// childRead makes job.Gets Gets of random keys and one Scan of job.Dir.
func childRead(t *testing.T, job childJob) childFigures {
	keys := readKeys(t, job.Keys)
	c := openWithPack(t, job.Dir, job.Pack)
	defer c.Close()
	var f childFigures
	rng := rand.New(rand.NewPCG(3, 4))
	lat := make([]time.Duration, 0, job.Gets)
	for range job.Gets {
		t0 := time.Now()
		if _, err := c.Get(keys[rng.IntN(len(keys))]); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	f.GetP99 = p99(lat)
	cpu0, t0 := cpuTime(), time.Now()
	err := c.Scan("", func(string, []byte) bool { f.Records++; return true })
	f.Wall, f.CPU = time.Since(t0), cpuTime()-cpu0
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// BenchmarkDeviceFullSync reports, per full sync: records per second of
// client CPU (the Puts and Gets made meanwhile included), CPU seconds,
// the process's peak RSS and the heap's growth, disk bytes per stream
// byte, and the p99 of Put and Get during the install.
func BenchmarkDeviceFullSync(b *testing.B) {
	fixtures := newDeviceFixtures(b)
	for _, size := range deviceSizes() {
		b.Run(sizeName(size), func(b *testing.B) {
			fx := fixtures.get(b, size)
			var cpu time.Duration
			var worst childFigures
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				dir := b.TempDir()
				b.StartTimer()
				f := runChild(b, childJob{Mode: "full", Pack: fx.full, Dir: dir, Keys: fx.keys})
				cpu += f.CPU
				worst.MaxRSS, worst.PeakHeap = max(worst.MaxRSS, f.MaxRSS), max(worst.PeakHeap, f.PeakHeap)
				worst.Disk = max(worst.Disk, f.Disk)
				worst.PutP99, worst.GetP99 = max(worst.PutP99, f.PutP99), max(worst.GetP99, f.GetP99)
			}
			b.SetBytes(fx.streamLen)
			b.ReportMetric(float64(fx.records)*float64(b.N)/cpu.Seconds(), "records/cpu-s")
			b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
			b.ReportMetric(float64(worst.MaxRSS)/1e6, "peak-rss-MB")
			b.ReportMetric(float64(worst.PeakHeap)/1e6, "peak-heap-MB")
			b.ReportMetric(float64(worst.Disk)/float64(fx.streamLen), "disk/stream")
			b.ReportMetric(float64(worst.PutP99)/1e6, "put-p99-ms")
			b.ReportMetric(float64(worst.GetP99)/1e6, "get-p99-ms")
		})
	}
}

// BenchmarkDeviceOneRecordDelta installs a delta of one changed record on
// a synced copy of the data set, in a fresh process each time, and
// reports medians (and the p90 of the first pull's times): the Pull call,
// the install (from the request to the version switched: the pack is read
// from a file) and the CPU; then the same of a second one-record delta in
// that process (warm-*: an app that runs already, its code and the file's
// pages touched once).
//
// DELTASYNC_DELTA_PROFILE=path runs b.N processes under the profilers
// instead (path-64MB-NNN.cpu and .mem; see childJob.Profile).
func BenchmarkDeviceOneRecordDelta(b *testing.B) {
	fixtures := newDeviceFixtures(b)
	for _, size := range deviceSizes() {
		b.Run(sizeName(size), func(b *testing.B) {
			fx := fixtures.get(b, size)
			if prof := os.Getenv("DELTASYNC_DELTA_PROFILE"); prof != "" {
				// Processes of one pull each (a first pull's costs are a
				// new process's), merged by
				// go tool pprof -tagfocus=phase=pull path-64MB-*.cpu.
				for i := range b.N {
					runChild(b, childJob{Mode: "delta", Pack: fx.delta, Then: fx.delta2, Dir: fx.synced, Profile: fmt.Sprintf("%s-%s-%03d", prof, sizeName(size), i), Repeat: 1})
				}
				b.ReportMetric(0, "ns/op")
				return
			}
			var wall, cpu, install, wwall, wcpu, winstall []time.Duration
			for range b.N {
				dir := b.TempDir()
				copyFiles(b, fx.synced, dir)
				f := runChild(b, childJob{Mode: "delta", Pack: fx.delta, Then: fx.delta2, Dir: dir})
				if f.RecordsChanged != 1 || f.Warm == nil || f.Warm.RecordsChanged != 1 {
					b.Fatalf("deltas changed %d and %+v records", f.RecordsChanged, f.Warm)
				}
				wall, cpu, install = append(wall, f.Wall), append(cpu, f.CPU), append(install, f.Install)
				wwall, wcpu, winstall = append(wwall, f.Warm.Wall), append(wcpu, f.Warm.CPU), append(winstall, f.Warm.Install)
			}
			ms := func(d []time.Duration) float64 { return float64(median(d).Microseconds()) / 1e3 }
			p90 := func(d []time.Duration) float64 { return float64(quantile(d, 0.9).Microseconds()) / 1e3 }
			b.ReportMetric(ms(wall), "pull-ms")
			b.ReportMetric(p90(wall), "pull-p90-ms")
			b.ReportMetric(ms(install), "install-ms")
			b.ReportMetric(p90(install), "install-p90-ms")
			b.ReportMetric(ms(cpu), "cpu-ms")
			b.ReportMetric(ms(wwall), "warm-pull-ms")
			b.ReportMetric(ms(winstall), "warm-install-ms")
			b.ReportMetric(ms(wcpu), "warm-cpu-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkDeviceRead: the p99 of Gets of random keys, and a Scan of the
// whole synced version.
func BenchmarkDeviceRead(b *testing.B) {
	fixtures := newDeviceFixtures(b)
	for _, size := range deviceSizes() {
		b.Run(sizeName(size), func(b *testing.B) {
			fx := fixtures.get(b, size)
			var worst time.Duration
			var scan time.Duration
			for range b.N {
				f := runChild(b, childJob{Mode: "read", Dir: fx.synced, Keys: fx.keys, Gets: 2000})
				if f.Records < fx.records {
					b.Fatalf("scanned %d records of %d", f.Records, fx.records)
				}
				worst, scan = max(worst, f.GetP99), scan+f.Wall
			}
			b.ReportMetric(float64(worst.Microseconds()), "get-p99-µs")
			b.ReportMetric(float64(fx.streamLen)*float64(b.N)/scan.Seconds()/1e6, "scan-MB/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func median(d []time.Duration) time.Duration { return quantile(d, 0.5) }

// quantile is the q-quantile of d (nearest rank, rounded down).
func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(int(float64(len(s))*q), len(s)-1)]
}

func p99(lat []time.Duration) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[len(s)*99/100]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func dirSize(tb testing.TB, dir string) int64 {
	tb.Helper()
	var n int64
	for _, f := range []string{StateFile, DataFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			tb.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

func copyFiles(tb testing.TB, from, to string) {
	tb.Helper()
	for _, f := range []string{StateFile, DataFile} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err == nil {
			err = writeSynced(filepath.Join(to, f), b)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// writeSynced writes a file and syncs it: a device's state files were
// written long before, and a measurement must not pay for flushing a copy.
func writeSynced(name string, b []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// heapWatch samples the heap (runtime/metrics: no stop-the-world) and
// keeps how far it grew past where it started.
type heapWatch struct {
	stopc chan struct{}
	done  chan uint64
}

func watchHeap() *heapWatch {
	h := &heapWatch{stopc: make(chan struct{}), done: make(chan uint64)}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	start := read()
	go func() {
		peak := start
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stopc:
				h.done <- max(peak, read()) - start
				return
			case <-tick.C:
				peak = max(peak, read())
			}
		}
	}()
	return h
}

func (h *heapWatch) stop() uint64 {
	close(h.stopc)
	return <-h.done
}

// TestBigDeviceFootprint is issue 13's acceptance for memory and disk,
// measured as BenchmarkDeviceFullSync does: a full sync of 64 MB, in a
// process of its own with a Put and a Get every millisecond, peaks under
// 100 MB of RSS and leaves at most 1.5 bytes on disk per byte of
// canonical stream (less: chunks are compressed), and the state checks
// out. (Time is measured by the benchmark only.)
func TestBigDeviceFootprint(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("64 MB acceptance test: run without -race/-short (scripts/test does)")
	}
	fx := newDeviceFixtures(t).get(t, 64<<20)
	dir := t.TempDir()
	f := runChild(t, childJob{Mode: "full", Pack: fx.full, Dir: dir, Keys: fx.keys})
	t.Logf("64 MB full sync: peak RSS %.1f MB, heap grew %.1f MB, disk %.2f of the stream, CPU %v, %d Puts meanwhile (p99 %v)",
		float64(f.MaxRSS)/1e6, float64(f.PeakHeap)/1e6, float64(f.Disk)/float64(fx.streamLen), f.CPU, f.Ops, f.PutP99)
	if f.MaxRSS >= 100e6 || f.MaxRSS == 0 {
		t.Errorf("peak RSS %d bytes, want under 100 MB", f.MaxRSS)
	}
	if ratio := float64(f.Disk) / float64(fx.streamLen); ratio > 1.0 {
		t.Errorf("%d bytes on disk for a stream of %d: %.2f, want under 1 (chunks compressed)", f.Disk, fx.streamLen, ratio)
	}
	if r, err := Check(dir, CheckOptions{}); err != nil || r.Records != uint64(fx.records) {
		t.Errorf("check: %+v, %v", r, err)
	}
}
