package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/testkit"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/wire"
)

// serveProcess is a `deltasync serve` process started through sh with
// its file-descriptor limit lowered (ulimit -n).
type serveProcess struct {
	t      *testing.T
	url    string
	logs   *testkit.Buffer
	exited chan error
	cmd    *exec.Cmd
}

func startLimitedServe(t *testing.T, nofile int, env []string, args ...string) *serveProcess {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	args = append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), exe,
		"serve", "--addr", addr, "--jwt-secret", replicaSecret, "--log-json"}, args...)
	cmd := exec.Command("sh", args...)
	cmd.Env = append(append(os.Environ(), "DELTASYNC_TEST_AS_CLI=1"), env...)
	p := &serveProcess{t: t, url: "http://" + addr, logs: &testkit.Buffer{}, exited: make(chan error, 1), cmd: cmd}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
	})
	for range 400 {
		p.mustBeAlive("starting")
		if resp, err := http.Get(p.url + "/healthz"); err == nil {
			resp.Body.Close()
			return p
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("serve did not start: %s", p.logs.String())
	return nil
}

// mustBeAlive fails the test if the process has exited.
func (p *serveProcess) mustBeAlive(when string) {
	p.t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		p.t.Fatalf("serve exited %s: %v; logs:\n%s", when, err, tail(p.logs.String(), 3000))
	default:
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitServing polls until a plain request (a fresh connection each time)
// succeeds, failing after a generous bound.
func (p *serveProcess) waitServing(what string) {
	p.t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		p.mustBeAlive(what)
		resp, err := client.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	p.t.Fatalf("serve does not answer %s; logs:\n%s", what, tail(p.logs.String(), 3000))
}

// flood opens n connections that each send half a request and then
// nothing, as a slowloris attack does.
func flood(t *testing.T, url string, n int) []net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(url, "http://")
	var conns []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			continue // the backlog may be full: that is part of a flood
		}
		c.Write([]byte("POST /v1/patches HTTP/1.1\r\nHost: x\r\nContent-Le"))
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// waitAllClosedByServer waits until the server has closed (after an
// answer or not) every connection.
func waitAllClosedByServer(t *testing.T, conns []net.Conn) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(60 * time.Second))
			_, err := io.Copy(io.Discard, c)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if open > 0 {
		t.Fatalf("%d flood connections still open after a minute: no header timeout", open)
	}
}

// TestServeSurvivesConnectionFlood: 300 half-sent requests against a
// serve process limited to 256 file descriptors. It refuses what is over
// its connection limit (derived from the descriptor limit), closes the
// slowloris connections after --header-timeout, never exits, and serves
// normal requests again.
func TestServeSurvivesConnectionFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("floods a server process")
	}
	p := startLimitedServe(t, 256, nil, "--store", "file://"+t.TempDir(), "--header-timeout", "2s")
	conns := flood(t, p.url, 300)
	p.mustBeAlive("during the flood")
	waitAllClosedByServer(t, conns)
	p.mustBeAlive("after the flood")
	p.waitServing("after the flood")
	if !strings.Contains(p.logs.String(), `"max_conns":112`) {
		t.Errorf("the connection limit was not derived from ulimit -n 256 (want 112); logs:\n%s", tail(p.logs.String(), 3000))
	}
}

// TestServeSurvivesRunningOutOfDescriptors: with a connection limit above
// what its descriptors allow, serve runs out of descriptors (accept fails
// with EMFILE). It must not exit: it keeps its connections, retries, and
// serves again once the flood is gone.
func TestServeSurvivesRunningOutOfDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("floods a server process")
	}
	p := startLimitedServe(t, 64, nil, "--store", "file://"+t.TempDir(),
		"--max-conns", "100000", "--header-timeout", "1h")
	conns := flood(t, p.url, 100)
	for end := time.Now().Add(60 * time.Second); !strings.Contains(p.logs.String(), "cannot accept connections for now"); {
		p.mustBeAlive("out of descriptors")
		if time.Now().After(end) {
			t.Fatalf("serve never ran out of descriptors; logs:\n%s", tail(p.logs.String(), 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.mustBeAlive("out of descriptors")
	for _, c := range conns {
		c.Close()
	}
	p.waitServing("after running out of descriptors")
}

// versitygw runs the S3 test server of scripts/test on a free port over a
// temp dir, for a test to stop (SIGSTOP) without disturbing others. It
// skips the test if the binary is missing, except under CI.
type versitygw struct {
	cmd       *exec.Cmd
	storeURL  string
	accessKey string
	secretKey string
}

func startVersitygw(t *testing.T) *versitygw {
	t.Helper()
	bin, _ := filepath.Abs("../../.bin/versitygw")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("versitygw not installed at %s (scripts/test installs it)", bin)
		}
		t.Skipf("versitygw not installed at %s (scripts/test installs it)", bin)
	}
	addr := freePort(t)
	g := &versitygw{accessKey: "dos-test", secretKey: "dos-test-secret-0123456789",
		storeURL: "s3://dos-test?endpoint=" + addr + "&secure=false&create=true"}
	dir := t.TempDir()
	logs := &testkit.Buffer{}
	g.cmd = exec.Command(bin, "--quiet", "--port", addr, "posix", dir)
	g.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+g.accessKey, "ROOT_SECRET_KEY="+g.secretKey)
	g.cmd.Stdout, g.cmd.Stderr = logs, logs
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.cmd.Process.Signal(syscall.SIGCONT)
		g.cmd.Process.Kill()
		g.cmd.Wait()
	})
	for range 300 {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return g
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("versitygw did not start: %s", logs.String())
	return nil
}

func (g *versitygw) env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + g.accessKey, "AWS_SECRET_ACCESS_KEY=" + g.secretKey}
}

// TestServeAnswers503WhileS3IsStopped: with the S3 server stopped
// (SIGSTOP), every request that needs the store answers 503 with
// Retry-After within its deadline instead of hanging; once the S3 server
// resumes, requests succeed again, and a patch sent during the outage and
// retried with the same id is applied once.
func TestServeAnswers503WhileS3IsStopped(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw and a server process")
	}
	g := startVersitygw(t)
	p := startLimitedServe(t, 4096, g.env(), "--store", g.storeURL, "--store-timeout", "1s")
	admin, _ := server.MintToken([]byte(replicaSecret), server.Claims{Admin: true}, time.Hour)
	user, _ := server.MintToken([]byte(replicaSecret), server.Claims{Org: "acme", User: "alice"}, time.Hour)
	if code, b := call(t, "PUT", p.url+"/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true}`)); code != 200 {
		t.Fatalf("enable org: %d %s", code, b)
	}
	if code, b := call(t, "PUT", p.url+"/v1/admin/orgs/acme/users/alice/dataset", admin,
		[]byte(`{"key":"tasks/1","value":{"status":"open"}}`+"\n")); code != 200 {
		t.Fatalf("upload: %d %s", code, b)
	}
	patch := []byte(`{"id":"during-outage","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"done"}}]}`)

	if err := g.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		method, path, tok string
		body              []byte
	}{
		{"GET", "/v1/status", user, nil},
		{"GET", "/v1/sync?from=0", user, nil},
		{"GET", "/v1/sync?from=1&wait=20s", user, nil},
		{"POST", "/v1/patches", user, patch},
		{"GET", "/v1/admin/orgs/acme", admin, nil},
		{"PUT", "/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true}`)},
		{"PUT", "/v1/admin/orgs/acme/users/bob/dataset", admin, []byte(`{"key":"a","value":1}` + "\n")},
		{"GET", "/v1/admin/changes", admin, nil},
	} {
		code, retry, b := callRetryAfter(t, r.method, p.url+r.path, r.tok, r.body)
		if code != 503 || retry == "" || !strings.Contains(string(b), `"unavailable"`) {
			t.Errorf("%s %s with S3 stopped: %d (Retry-After %q) %s, want 503 with Retry-After", r.method, r.path, code, retry, b)
		}
	}
	p.mustBeAlive("with S3 stopped")

	if err := g.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var res wire.PatchResponse
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, _, b := callRetryAfter(t, "POST", p.url+"/v1/patches", user, patch)
		if code == 200 {
			if err := json.Unmarshal(b, &res); err != nil {
				t.Fatal(err)
			}
			break
		}
		if code != 503 || time.Now().After(end) {
			t.Fatalf("patch after S3 resumed: %d %s", code, b)
		}
	}
	code, _, b := callRetryAfter(t, "GET", p.url+"/v1/status", user, nil)
	var st wire.StatusResponse
	if code != 200 || json.Unmarshal(b, &st) != nil {
		t.Fatalf("status after S3 resumed: %d %s", code, b)
	}
	if res.Version != 2 || st.Head != 2 {
		t.Errorf("the patch retried after the outage: version %d, head %d; want it applied once, as version 2", res.Version, st.Head)
	}
}

// callRetryAfter is call, with the Retry-After header, and a client
// deadline well past every server deadline (a hang fails the test).
func callRetryAfter(t *testing.T, method, url, tok string, body []byte) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := (&http.Client{Timeout: 90 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), b
}
