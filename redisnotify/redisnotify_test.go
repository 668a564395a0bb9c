package redisnotify_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/servertest"
	"github.com/deltasync/deltasync/redisnotify"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// startRedis runs a throwaway redis-server on a free loopback port. Without
// one installed the test skips, except under CI (CI=true), where scripts/test
// installs it and a skip would hide a broken setup.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not installed (scripts/test installs it under CI)")
		}
		t.Skip("redis-server is not installed (apt-get install redis-server)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	n, err := redisnotify.New(redisnotify.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for deadline := time.Now().Add(20 * time.Second); n.Ping(t.Context()) != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not answer: %s", out.String())
		}
	}
	return url
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		msg string
		ok  bool
	}{
		{"acme alice 7", true},
		{"acme alice 0", false},
		{"acme alice -1", false},
		{"acme alice 18446744073709551616", false},
		{"acme alice", false},
		{"acme alice 7 extra", false},
		{"acme  alice 7", false},
		{"_acme alice 7", false},
		{"acme ../x 7", false},
		{"acme alice 7\n", false},
		{"", false},
	} {
		org, user, v, err := redisnotify.Parse(tt.msg)
		if (err == nil) != tt.ok {
			t.Errorf("Parse(%q) = %q %q %d, %v; want ok=%v", tt.msg, org, user, v, err, tt.ok)
		}
	}
}

// replica is a server on a loopback port with a Redis notifier, whose feed
// watcher does not list again after its first round: only the notifier
// can wake its polls.
func replica(t *testing.T, store snapshot.Store, redisURL string) (*servertest.Server, *redisnotify.Notifier) {
	t.Helper()
	n, err := redisnotify.New(redisnotify.Options{URL: redisURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	s := servertest.Start(t, servertest.Options{Store: store, Configure: func(o *server.Options) {
		o.Notifier = n
		o.Watch.Interval = time.Hour
	}})
	return s, n
}

// poll holds a long poll on s and returns its answer.
func poll(t *testing.T, s *servertest.Server, path, tok string) *http.Response {
	req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return &http.Response{StatusCode: -1, Header: http.Header{}}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// metric reads one line's value from a server's /metrics (-1 if absent).
func metric(t *testing.T, s *servertest.Server, line string) float64 {
	code, body := s.Do(t, http.MethodGet, "/metrics", "", nil)
	if code != http.StatusOK {
		return -1
	}
	for l := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, line+" "); ok {
			var x float64
			fmt.Sscan(v, &x)
			return x
		}
	}
	return -1
}

// TestNotifierWakesPollsOnAnotherReplica: a patch through replica A wakes
// a long poll on replica B through Redis, with B's feed watcher idle; a
// bogus note (a version nobody committed) wakes nobody.
func TestNotifierWakesPollsOnAnotherReplica(t *testing.T) {
	redisURL := startRedis(t)
	store := memstore.New()
	a, notifier := replica(t, store, redisURL)
	b, _ := replica(t, store, redisURL)
	user := a.UserToken(t, "acme", "alice")
	a.SetOrg(t, "acme", `{"offline_mode":true}`)
	a.Upload(t, "acme", "alice", []byte(`{"key":"k/1","value":1}`+"\n"))
	polled := make(chan *http.Response, 1)
	go func() { polled <- poll(t, b, "/v1/sync?from=1&wait=60s", user) }()
	for deadline := time.Now().Add(20 * time.Second); metric(t, b, "deltasync_hub_waiters") != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the poll never waited on B")
		}
	}
	if err := notifier.Publish(t.Context(), "acme", "alice", 99); err != nil {
		t.Fatal(err)
	}
	if code, body := a.Do(t, http.MethodPost, "/v1/patches", user, []byte(`{"id":"p1","base":1,"ops":[{"op":"put","key":"k/2","value":2}]}`)); code != http.StatusOK {
		t.Fatalf("patch on A: %d %s", code, body)
	}
	select {
	case resp := <-polled:
		if resp.StatusCode != 200 || resp.Header.Get("X-Deltasync-Version") != "2" {
			t.Fatalf("poll on B: %d version %q, want the delta to 2", resp.StatusCode, resp.Header.Get("X-Deltasync-Version"))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a patch through A did not wake the poll on B")
	}
	if n := metric(t, b, `deltasync_hub_wakeups_total{source="notify"}`); n != 1 {
		t.Errorf("B's wake-ups by the notifier: %v, want 1", n)
	}
}
