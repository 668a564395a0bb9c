package server

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/internal/gen"
)

// heldPoll is a client sending long polls on one connection.
type heldPoll struct {
	c  net.Conn
	br *bufio.Reader
}

func dialPoll(t *testing.T, addr string) *heldPoll {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &heldPoll{c: c, br: bufio.NewReaderSize(c, 64)}
}

func (p *heldPoll) send(t *testing.T, v uint64, wait, tok string) {
	t.Helper()
	if _, err := fmt.Fprintf(p.c, "GET /v1/sync?from=%d&wait=%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", v, wait, tok); err != nil {
		t.Fatal(err)
	}
}

func (p *heldPoll) status(t *testing.T) int {
	t.Helper()
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// stackInuse is the goroutine stacks' memory after a full collection (which
// shrinks the stacks it can).
func stackInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.StackInuse
}

// TestHeldLongPollsKeepSmallStacks: a held long poll parks fasthttp's worker
// with a 4 KB stack, not 8 KB, also after its polls have been answered and
// renewed on the same connection (issue 10: memory per connected device;
// see stack.go). The old code held 8.0 KB a poll here.
func TestHeldLongPollsKeepSmallStacks(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes every frame bigger")
	}
	e, addr := newTCPEnv(t, envConfig{opts: func(o *Options) { o.LongPollMax = time.Hour }})
	e.enableOrg("acme")
	v := e.upload("acme", "alice", gen.Dataset(gen.Options{Size: 16 << 10, Seed: 3}))
	tok := userToken(t, "acme", "alice")
	// A first poll starts what runs once per server.
	first := dialPoll(t, addr)
	first.send(t, v, "1ms", tok)
	first.status(t)
	first.c.Close()

	const n = 300
	before := stackInuse()
	polls := make([]*heldPoll, n)
	for i := range polls {
		polls[i] = dialPoll(t, addr)
	}
	for round := range 2 { // answered polls, renewed on their connections
		for _, p := range polls {
			p.send(t, v, "20ms", tok)
		}
		for _, p := range polls {
			if got := p.status(t); got != 200 {
				t.Fatalf("round %d: status %d, want 200", round, got)
			}
		}
	}
	for _, p := range polls {
		p.send(t, v, "1h", tok)
	}
	waitUntil(t, "every poll waits", func() bool { return waiters(e.s) == n })
	perPoll := float64(stackInuse()-before) / n / 1024
	t.Logf("stacks: %.2f KB per held poll", perPoll)
	if perPoll > 6.5 {
		t.Errorf("stacks: %.2f KB per held long poll, want about 4 (at most 6.5)", perPoll)
	}
}

// tokenOfLength is a valid user token for acme/alice padded with a claim
// deltasync does not read (as identity providers add groups and roles) to
// exactly n characters.
func tokenOfLength(t *testing.T, n int) string {
	t.Helper()
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	mint := func(pad int) string {
		payload := fmt.Sprintf(`{"org":"acme","user":"alice","exp":%d,"groups":"%s"}`,
			time.Now().Add(time.Hour).Unix(), strings.Repeat("g", pad))
		signing := head + "." + enc.EncodeToString([]byte(payload))
		sig, err := jwt.SigningMethodHS256.Sign(signing, testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return signing + "." + enc.EncodeToString(sig)
	}
	short := mint(0)
	// Base64 makes 4 characters of 3 bytes: pad in whole groups, then trim
	// the difference with the padding's remainder.
	for pad := max(0, (n-len(short))*3/4-3); ; pad++ {
		if tok := mint(pad); len(tok) >= n {
			if len(tok) != n {
				t.Fatalf("cannot make a token of exactly %d characters (got %d)", n, len(tok))
			}
			return tok
		}
	}
}

// statusWithToken sends GET /v1/status with headers as a mobile client's
// and tok, and returns the answer's status and body.
func statusWithToken(t *testing.T, addr, tok string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/status HTTP/1.1\r\nHost: sync.example.com\r\nUser-Agent: deltasync-client/1.0 (Android 14; Pixel 8)\r\n"+
		"Accept-Encoding: gzip\r\nX-Request-ID: 0123456789abcdef0123456789abcdef\r\nConnection: close\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	return readAnswer(t, c)
}

// TestRequestHeadersUpToTheLimit: a request whose bearer token is 3.5 KB
// (identity providers' tokens with groups and roles) still fits the default
// MaxHeaderBytes, one over the limit gets a clear 431 in JSON, and a bigger
// MaxHeaderBytes admits it.
func TestRequestHeadersUpToTheLimit(t *testing.T) {
	e, addr := newTCPEnv(t, envConfig{})
	e.enableOrg("acme")
	if status, body := statusWithToken(t, addr, tokenOfLength(t, 3584)); status != 200 {
		t.Fatalf("3.5 KB token: %d %s, want 200", status, body)
	}
	status, body := statusWithToken(t, addr, tokenOfLength(t, DefaultMaxHeaderBytes))
	if status != 431 || !strings.Contains(body, `"code":"too_large"`) ||
		!strings.Contains(body, fmt.Sprintf("larger than %d bytes", DefaultMaxHeaderBytes)) {
		t.Fatalf("4 KB token: %d %s, want 431 too_large naming the limit", status, body)
	}

	big, bigAddr := newTCPEnv(t, envConfig{opts: func(o *Options) { o.MaxHeaderBytes = 8 << 10 }})
	big.enableOrg("acme")
	if status, body := statusWithToken(t, bigAddr, tokenOfLength(t, DefaultMaxHeaderBytes)); status != 200 {
		t.Fatalf("4 KB token, MaxHeaderBytes 8 KiB: %d %s, want 200", status, body)
	}
}

func TestMaxHeaderBytesIsChecked(t *testing.T) {
	for _, n := range []int64{-1, 512, 2 << 20} {
		o := DefaultOptions()
		o.MaxHeaderBytes = n
		if err := o.validateGuards(); err == nil || !strings.Contains(err.Error(), "max-header-bytes") {
			t.Errorf("MaxHeaderBytes %d: %v, want an error naming max-header-bytes", n, err)
		}
	}
}

// TestLongPollRequestIsTheRoutersSyncWithWait: the one pre-routing
// definition of a long poll covers what the router serves as the sync
// route with a wait (HEAD included, which the router answers with the GET
// route and which parks in the hub the same way), and nothing else.
func TestLongPollRequestIsTheRoutersSyncWithWait(t *testing.T) {
	for _, tc := range []struct {
		method, uri string
		want        bool
	}{
		{"GET", "/v1/sync?from=3&wait=30s", true},
		{"HEAD", "/v1/sync?from=3&wait=30s", true},
		{"GET", "/v1/sync?from=3", false},
		{"GET", "/v1/sync?from=3&wait=", false},
		{"POST", "/v1/sync?wait=30s", false},
		{"GET", "/v1/status?wait=30s", false},
		{"GET", "/v1/sync/x?wait=30s", false},
	} {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod(tc.method)
		ctx.Request.SetRequestURI(tc.uri)
		if got := longPollRequest(&ctx); got != tc.want {
			t.Errorf("%s %s: long poll %v, want %v", tc.method, tc.uri, got, tc.want)
		}
	}
}
