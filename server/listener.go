package server

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// listener is what the server accepts connections through. It keeps a
// flood of connections from killing or starving the process:
//
//   - Accept never fails for a condition that passes: out of file
//     descriptors (EMFILE, ENFILE), of kernel buffers, or a connection reset
//     before it was accepted. It backs off (5 ms doubling to 1 s, as
//     net/http does) and tries again, so the connections being served carry
//     on and new ones are taken again as soon as descriptors free up;
//     fasthttp would return the error from Serve, and the process would exit.
//   - At most maxConns connections are open at once, and at most perIP from
//     one address (0: no per-address limit). A connection over a limit is
//     answered at once with a JSON 503 (429 for the per-address limit) and
//     closed, so it holds a descriptor for no time at all.
//   - The connections it hands out can linger on close (see conn.Close)
//     and expose their socket (syscall.Conn), for the client watch.
//   - A connection that sends nothing at all before its header deadline is
//     answered 408 by the connection itself (see conn.Read).
type listener struct {
	net.Listener
	maxConns int
	perIP    int
	log      *slog.Logger
	m        *guardMetrics
	silent   func() // counts a connection answered 408 for sending nothing

	open    atomic.Int64
	mu      sync.Mutex
	byIP    map[string]int
	closed  chan struct{}
	closing sync.Once

	lastLog time.Time // of a transient accept error; only the accept loop touches it
}

// Backoff bounds of Accept after a transient error, as in net/http.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

func newListener(ln net.Listener, maxConns, perIP int, log *slog.Logger, m *guardMetrics, silent func()) *listener {
	return &listener{Listener: ln, maxConns: maxConns, perIP: perIP, log: log, m: m, silent: silent,
		byIP: map[string]int{}, closed: make(chan struct{})}
}

// Accept returns the next connection within the limits. It returns an
// error only when the listener is closed or broken for good.
func (l *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !transientAcceptError(err) {
				return nil, err
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			l.noteAcceptError(err, delay)
			select {
			case <-l.closed:
				return nil, net.ErrClosed
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		if cc := l.admit(c); cc != nil {
			return cc, nil
		}
	}
}

// transientAcceptError reports an Accept error that passes by itself.
func transientAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (l *listener) noteAcceptError(err error, delay time.Duration) {
	l.m.acceptErrors.Inc()
	if now := time.Now(); now.Sub(l.lastLog) >= 10*time.Second {
		l.lastLog = now
		l.log.Warn("cannot accept connections for now; serving the open ones and retrying",
			slog.Any("error", err), slog.Duration("retry_in", delay), slog.Int64("open_connections", l.open.Load()))
	}
}

// admit counts c in, or refuses it (and returns nil) if a limit is reached.
func (l *listener) admit(c net.Conn) net.Conn {
	if n := l.open.Add(1); l.maxConns > 0 && n > int64(l.maxConns) {
		l.open.Add(-1)
		l.m.connsRefused.WithLabelValues("max_conns").Inc()
		refuseConn(c, 503, "unavailable", "too many connections to this server; retry later")
		return nil
	}
	ip := remoteIP(c)
	if l.perIP > 0 && ip != "" {
		l.mu.Lock()
		over := l.byIP[ip] >= l.perIP
		if !over {
			l.byIP[ip]++
		}
		l.mu.Unlock()
		if over {
			l.open.Add(-1)
			l.m.connsRefused.WithLabelValues("max_conns_per_ip").Inc()
			refuseConn(c, 429, "rate_limited", "too many connections from your address; retry later")
			return nil
		}
	} else {
		ip = ""
	}
	l.m.connsOpen.Inc()
	return &conn{Conn: c, l: l, ip: ip}
}

func (l *listener) release(ip string) {
	l.open.Add(-1)
	l.m.connsOpen.Dec()
	if ip == "" {
		return
	}
	l.mu.Lock()
	if l.byIP[ip]--; l.byIP[ip] <= 0 {
		delete(l.byIP, ip)
	}
	l.mu.Unlock()
}

// Close closes the listener and ends a backoff wait in Accept.
func (l *listener) Close() error {
	l.closing.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// refuseConn answers a connection that is over a limit with status and a
// JSON error, without reading its request, and closes it. The answer is a
// few hundred bytes into an empty socket buffer, so it never blocks the
// accept loop for long; a write deadline makes sure.
func refuseConn(c net.Conn, status int, code, msg string) {
	answerRaw(c, status, code, msg, "Retry-After: 1\r\n")
	_ = c.Close()
}

// answerRaw writes an answer of status with a JSON error to c, bypassing
// fasthttp, and announces that the connection closes.
func answerRaw(c net.Conn, status int, code, msg, header string) {
	body := `{"error":{"code":"` + code + `","message":"` + msg + `"}}` + "\n"
	resp := "HTTP/1.1 " + strconv.Itoa(status) + " " + statusText(status) + "\r\n" +
		"Content-Type: application/json\r\n" + header + "Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = io.WriteString(c, resp)
}

func statusText(status int) string {
	switch status {
	case 408:
		return "Request Timeout"
	case 429:
		return "Too Many Requests"
	case 503:
		return "Service Unavailable"
	}
	return "Error"
}

// conn is a connection handed out by listener.
type conn struct {
	net.Conn
	l      *listener
	ip     string
	spoke  atomic.Bool // a byte was read, or the first read failed
	linger atomic.Bool
	once   sync.Once
}

// Read reads from the connection. A new connection's first read that
// times out with nothing read is answered 408, as fasthttp answers one
// that stops within its headers: with ReduceMemoryUsage, fasthttp waits
// for a connection's first byte without a buffer (so a silent connection
// costs none) but then closes it on a timeout without a word.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.spoke.Load() {
		return n, err
	}
	if n > 0 {
		c.spoke.Store(true)
	} else if err != nil {
		c.spoke.Store(true)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			answerRaw(c.Conn, 408, "bad_request", "no complete request within the time allowed", "")
			if c.l.silent != nil {
				c.l.silent()
			}
		}
	}
	return n, err
}

// Lingering on close: a connection closed with a request body still on
// its way resets (RST) when closed, and the client may lose the answer
// that came just before. So it first sends FIN, then waits up to
// lingerTime for the client to go, reading and discarding at most
// lingerBytes of what it still sends; past that it stops reading, so that
// the client is held by flow control rather than allowed to spend its data
// plan (net/http waits the same way).
const (
	lingerTime  = time.Second
	lingerBytes = 64 << 10
)

// lingerOnClose makes Close linger: the answer just written refuses a
// request whose body was not read.
func (c *conn) lingerOnClose() { c.linger.Store(true) }

// Close closes the connection (once) and counts it out of the limits.
func (c *conn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		if c.linger.Load() {
			c.lingerClose()
		}
		err = c.Conn.Close()
		c.l.release(c.ip)
	})
	return err
}

// lingerClose sends FIN where it can, then waits for the client to close
// (see lingerTime).
func (c *conn) lingerClose() {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	until := time.Now().Add(lingerTime)
	if c.Conn.SetReadDeadline(until) != nil {
		return
	}
	n, err := io.CopyN(io.Discard, c.Conn, lingerBytes)
	if n == lingerBytes && err == nil {
		time.Sleep(time.Until(until))
	}
}

// SyscallConn exposes the socket, for watchPeer.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
