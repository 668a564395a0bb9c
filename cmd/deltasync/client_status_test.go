package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/client"
	"github.com/deltasync/deltasync/server"
)

// stoppableServe runs `deltasync serve` as a process that the test can
// stop (startServe's lives as long as the test).
func stoppableServe(t *testing.T, store string) (url string, stop func()) {
	t.Helper()
	addr := freePort(t)
	cmd := cliCommand(t, "serve", "--addr", addr, "--store", store, "--jwt-secret", replicaSecret, "--log-json")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	for range 400 {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			return "http://" + addr, stop
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("serve did not start: %s", logs.String())
	return "", nil
}

// cliStatus is `deltasync client status --json`.
type cliStatus struct {
	State                string `json:"state"`
	Reason               string `json:"reason"`
	Message              string `json:"message"`
	Version              uint64 `json:"version"`
	LastSyncedUnix       int64  `json:"last_synced_unix"`
	LastContactUnix      int64  `json:"last_contact_unix"`
	BytesDownSinceOnline int64  `json:"bytes_down_since_online"`
	BytesUpSinceOnline   int64  `json:"bytes_up_since_online"`
	OfflineMode          bool   `json:"offline_mode"`
}

// TestClientCLIStatusSequence is issue 12's scripted status acceptance over
// CLI sessions, each command a new process: after `sync`, `status` says
// synced with the version and time (it said offline/no_connection); with
// the server stopped, the first failed attempt makes it offline
// (no_connection) and ten more change nothing (no flicker, the
// since-online counters kept); offline mode on an empty directory is
// refused. The library's Status of the directory agrees with `status`.
func TestClientCLIStatusSequence(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	store := "file://" + t.TempDir()
	url, stop := stoppableServe(t, store)
	admin, _ := server.MintToken([]byte(replicaSecret), server.Claims{Admin: true}, time.Hour)
	user, _ := server.MintToken([]byte(replicaSecret), server.Claims{Org: "acme", User: "alice"}, time.Hour)
	if code, b := call(t, "PUT", url+"/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true}`)); code != 200 {
		t.Fatalf("settings: %d %s", code, b)
	}
	if code, b := call(t, "PUT", url+"/v1/admin/orgs/acme/users/alice/dataset", admin, []byte(`{"key":"tasks/1","value":{"s":"open"}}`+"\n")); code != 200 {
		t.Fatalf("upload: %d %s", code, b)
	}
	dir := t.TempDir()
	run := func(wantOK bool, args ...string) (string, string) {
		t.Helper()
		out, errOut, code := cli(t, "", append(append([]string{"client"}, args...), "--dir", dir)...)
		if (code == 0) != wantOK {
			t.Fatalf("client %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
		return out, errOut
	}
	status := func() cliStatus {
		t.Helper()
		out, _ := run(true, "status", "--json")
		var s cliStatus
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("status --json: %v: %s", err, out)
		}
		return s
	}

	run(true, "sync", "--server", url, "--token", user)
	s := status()
	if s.State != client.StateSynced || s.Reason != "" || s.Version != 1 || s.LastSyncedUnix == 0 || s.LastContactUnix == 0 {
		t.Fatalf("status in a new process after sync: %+v, want synced at version 1 with its time", s)
	}
	if out, _ := run(true, "status"); !strings.Contains(out, "synced") || !strings.Contains(out, "last synced") ||
		!strings.Contains(out, time.Unix(s.LastSyncedUnix, 0).Format(time.RFC3339)) {
		t.Fatalf("status (text) after sync:\n%s", out)
	}
	online := s

	stop()
	seen := []cliStatus{s}
	for range 11 { // the first failed attempt, then ten more
		run(false, "sync")
		seen = append(seen, status())
	}
	changes := 0
	for i := 1; i < len(seen); i++ {
		if seen[i].State != seen[i-1].State || seen[i].Reason != seen[i-1].Reason {
			changes++
		}
	}
	first := seen[1]
	if first.State != client.StateOffline || first.Reason != client.ReasonNoConnection || changes != 1 {
		t.Fatalf("server stopped: first failed attempt → %s/%s, %d state changes over 11 attempts; want offline/no_connection, 1",
			first.State, first.Reason, changes)
	}
	last := seen[len(seen)-1]
	if last.BytesDownSinceOnline != online.BytesDownSinceOnline || last.LastSyncedUnix != online.LastSyncedUnix ||
		!strings.Contains(last.Message, "cannot reach the server") {
		t.Fatalf("after 11 failed attempts: %+v; want the online period's counters and times kept (%+v)", last, online)
	}

	// The library's Status of the same directory says the same.
	c, err := client.Open(dir, client.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	ls := c.Status()
	c.Close()
	if ls.State != last.State || ls.Reason != last.Reason || ls.Message != last.Message || ls.LocalVersion != last.Version ||
		ls.LastSyncedUnix != last.LastSyncedUnix || ls.BytesDownSinceOnline != last.BytesDownSinceOnline {
		t.Fatalf("Status %+v and CLI status %+v disagree", ls, last)
	}

	// Back: synced again, on the same store.
	url2, _ := stoppableServe(t, store)
	run(true, "sync", "--server", url2)
	if s := status(); s.State != client.StateSynced {
		t.Fatalf("after the server is back: %+v", s)
	}

	// Offline mode on an empty directory: refused, saying a sync must
	// finish first; nothing changed.
	empty := t.TempDir()
	out, errOut, code := cli(t, "", "client", "offline", "on", "--dir", empty)
	if code == 0 || !strings.Contains(errOut, "sync") {
		t.Fatalf("offline on in an empty directory: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	out, _, _ = cli(t, "", "client", "status", "--json", "--dir", empty)
	if !strings.Contains(out, `"offline_mode":false`) {
		t.Fatalf("status after the refused offline on: %s", out)
	}
}
