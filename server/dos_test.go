package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
	"github.com/deltasync/deltasync/wire"
)

// rawRequest builds a raw HTTP/1.1 request: the request line, the given
// header lines, and body (sent as it is, whatever Content-Length says).
func rawRequest(method, path string, headers []string, body string) []byte {
	s := method + " " + path + " HTTP/1.1\r\nHost: deltasync.test\r\n"
	for _, h := range headers {
		s += h + "\r\n"
	}
	return []byte(s + "\r\n" + body)
}

// badZstdWindow is a zstd frame header asking for a 2 TiB window, then
// garbage: not a valid zstd body, and nothing that says it is too large.
var badZstdWindow = []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 1, 2, 3, 4, 5, 6, 7, 8}

// hostileBodyCases: bodies refused from the headers alone (before a byte
// of them is read, Expect: 100-continue answered with the final status)
// and bodies that are not what they claim to be.
func hostileBodyCases(t *testing.T) []hostileCase {
	tok := userToken(t, hostileEnvOrg, hostileEnvUser)
	auth := "Authorization: Bearer " + tok
	const huge = 80 << 20 // over every patch limit, under the data set limit
	cl := func(n int64) string { return fmt.Sprintf("Content-Length: %d", n) }
	expect := "Expect: 100-continue"
	dataset := "/v1/admin/orgs/" + hostileEnvOrg + "/users/bob/dataset"
	return []hostileCase{
		{name: "bad JSON patch", method: "POST", path: "/v1/patches", body: []byte(`{"id":`),
			opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "oversize by Content-Length alone", status: 413, code: "too_large",
			raw: rawRequest("POST", "/v1/patches", []string{auth, cl(huge)}, "")},
		{name: "oversize by Content-Length alone, beyond every limit", status: 413, code: "too_large",
			raw: rawRequest("POST", "/v1/patches", []string{auth, cl(1 << 50)}, "")},
		{name: "oversize by Content-Length alone, no token", status: 401, code: "unauthorized",
			raw: rawRequest("POST", "/v1/patches", []string{cl(huge)}, "")},
		{name: "multipart form by Content-Length alone, no token", status: 401, code: "unauthorized",
			raw: rawRequest("POST", "/v1/patches", []string{"Content-Type: multipart/form-data; boundary=xyz", cl(huge)}, "")},
		{name: "expect 100-continue, no token", status: 401, code: "unauthorized",
			raw: rawRequest("POST", "/v1/patches", []string{expect, cl(100)}, "")},
		{name: "expect 100-continue, chunked, no token", status: 401, code: "unauthorized",
			raw: rawRequest("POST", "/v1/patches", []string{expect, "Transfer-Encoding: chunked"}, "")},
		{name: "expect 100-continue, user token on admin route", status: 403, code: "forbidden",
			raw: rawRequest("PUT", dataset, []string{expect, auth, cl(100)}, "")},
		{name: "expect 100-continue, oversize", status: 413, code: "too_large",
			raw: rawRequest("POST", "/v1/patches", []string{expect, auth, cl(huge)}, "")},
		{name: "expect 100-continue, oversize zstd", status: 413, code: "too_large",
			raw: rawRequest("POST", "/v1/patches", []string{expect, auth, "Content-Encoding: zstd", cl(huge)}, "")},
		{name: "expect 100-continue, unknown route", status: 404, code: "not_found",
			raw: rawRequest("POST", "/v1/nothing", []string{expect, auth, cl(100)}, "")},
		{name: "invalid zstd", method: "POST", path: "/v1/patches", body: badZstdWindow,
			opts: []reqOpt{withToken(tok), withHeader("Content-Encoding", "zstd")}, status: 400, code: "bad_request"},
	}
}

// newTCPEnv is newTestEnv on a real loopback TCP listener, for what
// in-memory connections lack: a socket to peek at (the client watch) and a
// remote address (the per-address limit).
func newTCPEnv(t *testing.T, cfg envConfig) (*testEnv, string) {
	t.Helper()
	e := newEnvServer(t, cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serveUntilCleanup(t, e.s, ln)
	e.client = &fasthttp.Client{Dial: func(string) (net.Conn, error) { return net.Dial("tcp", addr) }, MaxResponseBodySize: 1 << 20}
	return e, addr
}

// readAnswer reads one HTTP answer from c, skipping none: an interim
// "100 Continue" is returned as it is.
func readAnswer(t *testing.T, c net.Conn) (int, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		t.Fatalf("read answer: %v", err)
	}
	line, _, _ := strings.Cut(string(b), "\r\n")
	var status int
	fmt.Sscanf(line, "HTTP/1.1 %d", &status)
	return status, string(b)
}

// waitUntil polls cond until it holds, failing the test after a generous
// bound.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

// TestSlowlorisConnectionsAreClosed: a connection that sends nothing, or
// only part of its headers, is closed after HeaderTimeout (not after
// ReadTimeout, which is meant for whole uploads).
func TestSlowlorisConnectionsAreClosed(t *testing.T) {
	_, addr := newTCPEnv(t, envConfig{opts: func(o *Options) {
		o.HeaderTimeout = 300 * time.Millisecond
		o.ReadTimeout = time.Hour
		o.IdleTimeout = time.Hour
	}})
	for name, sent := range map[string]string{
		"silent":               "",
		"partial request line": "GET /healt",
		"partial headers":      "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, sent); err != nil {
				t.Fatal(err)
			}
			status, answer := readAnswer(t, c)
			if status != 408 || !strings.Contains(answer, "Connection: close") {
				t.Fatalf("the server answered a slowloris connection %q, want 408 and closed", answer)
			}
		})
	}
}

// TestHeaderTimeoutSparesSlowBodies: a body may take longer than
// HeaderTimeout (it has ReadTimeout); and a keep-alive connection may idle
// longer than HeaderTimeout between requests (it has IdleTimeout).
func TestHeaderTimeoutSparesSlowBodies(t *testing.T) {
	const headerTimeout = 200 * time.Millisecond
	_, addr := newTCPEnv(t, envConfig{setup: bodyRoutes, opts: func(o *Options) {
		o.HeaderTimeout = headerTimeout
		o.ReadTimeout = time.Hour
		o.IdleTimeout = time.Hour
	}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := "0123456789"
	io.WriteString(c, "POST /test/body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
	for i := range body {
		time.Sleep(headerTimeout / 2) // a slow phone: the body takes 5x HeaderTimeout
		io.WriteString(c, body[i:i+1])
	}
	br := bufio.NewReader(c)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if err := resp.Read(br); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("slow body: %v %d %s", err, resp.StatusCode(), resp.Body())
	}
	time.Sleep(2 * headerTimeout) // idle between requests, within IdleTimeout
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if err := resp.Read(br); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("second request on the idle connection: %v %d", err, resp.StatusCode())
	}
}

// TestConnectionLimits: over MaxConns a new connection is answered 503
// with a JSON error and closed; over MaxConnsPerIP, 429; once a connection
// closes, a new one is served again.
func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name            string
		maxConns, perIP int
		status          int
		code            string
		limit           string
	}{
		{"max conns", 3, 0, 503, "unavailable", "max_conns"},
		{"max conns per ip", 100, 3, 429, "rate_limited", "max_conns_per_ip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, addr := newTCPEnv(t, envConfig{opts: func(o *Options) {
				o.MaxConns, o.MaxConnsPerIP = tc.maxConns, tc.perIP
				o.HeaderTimeout = time.Hour
			}})
			var held []net.Conn
			for range 3 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				held = append(held, c)
			}
			waitUntil(t, "3 connections are open", func() bool { return gauge(t, e.s.guards.connsOpen) == 3 })
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			status, answer := readAnswer(t, c)
			if status != tc.status || !strings.Contains(answer, `"code":"`+tc.code+`"`) || !strings.Contains(answer, "Retry-After: 1") {
				t.Fatalf("over the limit: %q, want %d %s with Retry-After", answer, tc.status, tc.code)
			}
			if n := counter(t, e.s.guards.connsRefused.WithLabelValues(tc.limit)); n != 1 {
				t.Errorf("refused connections counted %v, want 1", n)
			}
			held[0].Close()
			waitUntil(t, "a connection is served again", func() bool {
				r, err := e.tryDo("GET", "/healthz")
				return err == nil && r.status == 200
			})
		})
	}
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// tryDo is do without failing the test on a transport error.
func (e *testEnv) tryDo(method, path string, opts ...reqOpt) (response, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://deltasync.test" + path)
	for _, o := range opts {
		o(req)
	}
	if err := e.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		return response{}, err
	}
	r := response{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...), header: map[string]string{}}
	for k, v := range resp.Header.All() {
		r.header[string(k)] = string(v)
	}
	return r, nil
}

// emfileListener fails Accept with EMFILE (out of file descriptors) n
// times before each real connection, as a process at its descriptor limit
// does.
type emfileListener struct {
	net.Listener
	n     int
	fails atomic.Int64
	left  int
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.left > 0 {
		l.left--
		l.fails.Add(1)
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	c, err := l.Listener.Accept()
	l.left = l.n
	return c, err
}

// TestServeSurvivesRunningOutOfDescriptors: Accept failing with EMFILE
// does not end Serve (fasthttp alone returns the error, and serve exits);
// the server backs off, retries and serves the next connections.
func TestServeSurvivesRunningOutOfDescriptors(t *testing.T) {
	opts := DefaultOptions()
	opts.Store, opts.JWTSecret = memstore.New(), testSecret
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mem := fasthttputil.NewInmemoryListener()
	ln := &emfileListener{Listener: mem, n: 3, left: 3}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	for i := range 3 {
		client := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return mem.Dial() }} // a connection each
		status, _, err := client.GetTimeout(nil, "http://x/healthz", 20*time.Second)
		if err != nil || status != 200 {
			t.Fatalf("request %d after EMFILE: %d %v", i, status, err)
		}
		select {
		case err := <-done:
			t.Fatalf("Serve returned after EMFILE: %v", err)
		default:
		}
	}
	if got := counter(t, s.guards.acceptErrors); got < 9 {
		t.Errorf("accept errors counted %v, want at least 9", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestDefaultMaxConnsLeavesDescriptorsForTheStore(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{{0, 1}, {34, 1}, {64, 16}, {256, 112}, {1024, 496}, {1 << 20, (1<<20 - 32) / 2}, {1 << 40, 1 << 20}} {
		if got := maxConnsFor(tc.nofile); got != tc.want {
			t.Errorf("maxConnsFor(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
	}
	if n := DefaultMaxConns(); n < 1 {
		t.Errorf("DefaultMaxConns() = %d", n)
	}
}

// hangingStore passes calls through until a test sets hang; from then on
// every call hang selects blocks until its context ends (honourCtx, as
// minio-go against a stopped S3 server) or until the test ends (a backend
// that ignores cancellation, such as a dead NFS mount). The selector sits
// behind an atomic pointer: tests change it while the server runs.
type hangingStore struct {
	*storetest.Faults
	hang      atomic.Pointer[func(op storetest.Op, key string) bool]
	honourCtx bool
	release   chan struct{}
	entered   atomic.Int64
}

func newHangingStore(t *testing.T, base snapshot.Store, honourCtx bool) *hangingStore {
	h := &hangingStore{Faults: storetest.Wrap(base), honourCtx: honourCtx, release: make(chan struct{})}
	h.Before = h.wait
	t.Cleanup(func() { close(h.release) })
	return h
}

func (h *hangingStore) hangOn(sel func(op storetest.Op, key string) bool) { h.hang.Store(&sel) }

func (h *hangingStore) wait(ctx context.Context, op storetest.Op, key string) error {
	sel := h.hang.Load()
	if sel == nil || !(*sel)(op, key) {
		return nil
	}
	h.entered.Add(1)
	if h.honourCtx {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.release:
		}
	}
	<-h.release
	return errors.New("hanging store released")
}

// TestHungStoreAnswers503: with the store hung, every kind of request
// (user and admin, reads and writes, the long poll) answers 503 with
// Retry-After and a JSON error, whether the org settings are cached or
// must be read, and whether the backend honours cancellation or not.
func TestHungStoreAnswers503(t *testing.T) {
	for _, honour := range []bool{true, false} {
		for _, ttl := range []time.Duration{0, time.Hour} {
			t.Run(fmt.Sprintf("honours ctx %v, settings ttl %v", honour, ttl), func(t *testing.T) {
				testHungStoreAnswers503(t, honour, ttl)
			})
		}
	}
}

func testHungStoreAnswers503(t *testing.T, honour bool, settingsTTL time.Duration) {
	hs := newHangingStore(t, memstore.New(), honour)
	e := newTestEnv(t, envConfig{store: hs, opts: func(o *Options) {
		o.StoreTimeout = 100 * time.Millisecond
		o.SettingsTTL, o.HeadCacheTTL = settingsTTL, 0
	}})
	e.enableOrg("acme")
	e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3}))
	tok, adm := withToken(userToken(t, "acme", "alice")), withToken(adminToken(t))
	patch := []byte(`{"id":"p1","base":1,"ops":[{"op":"put","key":"k/1","value":1}]}`)
	hs.hangOn(func(storetest.Op, string) bool { return true })
	for _, tc := range []struct {
		method, path string
		body         []byte
		opts         []reqOpt
	}{
		{"GET", "/v1/status", nil, []reqOpt{tok}},
		{"GET", "/v1/sync?from=0", nil, []reqOpt{tok}},
		{"GET", "/v1/sync?from=1&wait=30s", nil, []reqOpt{tok}},
		{"POST", "/v1/patches", patch, []reqOpt{tok}},
		{"GET", "/v1/admin/orgs/acme", nil, []reqOpt{adm}},
		{"PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode":true}`), []reqOpt{adm}},
		{"PUT", "/v1/admin/orgs/acme/users/bob/dataset", []byte(`{"key":"a","value":1}` + "\n"), []reqOpt{adm}},
		{"GET", "/v1/admin/changes", nil, []reqOpt{adm}},
	} {
		r := e.do(tc.method, tc.path, tc.body, tc.opts...)
		if r.status != 503 {
			t.Errorf("%s %s: %d %s, want 503", tc.method, tc.path, r.status, r.body)
			continue
		}
		if d := r.errBody(t); d.Code != "unavailable" {
			t.Errorf("%s %s: code %q", tc.method, tc.path, d.Code)
		}
		if r.header["Retry-After"] == "" {
			t.Errorf("%s %s: 503 without Retry-After", tc.method, tc.path)
		}
	}
	if n := counterVecSum(t, e.s.guards.storeTimeouts); n == 0 {
		t.Error("no store timeout counted")
	}
	// A request that needs no store still answers.
	if r := e.do("GET", "/healthz", nil); r.status != 200 {
		t.Errorf("healthz with the store hung: %d", r.status)
	}
}

func counterVecSum(t *testing.T, v *prometheus.CounterVec) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	v.Collect(ch)
	close(ch)
	sum := 0.0
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		sum += d.GetCounter().GetValue()
	}
	return sum
}

// TestSecretLoadIsSharedWhileTheStoreHangs: requests that need the chunk
// secret while the store hangs share one load and its failure, instead of
// queueing to ask the hung store one after the other (the last of n would
// wait n deadlines, and the store would be asked n times).
func TestSecretLoadIsSharedWhileTheStoreHangs(t *testing.T) {
	mem := memstore.New()
	setup := newTestEnv(t, envConfig{store: mem})
	setup.enableOrg("acme")
	setup.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3}))

	// A fresh replica, which has not loaded the secret yet.
	hs := newHangingStore(t, mem, false)
	e := newTestEnv(t, envConfig{store: hs, opts: func(o *Options) { o.StoreTimeout = time.Second }})
	hs.hangOn(func(_ storetest.Op, key string) bool { return key == snapshot.SecretKey })
	tok := withToken(userToken(t, "acme", "alice"))
	const n = 6
	answers := make(chan int, n)
	for range n {
		go func() {
			r, err := e.tryDo("GET", "/v1/sync?from=0", tok)
			if err != nil {
				r.status = -1
			}
			answers <- r.status
		}()
	}
	for range n {
		if status := <-answers; status != 503 {
			t.Errorf("sync while the secret cannot be read: %d, want 503", status)
		}
	}
	if got := hs.entered.Load(); got >= n {
		t.Errorf("%d concurrent requests asked the hung store for the secret %d times; they should share a load", n, got)
	}
}

// TestClientLeavingCancelsItsLongPoll: a client that closes its
// connection during a long poll frees the server's waiter at once, not
// when the wait would have ended.
func TestClientLeavingCancelsItsLongPoll(t *testing.T) {
	e, addr := newTCPEnv(t, envConfig{opts: func(o *Options) { o.LongPollMax = time.Hour }})
	e.enableOrg("acme")
	v := e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /v1/sync?from=%d&wait=1h HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", v, userToken(t, "acme", "alice"))
	waitUntil(t, "the long poll waits", func() bool { return gauge(t, e.s.metrics.inFlight) == 1 })
	c.Close()
	waitUntil(t, "the server drops the abandoned long poll", func() bool { return gauge(t, e.s.metrics.inFlight) == 0 })
	if n := counter(t, e.s.guards.clientsGone); n != 1 {
		t.Errorf("abandoned requests counted %v, want 1", n)
	}
}

// commitLate makes a store that, when a patch commits its version (the
// create-only write of key), tells the test (reached) and waits for its go
// (proceed); then the write lands even though the request's context has
// ended, as an S3 write already sent lands after its client gave up on it,
// and its outcome goes to landed.
func commitLate(base snapshot.Store, key string, reached, proceed chan struct{}, landed chan error) *storetest.Faults {
	f := storetest.Wrap(base)
	f.PutIfAbsentFunc = func(ctx context.Context, k string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
		if k != key {
			return base.PutIfAbsent(ctx, k, r, size)
		}
		data, err := io.ReadAll(r) // the request is on its way
		if err != nil {
			return snapshot.ObjectInfo{}, err
		}
		close(reached)
		<-proceed
		info, err := base.PutIfAbsent(context.WithoutCancel(ctx), k, bytes.NewReader(data), size)
		landed <- err
		return info, err
	}
	return f
}

// TestPatchCommittedAfterItsClientLeftAnswersTheRetry: the client of a
// patch leaves while the version is being committed; the server cancels
// its work, but the commit lands anyway. The retry with the same patch id
// gets the stored answer (duplicate, the same version) and the patch is
// applied once.
func TestPatchCommittedAfterItsClientLeftAnswersTheRetry(t *testing.T) {
	mem := memstore.New()
	reached, proceed, landed := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	cl := commitLate(mem, snapshot.ManifestKey("acme", "alice", 2), reached, proceed, landed)
	e, addr := newTCPEnv(t, envConfig{store: cl})
	e.enableOrg("acme")
	e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3}))
	tok := userToken(t, "acme", "alice")
	patch := `{"id":"left-early","base":1,"ops":[{"op":"put","key":"k/left","value":{"n":1}}]}`

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/patches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", tok, len(patch), patch)
	<-reached
	c.Close()
	waitUntil(t, "the server notices the client left", func() bool { return counter(t, e.s.guards.clientsGone) == 1 })
	close(proceed)
	if err := <-landed; err != nil {
		t.Fatalf("the late commit did not land: %v", err)
	}
	waitUntil(t, "the abandoned request ends", func() bool { return gauge(t, e.s.metrics.inFlight) == 0 })

	r := e.do("POST", "/v1/patches", []byte(patch), withToken(tok))
	if r.status != 200 {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
	var res wire.PatchResponse
	if err := json.Unmarshal(r.body, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Duplicate || res.Version != 2 {
		t.Errorf("retry answered %+v, want the stored answer: duplicate, version 2", res)
	}
	if h, err := snapshot.Head(t.Context(), mem, "acme", "alice"); err != nil || h != 2 {
		t.Errorf("head = %d (%v), want 2: the patch must be applied once", h, err)
	}
}

// TestPatchCancelledBeforeCommitAppliesOnceOnRetry: the client of a patch
// leaves before the commit; the server stops (nothing is committed) and
// the retry applies the patch, once.
func TestPatchCancelledBeforeCommitAppliesOnceOnRetry(t *testing.T) {
	mem := memstore.New()
	hs := newHangingStore(t, mem, true)
	// No store deadline in reach: only the client's leaving ends the wait.
	e, addr := newTCPEnv(t, envConfig{store: hs, opts: func(o *Options) { o.StoreTimeout = time.Hour }})
	e.enableOrg("acme")
	e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3}))
	tok := userToken(t, "acme", "alice")
	patch := `{"id":"gone-before","base":1,"ops":[{"op":"put","key":"k/gone","value":{"n":1}}]}`
	manifest2 := snapshot.ManifestKey("acme", "alice", 2)
	hs.hangOn(func(op storetest.Op, key string) bool { return key == manifest2 && op == storetest.OpPutIfAbsent })

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/patches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", tok, len(patch), patch)
	waitUntil(t, "the patch is committing", func() bool { return hs.entered.Load() == 1 })
	c.Close()
	waitUntil(t, "the abandoned request ends", func() bool { return gauge(t, e.s.metrics.inFlight) == 0 })
	if h, _ := snapshot.Head(t.Context(), mem, "acme", "alice"); h != 1 {
		t.Fatalf("head = %d after the cancelled patch, want 1", h)
	}
	hs.hangOn(func(storetest.Op, string) bool { return false })
	r := e.do("POST", "/v1/patches", []byte(patch), withToken(tok))
	var res wire.PatchResponse
	if r.status != 200 || json.Unmarshal(r.body, &res) != nil || res.Version != 2 || !res.Created {
		t.Fatalf("retry: %d %s, want version 2 created", r.status, r.body)
	}
	if r := e.do("POST", "/v1/patches", []byte(patch), withToken(tok)); !strings.Contains(string(r.body), `"duplicate":true`) {
		t.Errorf("second retry: %d %s, want the stored answer", r.status, r.body)
	}
	if h, _ := snapshot.Head(t.Context(), mem, "acme", "alice"); h != 2 {
		t.Errorf("head = %d, want 2", h)
	}
}

// zeros is an endless source of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestOversizeBodyIsRefusedBeforeItIsSent: an 80 MB patch is refused from
// its headers. A client that asks "Expect: 100-continue" (Go's net/http
// with ExpectContinueTimeout) gets the 413 instead of "100 Continue" and
// sends none of its body; one that does not ask gets the 413 too, not a
// reset, and the server reads at most a little of it.
func TestOversizeBodyIsRefusedBeforeItIsSent(t *testing.T) {
	e, addr := newTCPEnv(t, envConfig{})
	e.enableOrg("acme")
	tok := userToken(t, "acme", "alice")
	const size = 80 << 20
	for _, expect := range []bool{true, false} {
		t.Run(fmt.Sprintf("expect %v", expect), func(t *testing.T) {
			body := &countingBody{r: io.LimitReader(zeros{}, size)}
			req, err := http.NewRequest("POST", "http://"+addr+"/v1/patches", body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = size
			req.Header.Set("Authorization", "Bearer "+tok)
			tr := &http.Transport{}
			if expect {
				req.Header.Set("Expect", "100-continue")
				tr.ExpectContinueTimeout = time.Minute
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Do(req)
			if err != nil {
				t.Fatalf("the client got no answer: %v", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 413 || !strings.Contains(string(b), `"too_large"`) {
				t.Fatalf("answer %d %s, want 413 too_large", resp.StatusCode, b)
			}
			sent := body.n.Load()
			if expect && sent != 0 {
				t.Errorf("the client sent %d body bytes after asking to continue", sent)
			}
			if sent >= size/2 {
				t.Errorf("the client sent %d of %d bytes before it was refused", sent, size)
			}
		})
	}
}

type countingBody struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestZstdBodiesThatAreNotZstdAre400: 413 means the body decodes, or its
// frame header says it decodes, to more than the limit; bytes that are not
// valid zstd are 400, whatever window or size their "header" claims. A
// valid body whose window is bigger than the shared decoder's memory is
// decoded (by a streaming decoder) and accepted.
func TestZstdBodiesThatAreNotZstdAre400(t *testing.T) {
	e := newTestEnv(t, envConfig{
		opts:  func(o *Options) { o.MaxPatchBytes = 64 << 10 },
		setup: bodyRoutes,
	})
	zstdEnc := withHeader("Content-Encoding", "zstd")
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		b := make([]byte, 64)
		for j := range b {
			b[j] = byte(rnd.Uint32())
		}
		copy(b, []byte{0x28, 0xb5, 0x2f, 0xfd})
		var h zstd.Header
		declared := h.Decode(b) == nil && h.HasFCS
		for _, path := range []string{"/test/body", "/test/stream", "/test/bigbody"} {
			limit := uint64(testBodyLimit)
			if path == "/test/bigbody" {
				limit = 3 * 64 << 10
			}
			r := e.do("POST", path, b, zstdEnc)
			switch {
			case r.status == 413 && !(declared && h.FrameContentSize > limit):
				t.Errorf("random frame %d (%+v) to %s: 413 %s; only a frame that says it decodes past the limit may be", i, h, path, r.body)
			case r.status != 413 && r.status != 400:
				t.Errorf("random frame %d to %s: %d %s, want 400", i, path, r.status, r.body)
			}
		}
	}
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithWindowSize(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	small := bytes.Repeat([]byte("a small body "), 50)
	enc.Write(small)
	enc.Flush() // the header goes out before the size is known: no content size
	enc.Close()
	var h zstd.Header
	if err := h.Decode(buf.Bytes()); err != nil || h.HasFCS || h.WindowSize <= 64<<10 {
		t.Fatalf("test body: header %+v (%v), want an 8 MiB window and no content size", h, err)
	}
	for _, path := range []string{"/test/body", "/test/stream"} {
		r := e.do("POST", path, buf.Bytes(), zstdEnc)
		var got bodyEcho
		if r.status != 200 || json.Unmarshal(r.body, &got) != nil || got != echoBody(small) {
			t.Errorf("small body with a big window to %s: %d %s", path, r.status, r.body)
		}
	}
}

// TestNoReadTimeoutMeansNone: ReadTimeout 0 leaves a body without a
// deadline; it must not inherit the headers' HeaderTimeout.
func TestNoReadTimeoutMeansNone(t *testing.T) {
	const headerTimeout = 200 * time.Millisecond
	_, addr := newTCPEnv(t, envConfig{setup: bodyRoutes, opts: func(o *Options) {
		o.HeaderTimeout, o.ReadTimeout = headerTimeout, 0
	}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /test/body HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\na")
	time.Sleep(3 * headerTimeout)
	io.WriteString(c, "b")
	if status, answer := readAnswer(t, c); status != 200 {
		t.Fatalf("slow body without a read timeout: %q", answer)
	}
}

// TestExpectContinueAdmitsOnce: a request admitted by its
// "Expect: 100-continue" is authenticated (and rate-limited) once, not
// again when its body arrives.
func TestExpectContinueAdmitsOnce(t *testing.T) {
	e, addr := newTCPEnv(t, envConfig{opts: func(o *Options) { o.RateLimit, o.RateBurst = 0.001, 2 }})
	e.enableOrg("acme")
	e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 4 << 10, Seed: 3}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	patch := `{"id":"expect","base":1,"ops":[{"op":"put","key":"k/e","value":1}]}`
	fmt.Fprintf(c, "POST /v1/patches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n",
		userToken(t, "acme", "alice"), len(patch))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("interim answer %q (%v), want 100 Continue", line, err)
	}
	io.WriteString(c, patch)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := resp.Read(br); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("final answer: %v %d %s", err, resp.StatusCode(), resp.Body())
	}
	// The burst of 2 has one token left after this request: one more
	// request uses it, the next is limited.
	tok := withToken(userToken(t, "acme", "alice"))
	if r := e.do("GET", "/v1/status", nil, tok); r.status != 200 {
		t.Fatalf("status: %d: the Expect request was counted twice", r.status)
	}
	if r := e.do("GET", "/v1/status", nil, tok); r.status != 429 {
		t.Fatalf("status: %d, want 429 (the limit works)", r.status)
	}
}
