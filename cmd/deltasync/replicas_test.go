package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/wire"
)

const replicaSecret = "replica-test-jwt-secret-0123456789abcdef"

// startServe runs `deltasync serve` as a process on a free port, with
// extra flags if given.
func startServe(t *testing.T, store string, extra ...string) string {
	t.Helper()
	addr := freePort(t)
	args := append([]string{"serve", "--addr", addr, "--store", store, "--jwt-secret", replicaSecret, "--log-json"}, extra...)
	cmd := cliCommand(t, args...)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	for range 400 { // 10 s: a loaded machine starts processes slowly
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			return "http://" + addr
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("serve did not start: %s", logs.String())
	return ""
}

func call(t *testing.T, method, url, tok string, body []byte) (int, []byte) {
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestReplicasConcurrentPatches: three server processes on one store, three
// clients firing 100 patches each for the same user across them. Every
// patch gets a receipt, the versions form one chain, and every applied op
// is in the final version.
func TestReplicasConcurrentPatches(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three server processes")
	}
	dir := t.TempDir()
	store := "file://" + dir
	urls := []string{startServe(t, store), startServe(t, store), startServe(t, store)}
	admin, _ := server.MintToken([]byte(replicaSecret), server.Claims{Admin: true}, time.Hour)
	user, _ := server.MintToken([]byte(replicaSecret), server.Claims{Org: "acme", User: "alice"}, time.Hour)
	if code, b := call(t, "PUT", urls[0]+"/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true}`)); code != 200 {
		t.Fatalf("enable org: %d %s", code, b)
	}
	if code, b := call(t, "PUT", urls[1]+"/v1/admin/orgs/acme/users/alice/dataset", admin,
		[]byte(`{"key":"tasks/shared","value":{"status":"open"}}`+"\n")); code != 200 {
		t.Fatalf("upload: %d %s", code, b)
	}
	const clients, patches = 3, 100
	var wg sync.WaitGroup
	answers := make([][]wire.PatchResponse, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range patches {
				url := urls[(c+p)%len(urls)]
				body := fmt.Sprintf(`{"id":"c%d-p%d","base":1,"ops":[{"op":"put","key":"items/c%d-%03d","value":{"n":%d}},{"op":"merge","key":"tasks/shared","patch":{"c%d":%d}}]}`, c, p, c, p, p, c, p)
				code, b := call(t, "POST", url+"/v1/patches", user, []byte(body))
				var pr wire.PatchResponse
				if code != 200 || json.Unmarshal(b, &pr) != nil || len(pr.Receipts) != 2 {
					t.Errorf("client %d patch %d via %s: %d %s", c, p, url, code, b)
					return
				}
				answers[c] = append(answers[c], pr)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ctx := context.Background()
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	head, err := snapshot.Head(ctx, s, "acme", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if head != 1+clients*patches {
		t.Fatalf("head %d, want %d (one version per patch)", head, 1+clients*patches)
	}
	seen := map[uint64]bool{}
	for c := range answers {
		for _, a := range answers[c] {
			if seen[a.Version] {
				t.Fatalf("two patches answered with version %d", a.Version)
			}
			seen[a.Version] = true
		}
	}
	for v := uint64(2); v <= head; v++ {
		m, err := snapshot.ReadManifestHeader(ctx, s, "acme", "alice", v)
		if err != nil || m.Parent != v-1 {
			t.Fatalf("version %d: parent %d, %v", v, m.Parent, err)
		}
	}
	// Every op is in the final version.
	secret, err := snapshot.LoadOrCreateSecret(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.ReadManifest(ctx, s, "acme", "alice", head)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	if err := snapshot.NewReader(s, m, secret).Records(ctx, func(k, v []byte) error {
		got[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	shared := got["tasks/shared"]
	for c := range clients {
		for p := range patches {
			if got[fmt.Sprintf("items/c%d-%03d", c, p)] != fmt.Sprintf(`{"n":%d}`, p) {
				t.Fatalf("put of client %d patch %d missing", c, p)
			}
		}
		if !strings.Contains(shared, fmt.Sprintf(`"c%d":`, c)) {
			t.Fatalf("merges of client %d missing from %s", c, shared)
		}
	}
}

// TestReplicasReadYourWritesAndWakeUps: three server processes on one store
// behind no sticky balancer. A patch through one replica is seen by a sync
// through another whose cached head trails (the client names the version
// its receipt gave: min=V), and a long poll waiting on one replica is woken
// by a version committed through another (its change-feed watcher).
func TestReplicasReadYourWritesAndWakeUps(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three server processes")
	}
	store := "file://" + t.TempDir()
	// Cached heads trail for the whole test: only min (or a poll) may help.
	urls := []string{
		startServe(t, store, "--head-cache-ttl", "1h"),
		startServe(t, store, "--head-cache-ttl", "1h"),
		startServe(t, store, "--head-cache-ttl", "1h"),
	}
	admin, _ := server.MintToken([]byte(replicaSecret), server.Claims{Admin: true}, time.Hour)
	user, _ := server.MintToken([]byte(replicaSecret), server.Claims{Org: "acme", User: "alice"}, time.Hour)
	if code, b := call(t, "PUT", urls[0]+"/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true}`)); code != 200 {
		t.Fatalf("enable org: %d %s", code, b)
	}
	if code, b := call(t, "PUT", urls[0]+"/v1/admin/orgs/acme/users/alice/dataset", admin,
		[]byte(`{"key":"tasks/1","value":{"status":"open"}}`+"\n")); code != 200 {
		t.Fatalf("upload: %d %s", code, b)
	}
	// Replica 1 caches head 1.
	if code, b := call(t, "GET", urls[1]+"/v1/sync?from=1", user, nil); code != 200 || !strings.Contains(string(b), `"up_to_date":true`) {
		t.Fatalf("sync on replica 1: %d %s", code, b)
	}
	code, b := call(t, "POST", urls[2]+"/v1/patches", user, []byte(`{"id":"p1","base":1,"ops":[{"op":"put","key":"tasks/2","value":{}}]}`))
	var pr wire.PatchResponse
	if code != 200 || json.Unmarshal(b, &pr) != nil || pr.Version != 2 {
		t.Fatalf("patch on replica 2: %d %s", code, b)
	}
	resp := get(t, urls[1]+"/v1/sync?from=1&min=2", user)
	if resp.StatusCode != 200 || resp.Header.Get("X-Deltasync-Version") != "2" {
		t.Fatalf("sync from=1&min=2 on replica 1: %d version %q, want the delta to 2", resp.StatusCode, resp.Header.Get("X-Deltasync-Version"))
	}

	// A long poll on replica 1 is woken by a patch through replica 0.
	polled := make(chan *http.Response, 1)
	go func() { polled <- get(t, urls[1]+"/v1/sync?from=2&wait=60s", user) }()
	waitFor(t, "the poll waits on replica 1", func() bool { return metric(t, urls[1], "deltasync_hub_waiters") == 1 })
	if code, b := call(t, "POST", urls[0]+"/v1/patches", user, []byte(`{"id":"p2","base":2,"ops":[{"op":"put","key":"tasks/3","value":{}}]}`)); code != 200 {
		t.Fatalf("patch on replica 0: %d %s", code, b)
	}
	select {
	case resp := <-polled:
		if resp.StatusCode != 200 || resp.Header.Get("X-Deltasync-Version") != "3" {
			t.Fatalf("poll on replica 1: %d version %q, want the delta to 3", resp.StatusCode, resp.Header.Get("X-Deltasync-Version"))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a patch through replica 0 did not wake the poll on replica 1")
	}
}

// get sends an authorised GET and returns the response with its body read.
func get(t *testing.T, url, tok string) *http.Response {
	req, _ := http.NewRequest("GET", url, nil)
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

// metric reads one unlabelled metric of a server's /metrics (-1 if absent).
func metric(t *testing.T, base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Error(err)
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var x float64
			fmt.Sscan(v, &x)
			return x
		}
	}
	return -1
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
