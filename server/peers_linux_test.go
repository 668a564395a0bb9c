//go:build linux

package server

import (
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPairs returns n connected loopback TCP pairs: the server's end (as
// accepted) and the client's.
func tcpPairs(t *testing.T, n int) (servers, clients []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		servers, clients = append(servers, s), append(clients, c)
	}
	return servers, clients
}

func newTestPeerWatcher(t *testing.T) *peerWatcher {
	p := newPeerWatcher()
	t.Cleanup(p.close)
	return p
}

func watchedCount(p *peerWatcher) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.watched)
}

// goneCount is a gone callback that counts its calls.
type goneCount struct{ n atomic.Int32 }

func (c *goneCount) gone() { c.n.Add(1) }

// TestPeerWatcherReportsAClosedPeerOnce: a client that closes is reported
// once, and its watch is in the epoll instance, not a goroutine's.
func TestPeerWatcherReportsAClosedPeerOnce(t *testing.T) {
	p := newTestPeerWatcher(t)
	servers, clients := tcpPairs(t, 1)
	var c goneCount
	stop := p.watch(servers[0], c.gone, time.Minute)
	if p.ep == nil {
		t.Fatal("the epoll instance could not be made: every watch fell back to a goroutine")
	}
	clients[0].Close()
	waitUntil(t, "the closed client is reported", func() bool { return c.n.Load() > 0 })
	stop()
	if n := c.n.Load(); n != 1 {
		t.Errorf("gone called %d times, want once", n)
	}
	if n := watchedCount(p); n != 0 {
		t.Errorf("%d watches left after stop, want none", n)
	}
}

// TestPeerWatcherStopBeforeCloseReportsNothing: once stop has returned, the
// client's leaving is not reported; the connection can be watched again (it
// left the epoll instance), and that watch reports the close at once.
func TestPeerWatcherStopBeforeCloseReportsNothing(t *testing.T) {
	p := newTestPeerWatcher(t)
	servers, clients := tcpPairs(t, 1)
	var first, second goneCount
	stop := p.watch(servers[0], first.gone, time.Minute)
	stop()
	clients[0].Close()
	stop = p.watch(servers[0], second.gone, time.Minute)
	defer stop()
	waitUntil(t, "the second watch reports the closed client", func() bool { return second.n.Load() == 1 })
	if n := first.n.Load(); n != 0 {
		t.Errorf("a stopped watch reported the client's leaving %d times, want 0", n)
	}
}

// TestPeerWatcherManyConnections: of many connections watched at once,
// exactly the closed ones are reported, each once; one whose client sent
// bytes without closing is not (a pipelined request is no goodbye), one
// that sent bytes and closed is; stop works on all of them.
func TestPeerWatcherManyConnections(t *testing.T) {
	const n = 200
	p := newTestPeerWatcher(t)
	servers, clients := tcpPairs(t, n)
	counts := make([]goneCount, n)
	stops := make([]func(), n)
	for i := range n {
		stops[i] = p.watch(servers[i], counts[i].gone, time.Minute)
	}
	closed := func(i int) bool { return i%3 == 0 }
	for i := range n {
		if i%2 == 0 {
			if _, err := clients[i].Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		if closed(i) {
			clients[i].Close()
		}
	}
	want := 0
	for i := range n {
		if closed(i) {
			want++
		}
	}
	var got int
	waitUntil(t, "every closed client is reported", func() bool {
		got = 0
		for i := range n {
			got += int(counts[i].n.Load())
		}
		return got >= want
	})
	for i := range n {
		stops[i]()
	}
	for i := range n {
		if g, w := counts[i].n.Load(), closed(i); (g == 1) != w || g > 1 {
			t.Errorf("connection %d (closed %v, sent bytes %v): reported %d times", i, w, i%2 == 0, g)
		}
	}
	if n := watchedCount(p); n != 0 {
		t.Errorf("%d watches left after every stop, want none", n)
	}
}

// TestPeerWatcherAfterClose: a server shut down with requests still running
// stops their watches without harm, and a watch begun afterwards falls back
// to a goroutine of its own, which still reports the client's leaving.
func TestPeerWatcherAfterClose(t *testing.T) {
	p := newPeerWatcher()
	servers, clients := tcpPairs(t, 2)
	var before, after goneCount
	stop := p.watch(servers[0], before.gone, time.Minute)
	p.close()
	stop()
	stop = p.watch(servers[1], after.gone, time.Minute)
	defer stop()
	clients[1].Close()
	waitUntil(t, "the fallback watch reports the closed client", func() bool { return after.n.Load() == 1 })
}
