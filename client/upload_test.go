package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/server"
)

// wireCounter counts the bytes a client's connections write to and read
// from the network: what a phone's data plan pays for, headers included.
type wireCounter struct {
	written, read atomic.Int64
}

type countedConn struct {
	net.Conn
	w *wireCounter
}

func (c countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.written.Add(int64(n))
	return n, err
}

func (c countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.read.Add(int64(n))
	return n, err
}

// countWire makes the client's own transport (the default one, with its
// Expect settings) count what crosses the network.
func countWire(t *testing.T, c *Client) *wireCounter {
	t.Helper()
	tr, ok := c.httpc.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("client transport is %T, want the default *http.Transport", c.httpc.Transport)
	}
	w := &wireCounter{}
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countedConn{conn, w}, nil
	}
	return w
}

// TestRefusedBigPatchCostsOnlyHeaders protects the data plan: the server
// answers "Expect: 100-continue" with its final 401 before reading a body,
// but the client never asked, so a refused 1 MB patch went out whole (and
// was counted as traffic up). Now a big body waits for the server's go:
// refused, only the headers cross the network and nothing is counted up.
func TestRefusedBigPatchCostsOnlyHeaders(t *testing.T) {
	ts := newTestServer(t)
	opts := DefaultOptions()
	opts.ServerURL = ts.url
	// A token the server cannot verify: refused from the headers.
	bad, err := server.MintToken([]byte("some-other-secret-0123456789abcdef"), server.Claims{Org: testOrg, User: "ann"}, time.Hour)
	mustDo(t, err)
	opts.Token = bad
	c, err := Open(t.TempDir(), opts)
	mustDo(t, err)
	t.Cleanup(func() { c.Close() })
	w := countWire(t, c)

	form := photoForm(1<<20, 7) // a photo: zstd leaves it near 1 MB
	mustDo(t, c.Put("forms/1", form))
	_, err = c.Push(context.Background())
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("push with a bad token: %v, want ErrAuth", err)
	}
	t.Logf("refused patch: %d bytes written", w.written.Load())
	if n := w.written.Load(); n > 16<<10 {
		t.Errorf("a refused 1 MB patch wrote %d bytes to the network, want only headers", n)
	}
	if s := c.Status(); s.BytesUpTotal != 0 || s.BytesUpSinceOnline != 0 {
		t.Errorf("refused patch counted as traffic up: total %d, since online %d", s.BytesUpTotal, s.BytesUpSinceOnline)
	}

	// Accepted, the same patch goes out whole and is counted as it left.
	mustDo(t, c.SetServer(ts.url, ts.token("ann")))
	before := w.written.Load()
	res, err := c.Push(context.Background())
	mustDo(t, err)
	sent := w.written.Load() - before
	if s := c.Status(); s.BytesUpTotal < 700<<10 || s.BytesUpTotal > sent || res.BytesUp != s.BytesUpTotal {
		t.Errorf("accepted patch: %d bytes counted up (result %d), %d written to the network", s.BytesUpTotal, res.BytesUp, sent)
	}
}

// TestUnreachableServerCountsNoTrafficUp protects issue 12's counter rule:
// a patch whose connection was refused never left, yet its bytes were
// counted up.
func TestUnreachableServerCountsNoTrafficUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustDo(t, err)
	url := "http://" + ln.Addr().String()
	ln.Close() // nothing listens: every dial is refused
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = url, "t"
	c, err := Open(t.TempDir(), opts)
	mustDo(t, err)
	t.Cleanup(func() { c.Close() })
	mustDo(t, c.Put("forms/1", photoForm(100<<10, 1)))
	mustDo(t, c.Put("forms/2", []byte(`{"small":true}`)))
	for range 3 {
		if _, err := c.Push(context.Background()); !errors.Is(err, ErrNoConnection) {
			t.Fatalf("push to nothing: %v, want ErrNoConnection", err)
		}
	}
	if s := c.Status(); s.BytesUpTotal != 0 || s.BytesDownTotal != 0 {
		t.Errorf("traffic counted with no connection: %d up, %d down", s.BytesUpTotal, s.BytesDownTotal)
	}
}
