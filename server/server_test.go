package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

func TestHealthz(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	r := e.do("GET", "/healthz", nil)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
		t.Errorf("healthz = %d %s, want 200 ok", r.status, r.body)
	}
	if r := e.do("HEAD", "/healthz", nil); r.status != 200 {
		t.Errorf("HEAD healthz = %d, want 200", r.status)
	}
}

func TestReadyz(t *testing.T) {
	tests := []struct {
		name string
		stat func(ctx context.Context, key string) (snapshot.ObjectInfo, error)
		want int
	}{
		{"probe missing", nil, 200},
		{"probe exists", func(context.Context, string) (snapshot.ObjectInfo, error) {
			return snapshot.ObjectInfo{Key: readyProbeKey}, nil
		}, 200},
		{"store fails", func(context.Context, string) (snapshot.ObjectInfo, error) {
			return snapshot.ObjectInfo{}, errors.New("dial tcp 10.0.0.1:9000: connection refused")
		}, 503},
		{"store hangs", func(ctx context.Context, _ string) (snapshot.ObjectInfo, error) {
			<-ctx.Done()
			return snapshot.ObjectInfo{}, ctx.Err()
		}, 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, envConfig{opts: func(o *Options) { o.ReadyTimeout = 100 * time.Millisecond }})
			var probed atomic.Value
			e.store.StatFunc = func(ctx context.Context, key string) (snapshot.ObjectInfo, error) {
				probed.Store(key)
				if tc.stat == nil {
					return e.store.Store.Stat(ctx, key)
				}
				return tc.stat(ctx, key)
			}
			start := time.Now()
			r := e.do("GET", "/readyz", nil)
			if r.status != tc.want {
				t.Fatalf("status = %d, want %d (%s)", r.status, tc.want, r.body)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("readyz took %v with a 100ms timeout", d)
			}
			if probed.Load() != readyProbeKey {
				t.Errorf("probed %v, want %q", probed.Load(), readyProbeKey)
			}
			if tc.want == 503 {
				if got := r.errBody(t); got.Code != wire.CodeUnavailable {
					t.Errorf("code = %q, want %q", got.Code, wire.CodeUnavailable)
				}
				if strings.Contains(string(r.body), "10.0.0.1") {
					t.Errorf("503 body leaks the store error: %s", r.body)
				}
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	e := newTestEnv(t, envConfig{setup: func(s *Server) {
		s.handle("GET", "/test/stream-out", "test_stream_out", authNone, func(ctx *fasthttp.RequestCtx, req *request) error {
			s.setBodyStream(ctx, req, strings.NewReader(strings.Repeat("z", 5000)), -1)
			return nil
		})
	}})
	e.do("GET", "/healthz", nil)
	e.do("GET", "/healthz", nil)
	e.do("GET", "/nope", nil)
	if r := e.do("GET", "/test/stream-out", nil); r.status != 200 || len(r.body) != 5000 {
		t.Fatalf("stream-out = %d, %d bytes", r.status, len(r.body))
	}
	chunks, patches, conflicts := syncAndConflict(t, e)

	r := e.do("GET", "/metrics", nil)
	if r.status != 200 {
		t.Fatalf("metrics = %d", r.status)
	}
	if ct := r.header["Content-Type"]; !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q, want Prometheus text format", ct)
	}
	text := string(r.body)
	for _, want := range []string{
		`deltasync_http_requests_total{code="200",route="healthz"} 2`,
		`deltasync_http_requests_total{code="404",route="not_found"} 1`,
		`deltasync_http_request_duration_seconds_count{route="healthz"} 2`,
		`deltasync_http_response_bytes_total{route="healthz"} 32`,
		`deltasync_http_response_bytes_total{route="test_stream_out"} 5000`,
		fmt.Sprintf("deltasync_chunks_served_total %d\n", chunks),
		fmt.Sprintf("deltasync_patches_applied_total %d\n", patches),
		fmt.Sprintf("deltasync_conflicts_total %d\n", conflicts),
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Each server has its own registry.
	other := newTestEnv(t, envConfig{})
	if strings.Contains(string(other.do("GET", "/metrics", nil).body), `route="healthz"`) {
		t.Error("a second server's metrics show the first one's requests")
	}
}

// syncAndConflict drives the handlers that count domain metrics: a full
// sync and an up-to-date one, a patch with one conflict, and its retry (a
// duplicate, counted once). It returns the counts the metrics must show.
func syncAndConflict(t *testing.T, e *testEnv) (chunks, patches, conflicts int) {
	t.Helper()
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	tok := userToken(t, "acme", "alice")
	lc := &localCopy{chunks: map[snapshot.ChunkID][]byte{}}
	e.pull(tok, lc)
	e.pull(tok, lc) // up to date: no chunk
	if len(lc.list) == 0 {
		t.Fatal("the full sync brought no chunk")
	}
	e.upload("acme", "alice", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"blocked"}`)}})
	patch := []byte(`{"id":"p1","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"s":"done"}}]}`)
	for range 2 {
		if r := e.do("POST", "/v1/patches", patch, withToken(tok)); r.status != 200 {
			t.Fatalf("patch: %d %s", r.status, r.body)
		}
	}
	return len(lc.list), 1, 1
}

func TestErrorAnswers(t *testing.T) {
	e := newTestEnv(t, envConfig{setup: func(s *Server) {
		s.handle("GET", "/test/err/{kind}", "test_err", authNone, func(ctx *fasthttp.RequestCtx, req *request) error {
			switch req.Param("kind") {
			case "notexist":
				return fmt.Errorf("read manifest 7: %w", &snapshot.ObjectError{Op: "get", Key: "a/b/versions/7", Err: snapshot.ErrNotExist})
			case "invalid":
				return fmt.Errorf("record key: %w", snapshot.ErrInvalid)
			case "exist":
				return snapshot.ErrExist
			case "precondition":
				return snapshot.ErrPrecondition
			case "corrupt":
				return &snapshot.ChunkError{Op: "read", Err: snapshot.ErrCorrupt}
			case "store":
				return errors.New("s3: connection reset by peer")
			case "ratelimit":
				return rateLimited("slow down")
			case "conflict":
				return conflict("patch %s rejected", "p1")
			case "panic":
				panic("boom")
			case "stream-then-fail":
				ctx.SetBodyStream(strings.NewReader("partial"), -1)
				return badRequest("changed my mind")
			}
			return nil
		})
	}})
	tests := []struct {
		path     string
		method   string
		want     int
		wantCode string
	}{
		{"/no/such/route", "GET", 404, wire.CodeNotFound},
		{"/", "GET", 404, wire.CodeNotFound},
		{"/healthz", "POST", 405, wire.CodeMethodNotAllowed},
		{"/v1/admin/orgs/acme", "DELETE", 405, wire.CodeMethodNotAllowed},
		{"/test/err/notexist", "GET", 404, wire.CodeNotFound},
		{"/test/err/invalid", "GET", 400, wire.CodeBadRequest},
		{"/test/err/exist", "GET", 409, wire.CodeConflict},
		{"/test/err/precondition", "GET", 409, wire.CodeConflict},
		{"/test/err/conflict", "GET", 409, wire.CodeConflict},
		{"/test/err/corrupt", "GET", 500, wire.CodeInternal},
		{"/test/err/store", "GET", 503, wire.CodeUnavailable},
		{"/test/err/ratelimit", "GET", 429, wire.CodeRateLimited},
		{"/test/err/panic", "GET", 500, wire.CodeInternal},
		{"/test/err/stream-then-fail", "GET", 400, wire.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			r := e.do(tc.method, tc.path, nil)
			if r.status != tc.want {
				t.Fatalf("status = %d, want %d (%s)", r.status, tc.want, r.body)
			}
			if got := r.errBody(t).Code; got != tc.wantCode {
				t.Errorf("code = %q, want %q", got, tc.wantCode)
			}
			if r.header["X-Request-Id"] == "" {
				t.Error("error answer without X-Request-ID")
			}
			if tc.want >= 500 && strings.Contains(string(r.body), "connection reset") {
				t.Errorf("5xx body leaks the cause: %s", r.body)
			}
		})
	}
	if r := e.do("POST", "/v1/admin/orgs/acme", nil); r.header["Allow"] != "GET, PUT" {
		t.Errorf("Allow = %q, want %q", r.header["Allow"], "GET, PUT")
	}
	if !strings.Contains(e.logs.String(), "s3: connection reset by peer") {
		t.Error("the cause of a 503 is not logged")
	}
}

func TestRequestID(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	tests := []struct {
		name string
		in   string
		want string // "" means: generated
	}{
		{"kept", "req-42.a_b:c", "req-42.a_b:c"},
		{"sanitised", "abc\r\nX-Evil: 1\" {}", "abcX-Evil:1"},
		{"bounded", strings.Repeat("a", 200), strings.Repeat("a", maxRequestIDLen)},
		{"nothing valid", "\"<>\"", ""},
		{"missing", "", ""},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []reqOpt
			if tc.in != "" {
				opts = append(opts, withHeader(headerRequestID, tc.in))
			}
			got := e.do("GET", "/healthz", nil, opts...).header["X-Request-Id"]
			if tc.want != "" {
				if got != tc.want {
					t.Errorf("X-Request-ID = %q, want %q", got, tc.want)
				}
				return
			}
			if got == "" || seen[got] {
				t.Errorf("generated X-Request-ID %q is empty or repeated", got)
			}
			seen[got] = true
		})
	}
	if !strings.Contains(e.logs.String(), `"request_id":"req-42.a_b:c"`) {
		t.Error("access log lacks the request id")
	}
	for _, field := range []string{`"route":"healthz"`, `"status":200`, `"duration":`, `"bytes":16`} {
		if !strings.Contains(e.logs.String(), field) {
			t.Errorf("access log lacks %s", field)
		}
	}
}

// Shutdown lets a request that is being handled finish, with a store
// context that stays alive, and then refuses new connections.
func TestGracefulShutdown(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var ctxErr atomic.Value
	e := newTestEnv(t, envConfig{setup: func(s *Server) {
		s.handle("GET", "/test/slow", "test_slow", authNone, func(ctx *fasthttp.RequestCtx, req *request) error {
			close(started)
			<-release
			ctxErr.Store(fmt.Sprint(req.Ctx.Err()))
			writeJSON(ctx, 200, map[string]string{"done": "yes"})
			return nil
		})
	}})
	type result struct {
		r response
	}
	got := make(chan result, 1)
	go func() { got <- result{e.do("GET", "/test/slow", nil)} }()
	<-started

	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownDone <- e.s.Shutdown(ctx)
	}()
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	res := <-got
	if res.r.status != 200 || !strings.Contains(string(res.r.body), `"done":"yes"`) {
		t.Errorf("in-flight request = %d %s, want 200 done", res.r.status, res.r.body)
	}
	if err := <-shutdownDone; err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
	if got := ctxErr.Load(); got != "<nil>" {
		t.Errorf("request context during shutdown: %v, want not cancelled", got)
	}
	if _, err := e.ln.Dial(); err == nil {
		t.Error("listener still accepts connections after Shutdown")
	}
}

// If the shutdown deadline passes, Shutdown returns its error and the
// remaining requests' store context is cancelled.
func TestShutdownDeadline(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	e := newTestEnv(t, envConfig{setup: func(s *Server) {
		s.handle("GET", "/test/stuck", "test_stuck", authNone, func(ctx *fasthttp.RequestCtx, req *request) error {
			close(started)
			<-req.Ctx.Done()
			close(cancelled)
			return req.Ctx.Err()
		})
	}})
	go e.tryDo("GET", "/test/stuck") // fails when the server gives up on it
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := e.s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("request context not cancelled after the shutdown deadline")
	}
}

func TestListenAndServe(t *testing.T) {
	opts := DefaultOptions()
	opts.Store = memstore.New()
	opts.JWTSecret = testSecret
	opts.Logger = discardLogger()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	opts.Addr = ln.Addr().String()
	ln.Close()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe() }()
	var status int
	for i := 0; i < 50; i++ {
		status, _, err = fasthttp.Get(nil, "http://"+opts.Addr+"/healthz")
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || status != 200 {
		t.Errorf("GET /healthz over TCP = %d, %v", status, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe: %v", err)
	}
}

func TestRouter(t *testing.T) {
	var rt router
	h := func(*fasthttp.RequestCtx, *request) error { return nil }
	rt.add("GET", "/v1/admin/orgs/{org}", "org_get", authAdmin, h)
	rt.add("PUT", "/v1/admin/orgs/{org}", "org_put", authAdmin, h)
	rt.add("GET", "/v1/admin/orgs/defaults", "defaults", authAdmin, h)
	rt.add("PUT", "/v1/admin/orgs/{org}/users/{user}/dataset", "dataset", authAdmin, h)
	rt.add("GET", "/v1/chunks/{id}", "chunk", authUser, h)
	rt.add("GET", "/", "root", authNone, h)

	tests := []struct {
		method, path string
		wantRoute    string
		wantParams   map[string]string
		wantAllowed  string
	}{
		{"GET", "/v1/admin/orgs/acme", "org_get", map[string]string{"org": "acme"}, ""},
		{"PUT", "/v1/admin/orgs/acme", "org_put", map[string]string{"org": "acme"}, ""},
		{"HEAD", "/v1/admin/orgs/acme", "org_get", map[string]string{"org": "acme"}, ""},
		{"GET", "/v1/admin/orgs/defaults", "defaults", nil, ""},
		{"PUT", "/v1/admin/orgs/defaults", "org_put", map[string]string{"org": "defaults"}, ""},
		{"PUT", "/v1/admin/orgs/a/users/u1/dataset", "dataset", map[string]string{"org": "a", "user": "u1"}, ""},
		{"GET", "/v1/chunks/00ff", "chunk", map[string]string{"id": "00ff"}, ""},
		{"GET", "/", "root", nil, ""},
		{"DELETE", "/v1/admin/orgs/acme", "", nil, "GET, PUT"},
		{"GET", "/v1/chunks/", "", nil, ""},
		{"GET", "/v1/chunks", "", nil, ""},
		{"GET", "/v1/chunks/a/b", "", nil, ""},
		{"GET", "/v1/admin/orgs/acme/", "", nil, ""},
		{"GET", "//v1/chunks/x", "", nil, ""},
		{"GET", "", "", nil, ""},
	}
	for _, tc := range tests {
		r, params, allowed := rt.match(tc.method, tc.path)
		gotRoute := ""
		if r != nil {
			gotRoute = r.name
		}
		if gotRoute != tc.wantRoute {
			t.Errorf("%s %q: route %q, want %q", tc.method, tc.path, gotRoute, tc.wantRoute)
			continue
		}
		req := &request{params: params}
		for k, v := range tc.wantParams {
			if got := req.Param(k); got != v {
				t.Errorf("%s %q: param %s = %q, want %q", tc.method, tc.path, k, got, v)
			}
		}
		if len(params) != len(tc.wantParams) {
			t.Errorf("%s %q: params %v, want %v", tc.method, tc.path, params, tc.wantParams)
		}
		if got := strings.Join(allowed, ", "); got != tc.wantAllowed {
			t.Errorf("%s %q: allowed %q, want %q", tc.method, tc.path, got, tc.wantAllowed)
		}
	}

	for _, bad := range []string{"no-slash", "/a/{b", "/a/{}", "/v1/admin/orgs/{x}"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("add(%q) did not panic", bad)
				}
			}()
			rt.add("GET", bad, "bad", authNone, h)
		}()
	}
}
