package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/deltasync/deltasync/internal/testkit"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
	"github.com/deltasync/deltasync/wire"
)

// testSecret is the HS256 secret of test servers.
var testSecret = []byte("test-secret-0123456789abcdef0123456789")

// testEnv is one server on an in-memory listener with a client dialing it.
type testEnv struct {
	t      *testing.T
	s      *Server
	clock  *testClock        // the server's Options.Now, unless envConfig.opts set its own
	store  *storetest.Faults // wraps envConfig.store: set its fields to inject faults
	ln     *fasthttputil.InmemoryListener
	client *fasthttp.Client
	logs   *testkit.Buffer
}

type envConfig struct {
	store snapshot.Store
	clock *testClock // the server's clock; nil: the real time, moved by testEnv.clock
	opts  func(*Options)
	setup func(*Server) // registers test-only routes before serving
}

func newTestEnv(t *testing.T, cfg envConfig) *testEnv {
	t.Helper()
	e := newEnvServer(t, cfg)
	ln := fasthttputil.NewInmemoryListener()
	e.ln = ln
	serveUntilCleanup(t, e.s, ln)
	e.client = &fasthttp.Client{
		Dial:                func(string) (net.Conn, error) { return ln.Dial() },
		MaxResponseBodySize: 1 << 20,
	}
	return e
}

// newEnvServer builds the server of a test env (not yet serving): cfg's
// store behind a storetest.Faults, the test secret, debug logs kept.
func newEnvServer(t *testing.T, cfg envConfig) *testEnv {
	t.Helper()
	base := cfg.store
	if base == nil {
		base = memstore.New()
	}
	fs := storetest.Wrap(base)
	logs := &testkit.Buffer{}
	opts := DefaultOptions()
	opts.Store = fs
	opts.JWTSecret = testSecret
	opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	clock := cfg.clock
	if clock == nil {
		clock = &testClock{}
	}
	opts.Now = clock.now
	if cfg.opts != nil {
		cfg.opts(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if cfg.setup != nil {
		cfg.setup(s)
	}
	return &testEnv{t: t, s: s, clock: clock, store: fs, logs: logs}
}

// testClock is the one clock tests move by hand instead of sleeping: a
// server's Options.Now, a lease's or a cache's now. With a start it reads
// start plus what add moved it; without (a test env's) it reads the real
// time plus that, so it never runs behind the feed keys and timers that
// go by the real clock, and add makes time pass at once for everything
// that reads it.
type testClock struct {
	mu     sync.Mutex
	start  time.Time // zero: the real time
	offset time.Duration
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.start.IsZero() {
		return time.Now().Add(c.offset)
	}
	return c.start.Add(c.offset)
}

// add moves the clock forward by d.
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// serveUntilCleanup serves s on ln until the test ends, then shuts it down
// and fails the test if either reports an error.
func serveUntilCleanup(t *testing.T, s *Server, ln net.Listener) {
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

type response struct {
	status int
	body   []byte
	header map[string]string
}

// errBody decodes the response as a wire.ErrorBody, failing the test if it
// is not one.
func (r response) errBody(t *testing.T) wire.ErrorDetail {
	t.Helper()
	if ct := r.header["Content-Type"]; ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	// The error object is decoded strictly; beside it an answer may carry
	// what its route documents (a 409's receipts, a 413's policy).
	var top struct{ Error json.RawMessage }
	var eb wire.ErrorBody
	if err := json.Unmarshal(r.body, &top); err != nil || top.Error == nil {
		t.Fatalf("error body %q is not a wire.ErrorBody: %v", r.body, err)
	}
	dec := json.NewDecoder(bytes.NewReader(top.Error))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb.Error); err != nil {
		t.Fatalf("error body %q is not a wire.ErrorBody: %v", r.body, err)
	}
	if eb.Error.Code == "" || eb.Error.Message == "" {
		t.Errorf("error body %q lacks code or message", r.body)
	}
	return eb.Error
}

type reqOpt func(*fasthttp.Request)

func withHeader(k, v string) reqOpt { return func(r *fasthttp.Request) { r.Header.Set(k, v) } }

func withToken(tok string) reqOpt { return withHeader("Authorization", "Bearer "+tok) }

// withStream sends body as a chunked stream of unknown length.
func withStream(body []byte) reqOpt {
	return func(r *fasthttp.Request) { r.SetBodyStream(bytes.NewReader(body), -1) }
}

func (e *testEnv) do(method, path string, body []byte, opts ...reqOpt) response {
	e.t.Helper()
	return e.doWithin(10*time.Second, method, path, body, opts...)
}

// doWithin sends one request and fails the test if no answer comes within d.
func (e *testEnv) doWithin(d time.Duration, method, path string, body []byte, opts ...reqOpt) response {
	e.t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://deltasync.test" + path)
	if body != nil {
		req.SetBody(body)
	}
	for _, o := range opts {
		o(req)
	}
	if err := e.client.DoTimeout(req, resp, d); err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	r := response{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...), header: map[string]string{}}
	for k, v := range resp.Header.All() {
		r.header[string(k)] = string(v)
	}
	return r
}

func mustToken(t *testing.T, c Claims) string {
	t.Helper()
	tok, err := MintToken(testSecret, c, time.Hour)
	if err != nil {
		t.Fatalf("MintToken: %v", err)
	}
	return tok
}

func userToken(t *testing.T, org, user string) string {
	return mustToken(t, Claims{Org: org, User: user})
}

func adminToken(t *testing.T) string { return mustToken(t, Claims{Admin: true}) }

// echoRoutes registers test-only routes on every auth level that answer
// who the caller is.
func echoRoutes(s *Server) {
	echo := func(ctx *fasthttp.RequestCtx, req *request) error {
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{"org": req.Org, "user": req.User, "policy": req.Policy})
		return nil
	}
	s.handle(fasthttp.MethodGet, "/test/user", "test_user", authUser, echo)
	s.handle(fasthttp.MethodGet, "/test/ungated", "test_ungated", authUserUngated, echo)
	s.handle(fasthttp.MethodGet, "/test/admin", "test_admin", authAdmin, echo)
}
