package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeStartsAndStopsOnSIGTERM runs `deltasync serve` as a process: it
// answers /healthz, and SIGTERM ends it cleanly (exit 0).
func TestServeStartsAndStopsOnSIGTERM(t *testing.T) {
	addr := freePort(t)
	cmd := cliCommand(t, "serve", "--dev", "--addr", addr, "--store", "file://"+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	up := false
	for i := 0; i < 100 && !up; i++ {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			up = resp.StatusCode == 200
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !up {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("serve did not answer /healthz; stderr:\n%s", stderr.String())
	}
	resp, err := http.Get("http://" + addr + "/v1/status")
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("status without token: %v %v", resp, err)
	}
	resp.Body.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	if !bytes.Contains(stderr.Bytes(), []byte("development JWT secret")) {
		t.Errorf("--dev did not warn loudly; stderr:\n%s", stderr.String())
	}
}

func TestServeRefusesWithoutSecret(t *testing.T) {
	_, stderr, code := runIn(t, nil, "serve", "--addr", freePort(t), "--store", "file://"+t.TempDir())
	if code == 0 {
		t.Fatalf("serve started without a JWT secret; stderr: %s", stderr)
	}
}

// TestServeRefusesABadNotifierURL: a --notify-redis that is no Redis URL
// stops the start with an error naming it, before the store is touched.
func TestServeRefusesABadNotifierURL(t *testing.T) {
	dir := t.TempDir()
	_, stderr, code := runIn(t, nil, "serve", "--dev", "--addr", freePort(t), "--store", "file://"+dir, "--notify-redis", "http://127.0.0.1:6379")
	if code == 0 || !strings.Contains(stderr, "redisnotify") {
		t.Fatalf("serve with a bad --notify-redis: exit %d, stderr %s", code, stderr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the refused start left %d entries in the store", len(entries))
	}
}
