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

// startServe runs `deltasync serve` as a process on a free port.
func startServe(t *testing.T, store string) string {
	t.Helper()
	addr := freePort(t)
	cmd := cliCommand(t, "serve", "--addr", addr, "--store", store, "--jwt-secret", replicaSecret, "--log-json")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	for range 200 {
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
