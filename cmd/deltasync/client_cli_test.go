package main

import (
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/server"
)

// TestClientCLIRejectPolicy drives `deltasync client` against a real serve
// process under the reject policy: a conflicting push pauses, `conflicts`
// says how to go on, `rebase` resends the edits on the new version and
// `discard` drops them.
func TestClientCLIRejectPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	url := startServe(t, "file://"+t.TempDir())
	admin, _ := server.MintToken([]byte(replicaSecret), server.Claims{Admin: true}, time.Hour)
	user, _ := server.MintToken([]byte(replicaSecret), server.Claims{Org: "acme", User: "alice"}, time.Hour)
	if code, b := call(t, "PUT", url+"/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true,"conflict_policy":"reject"}`)); code != 200 {
		t.Fatalf("settings: %d %s", code, b)
	}
	upload := func(body string) {
		t.Helper()
		if code, b := call(t, "PUT", url+"/v1/admin/orgs/acme/users/alice/dataset", admin, []byte(body)); code != 200 {
			t.Fatalf("upload: %d %s", code, b)
		}
	}
	upload(`{"key":"a","value":{"s":"open"}}` + "\n" + `{"key":"b","value":{"s":"open"}}` + "\n")
	dir := t.TempDir()
	run := func(wantCode int, args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, "", append(append([]string{"client"}, args...), "--dir", dir)...)
		if code != wantCode {
			t.Fatalf("client %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, wantCode, out, errOut)
		}
		return out
	}
	run(0, "pull", "--server", url, "--token", user)

	// Both sides change a.s and b.s: the push is refused, pushing pauses.
	upload(`{"key":"a","value":{"s":"blocked"}}` + "\n" + `{"key":"b","value":{"s":"blocked"}}` + "\n")
	run(0, "merge", "a", `{"s":"done"}`)
	run(0, "merge", "b", `{"s":"done"}`)
	run(1, "push")
	if out := run(0, "conflicts"); !strings.Contains(out, "deltasync client rebase") {
		t.Fatalf("conflicts does not say how to go on:\n%s", out)
	}
	if out := run(0, "discard", "b"); !strings.Contains(out, "discarded 1 pending edit") {
		t.Fatalf("discard: %s", out)
	}
	run(0, "rebase")
	if got := run(0, "get", "a"); strings.TrimSpace(got) != `{"s":"done"}` {
		t.Fatalf("a after rebase = %s, want the rebased edit", got)
	}
	if got := run(0, "get", "b"); strings.TrimSpace(got) != `{"s":"blocked"}` {
		t.Fatalf("b after discard = %s, want the server's value", got)
	}
	if out := run(0, "status", "--json"); !strings.Contains(out, `"pending":0`) {
		t.Fatalf("status after rebase: %s", out)
	}
}
