package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Errors of the network side. Match them with errors.Is; an *HTTPError
// carries the server's answer.
var (
	// ErrNoServer reports that no server URL is configured.
	ErrNoServer = errors.New("no server configured")
	// ErrOfflineMode reports that offline mode is on: no network use.
	ErrOfflineMode = errors.New("offline mode is on")
	// ErrNoConnection reports that the server could not be reached, or the
	// connection broke during a request. It is temporary: retrying later
	// resumes where the attempt stopped.
	ErrNoConnection = errors.New("cannot reach the server")
	// ErrAuth reports a token the server refused (401).
	ErrAuth = errors.New("the server refused the token")
	// ErrPolicy reports a refusal by the organisation's offline policy:
	// offline mode not enabled (403), or patches rejected for conflicts.
	ErrPolicy = errors.New("refused by the organization's offline policy")
	// ErrServer reports a server failure (5xx, 429, or an answer that
	// cannot be understood). It is temporary.
	ErrServer = errors.New("server error")
	// ErrRebaseNeeded reports that the server rejected the pending edits
	// because they conflict with server changes and the org's policy is
	// "reject": nothing is sent until the app calls Rebase (or discards
	// the edits with DiscardEdits).
	ErrRebaseNeeded = errors.New("pending edits conflict with server changes; rebase needed")
)

// HTTPError is an error answer of the server.
type HTTPError struct {
	Op      string // what the client was doing: "sync", "push"
	Status  int    // HTTP status
	Code    string // wire.Code* from the error body, if any
	Message string // the server's message, if any
}

func (e *HTTPError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("%s: server answered %d %s: %s", e.Op, e.Status, e.Code, msg)
	}
	return fmt.Sprintf("%s: server answered %d: %s", e.Op, e.Status, msg)
}

// Is classifies the answer: 401 is ErrAuth, 403 ErrPolicy, 5xx and 429
// ErrServer.
func (e *HTTPError) Is(target error) bool {
	switch target {
	case ErrAuth:
		return e.Status == http.StatusUnauthorized
	case ErrPolicy:
		return e.Status == http.StatusForbidden
	case ErrServer:
		return e.Status >= 500 || e.Status == http.StatusTooManyRequests
	}
	return false
}

// netError is a transport failure; it matches ErrNoConnection.
type netError struct {
	op  string
	err error
}

func (e *netError) Error() string        { return fmt.Sprintf("%s: %v", e.op, e.err) }
func (e *netError) Unwrap() error        { return e.err }
func (e *netError) Is(target error) bool { return target == ErrNoConnection }

// serverError is an answer that cannot be understood; it matches ErrServer.
type serverError struct {
	op  string
	err error
}

func (e *serverError) Error() string        { return fmt.Sprintf("%s: %v", e.op, e.err) }
func (e *serverError) Unwrap() error        { return e.err }
func (e *serverError) Is(target error) bool { return target == ErrServer }

// temporary reports whether err is worth retrying without anyone acting.
// The app's token provider may have failed for want of a network too.
func temporary(err error) bool {
	var te *tokenError
	return errors.Is(err, ErrNoConnection) || errors.Is(err, ErrServer) || errors.As(err, &te)
}

// newHTTPClient makes the default client. There is no overall timeout (a
// download may take long); headers must arrive within header, which covers
// the longest long poll, so a connection that died silently is noticed.
func newHTTPClient(dial, header time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = header
	t.ExpectContinueTimeout = expectContinueTimeout
	return &http.Client{Transport: t, CheckRedirect: sameOrigin}
}

// sameOrigin follows a redirect only to the scheme and host the request
// was sent to: edits, and the answers that take them out of the queue,
// never go to a host the app did not configure (nor from https to http).
// A redirect elsewhere is answered as the server's 3xx (an HTTPError).
func sameOrigin(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if from := via[0].URL; req.URL.Scheme != from.Scheme || req.URL.Host != from.Host {
		return http.ErrUseLastResponse
	}
	return nil
}

// maxJSONAnswer bounds a JSON answer (receipts may carry values of up to
// 16 MiB each on both sides, once per key: diff.Receipt).
const maxJSONAnswer = 256 << 20

// request sends one request to the configured server. A non-2xx answer is
// returned as *HTTPError with the body read and closed; a transport failure
// as an error matching ErrNoConnection (or ctx's error if ctx ended).
// Bytes sent (body) are counted as traffic up.
func (c *Client) request(ctx context.Context, op, method, path string, query url.Values, body []byte, header http.Header) (*http.Response, error) {
	if c.OfflineMode() {
		return nil, fmt.Errorf("%s: %w", op, ErrOfflineMode)
	}
	base := c.ServerURL()
	if base == "" {
		return nil, fmt.Errorf("%s: %w", op, ErrNoServer)
	}
	u := strings.TrimRight(base, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	tok, err := c.bearer(ctx, false, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.send(ctx, op, method, u, body, header, tok)
	var he *HTTPError
	if c.tok.provider != nil && errors.As(err, &he) && he.Status == http.StatusUnauthorized {
		// The token was refused (expired early, revoked): ask the app for
		// a new one and try once more.
		if tok, err = c.bearer(ctx, true, tok); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		resp, err = c.send(ctx, op, method, u, body, header, tok)
	}
	return resp, err
}

// send sends one request with the bearer token tok; see request.
func (c *Client) send(ctx context.Context, op, method, u string, body []byte, header http.Header, tok string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: server URL %q: %w", op, c.ServerURL(), err)
	}
	var sent *sentCounter
	if body != nil {
		sent = c.setBody(req, body)
	}
	return c.roundTrip(ctx, op, req, header, tok, sent)
}

// roundTrip sends req with header and the bearer token tok (none if
// empty), counts the body bytes the transport took (sent, if any) and the
// contact it made, and turns a transport failure into a netError and a
// non-2xx answer into an HTTPError carrying the server's code and body.
func (c *Client) roundTrip(ctx context.Context, op string, req *http.Request, header http.Header, tok string, sent *sentCounter) (*http.Response, error) {
	for k, v := range header {
		req.Header[k] = v
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("User-Agent", "deltasync-client/1")
	resp, err := c.httpc.Do(req)
	if err == nil {
		// Contact first: its bytes belong to the online period it starts.
		c.contact(resp.StatusCode/100 == 2)
	}
	if up := sent.take(); up > 0 {
		c.addBytes(0, up)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		return nil, &netError{op: op, err: err}
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	c.addBytes(int64(len(raw)), 0)
	if rerr != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("%s: %w", op, ctx.Err())
	}
	he := httpErrorOf(op, resp.StatusCode, raw)
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && loc != "" {
		he.Message = "redirect to " + loc + ", another host than the server's: not followed"
	}
	return nil, &httpErrorWithBody{HTTPError: he, body: raw}
}

// expectContinueOver is the body size from which a request asks the server
// first ("Expect: 100-continue"): the server answers a refusal (401, 403,
// 413) from the headers, and a phone does not spend its data plan sending
// a body that would be thrown away. Smaller bodies go at once: waiting a
// round trip would cost more than they do.
const expectContinueOver = 64 << 10

// expectContinueTimeout is how long the transport waits for the server's
// "100 Continue" before sending a big body anyway (a proxy may swallow
// it). A phone's round trip can take a second; the server answers at once.
const expectContinueTimeout = 3 * time.Second

// setBody attaches body to req. The transport reads it through a counter:
// traffic up is what it actually took to send (nothing for a refused
// connection, nor for a body the server refused from the headers), not
// what the client meant to send. Counted once Do returns (by then a server
// that answers has read the body), so that status listeners are never
// called from the transport's goroutines.
func (c *Client) setBody(req *http.Request, body []byte) *sentCounter {
	sc := &sentCounter{}
	open := func() io.ReadCloser { return io.NopCloser(&countedBody{r: bytes.NewReader(body), n: &sc.n}) }
	req.Body = open()
	req.GetBody = func() (io.ReadCloser, error) { return open(), nil }
	req.ContentLength = int64(len(body))
	if len(body) > expectContinueOver {
		req.Header.Set("Expect", "100-continue")
	}
	return sc
}

// sentCounter counts the body bytes the transport took, over every attempt
// (the transport may resend a body on a fresh connection).
type sentCounter struct {
	n       atomic.Int64
	counted int64
}

// take returns the bytes sent since the last take.
func (s *sentCounter) take() int64 {
	if s == nil {
		return 0
	}
	n := s.n.Load()
	d := n - s.counted
	s.counted = n
	return d
}

type countedBody struct {
	r io.Reader
	n *atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// httpErrorWithBody keeps the raw error body for callers that need more
// than the code (the receipts of a rejected patch).
type httpErrorWithBody struct {
	*HTTPError
	body []byte
}

func (e *httpErrorWithBody) Unwrap() error { return e.HTTPError }

// countingReader counts the bytes read through it and remembers the first
// read error, so that a delta pack cut by the network is reported as a lost
// connection rather than as a malformed pack.
type countingReader struct {
	r       io.Reader
	n       int64 // total read
	counted int64 // already reported with addBytes
	err     error // first non-EOF error
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// take returns the bytes read since the last take.
func (r *countingReader) take() int64 {
	d := r.n - r.counted
	r.counted = r.n
	return d
}

// stallWatch cancels a request that makes no progress for idle: a
// timer the request's reads re-arm, that calls abort when it runs out.
type stallWatch struct {
	idle  time.Duration
	timer *time.Timer
	fired atomic.Bool
}

// newStallWatch returns a watch, armed if armed is set.
func newStallWatch(idle time.Duration, abort func(), armed bool) *stallWatch {
	w := &stallWatch{idle: idle}
	w.timer = time.AfterFunc(idle, func() {
		w.fired.Store(true)
		abort()
	})
	if !armed {
		w.timer.Stop()
	}
	return w
}

func (w *stallWatch) arm()  { w.timer.Reset(w.idle) }
func (w *stallWatch) stop() { w.timer.Stop() }

// stalled reports whether the watch ran out.
func (w *stallWatch) stalled() bool { return w.fired.Load() }

// idleReader ends a download that stops arriving: a Read that waits longer
// than idle for the next bytes cancels the request (abort) and fails with
// a timeout. Only the time spent waiting in Read counts, not the client's
// own work between reads (verifying, writing a batch). Without it, an
// answer whose headers arrived and whose body went silent (a server that
// trickles nothing, a middlebox that lost the peer but keeps the
// connection) would hold the network lock, and every push, forever.
type idleReader struct {
	r io.Reader
	w *stallWatch
}

func newIdleReader(r io.Reader, idle time.Duration, abort func()) *idleReader {
	return &idleReader{r: r, w: newStallWatch(idle, abort, false)}
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.w.stalled() {
		return 0, r.stallError()
	}
	r.w.arm()
	n, err := r.r.Read(p)
	r.w.stop()
	if err != nil && r.w.stalled() {
		err = r.stallError()
	}
	return n, err
}

func (r *idleReader) stallError() error {
	return fmt.Errorf("no data from the server for %v", r.w.idle)
}

// stop disarms the watchdog for good.
func (r *idleReader) stop() { r.w.stop() }

// progressBody is a request body that keeps a stallWatch armed while the
// transport takes it: if it takes nothing for the watch's idle time (a
// server that stopped reading; the client's writes block on a full
// window) the request is cancelled. Once the body is all read the watch
// is off: the transport's header timeout bounds the wait for the answer.
type progressBody struct {
	r io.Reader
	w *stallWatch
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil {
		b.w.stop()
	} else {
		b.w.arm()
	}
	return n, err
}
