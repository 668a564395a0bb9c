package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

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
