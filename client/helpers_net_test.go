package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/servertest"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
)

var (
	netJWTSecret   = []byte("client-test-jwt-secret-0123456789abcdef")
	netChunkSecret = []byte("client-test-chunk-secret-0123456789")
)

const testOrg = "acme"

// testServer is a real deltasync server on a loopback port.
type testServer struct {
	t     testing.TB
	url   string
	store snapshot.Store
	admin string
}

func newTestServer(t testing.TB) *testServer {
	t.Helper()
	return newTestServerWith(t, nil)
}

// newTestServerWith is newTestServer with edit (if not nil) applied to the
// server's options last.
func newTestServerWith(t testing.TB, edit func(*server.Options)) *testServer {
	t.Helper()
	s := servertest.Start(t, servertest.Options{JWTSecret: netJWTSecret, Configure: func(o *server.Options) {
		o.ChunkSecret = netChunkSecret
		if edit != nil {
			edit(o)
		}
	}})
	ts := &testServer{t: t, url: s.URL, store: s.Store, admin: s.AdminToken(t)}
	ts.setPolicy(`{"offline_mode":true,"conflict_policy":"client-wins"}`)
	return ts
}

func (ts *testServer) do(method, path string, body []byte) []byte {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.url+path, bytes.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ts.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		ts.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out
}

func (ts *testServer) setPolicy(js string) {
	ts.t.Helper()
	ts.do(http.MethodPut, "/v1/admin/orgs/"+testOrg, []byte(js))
}

// upload makes recs the user's next version and returns the head.
func (ts *testServer) upload(user string, recs []gen.Record) uint64 {
	ts.t.Helper()
	var b bytes.Buffer
	for _, r := range recs {
		k, _ := json.Marshal(r.Key)
		fmt.Fprintf(&b, `{"key":%s,"value":%s}`+"\n", k, r.Value)
	}
	ts.do(http.MethodPut, "/v1/admin/orgs/"+testOrg+"/users/"+user+"/dataset", b.Bytes())
	return ts.head(user)
}

func (ts *testServer) head(user string) uint64 {
	ts.t.Helper()
	h, err := snapshot.Head(context.Background(), ts.store, testOrg, user)
	if err != nil {
		ts.t.Fatal(err)
	}
	return h
}

// export returns the server's newest version of the user's records as
// sorted NDJSON, the format Client.Export writes.
func (ts *testServer) export(user string) string {
	ts.t.Helper()
	ctx := context.Background()
	h := ts.head(user)
	if h == 0 {
		return ""
	}
	m, err := snapshot.ReadManifest(ctx, ts.store, testOrg, user, h)
	if err != nil {
		ts.t.Fatal(err)
	}
	var b strings.Builder
	err = snapshot.NewReader(ts.store, m, netChunkSecret).Records(ctx, func(k, v []byte) error {
		key, _ := json.Marshal(string(k))
		fmt.Fprintf(&b, `{"key":%s,"value":%s}`+"\n", key, v)
		return nil
	})
	if err != nil {
		ts.t.Fatal(err)
	}
	return b.String()
}

func (ts *testServer) token(user string) string {
	ts.t.Helper()
	tok, err := server.MintToken(netJWTSecret, server.Claims{Org: testOrg, User: user}, time.Hour)
	if err != nil {
		ts.t.Fatal(err)
	}
	return tok
}

// client opens a client of user in a fresh directory (or dir, if given).
func (ts *testServer) client(user string, rt http.RoundTripper, dir ...string) *Client {
	ts.t.Helper()
	d := ts.t.TempDir()
	if len(dir) > 0 {
		d = dir[0]
	}
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = ts.url, ts.token(user)
	opts.RetryMinMillis, opts.RetryMaxMillis = 5, 50
	opts.LongPollSeconds = 2
	if rt != nil {
		opts.HTTPClient = &http.Client{Transport: rt}
	}
	c, err := Open(d, opts)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { c.Close() })
	return c
}

// exportOf is the client's merged view as NDJSON.
func exportOf(t *testing.T, c *Client) string {
	t.Helper()
	var b bytes.Buffer
	if err := c.Export(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// faultTransport wraps the default transport: it counts response body
// bytes and lets a test break requests through function fields.
type faultTransport struct {
	base http.RoundTripper
	// cutAfter, when positive, makes the next /v1/sync response body fail
	// after that many bytes (then resets to 0).
	cutAfter atomic.Int64
	// loseAnswer, when set, lets the next POST /v1/patches reach the
	// server, then drops the answer as a broken connection would.
	loseAnswer atomic.Bool
	// fail503 answers this many requests with 503 without sending them.
	fail503 atomic.Int64
	// answer, when set, answers POST /v1/patches itself (200, the JSON
	// it returns) without asking the server.
	answer func(body []byte) string
	down   atomic.Int64 // response body bytes read
	mu     sync.Mutex
	posts  []string // bodies of POST /v1/patches that reached the server
}

func newFaultTransport() *faultTransport {
	return &faultTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
}

var errCut = errors.New("connection reset (test)")

func (f *faultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if f.fail503.Load() > 0 {
		f.fail503.Add(-1)
		return &http.Response{StatusCode: 503, Header: http.Header{"Content-Type": {"application/json"}},
			Body:    io.NopCloser(strings.NewReader(`{"error":{"code":"unavailable","message":"test outage"}}`)),
			Request: req}, nil
	}
	if req.Method == http.MethodPost && req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		f.mu.Lock()
		f.posts = append(f.posts, string(b))
		f.mu.Unlock()
	}
	if req.Method == http.MethodPost && f.answer != nil {
		f.mu.Lock()
		body := f.posts[len(f.posts)-1]
		f.mu.Unlock()
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(f.answer([]byte(body)))), Request: req}, nil
	}
	resp, err := f.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if req.Method == http.MethodPost && f.loseAnswer.CompareAndSwap(true, false) {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errCut
	}
	limit := int64(-1)
	if req.URL.Path == "/v1/sync" {
		if n := f.cutAfter.Swap(0); n > 0 {
			limit = n
		}
	}
	resp.Body = &countBody{rc: resp.Body, f: f, left: limit}
	return resp, nil
}

type countBody struct {
	rc   io.ReadCloser
	f    *faultTransport
	left int64 // -1: no cut
}

func (b *countBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, errCut
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.f.down.Add(int64(n))
	if b.left > 0 {
		b.left -= int64(n)
	}
	return n, err
}

func (b *countBody) Close() error { return b.rc.Close() }

// statusLog records every status a client reports and lets a test wait for
// one matching a condition.
type statusLog struct {
	mu     sync.Mutex
	all    []Status
	notify chan struct{}
}

func watch(c *Client) *statusLog {
	l := &statusLog{notify: make(chan struct{}, 1)}
	c.OnStatus(func(s Status) {
		l.mu.Lock()
		l.all = append(l.all, s)
		l.mu.Unlock()
		select {
		case l.notify <- struct{}{}:
		default:
		}
	})
	return l
}

// waitFor blocks until cond holds for c's current status. The deadline
// only guards against a hang; no assertion depends on timing.
func (l *statusLog) waitFor(t *testing.T, c *Client, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		if s := c.Status(); cond(s) {
			return s
		}
		select {
		case <-l.notify:
		case <-deadline.C:
			t.Fatalf("waiting for %s: status is %+v", what, c.Status())
		}
	}
}

// states returns the distinct consecutive states seen.
func (l *statusLog) states() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.all {
		if len(out) == 0 || out[len(out)-1] != s.State {
			out = append(out, s.State)
		}
	}
	return out
}
