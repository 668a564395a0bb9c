package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/admin"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/servertest"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/wire"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAdminPatchCommand: `deltasync admin patch` applies the ops of an
// NDJSON file to every user of a users file, once: run again, it applies
// nothing and says so; a bad op line is named and nothing is sent.
func TestAdminPatchCommand(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	srv.SetOrg(t, "acme", `{"offline_mode":true}`)
	srv.Upload(t, "acme", "u1", []byte(`{"key":"tasks/1","value":{"s":"open"}}`+"\n"))
	env := map[string]string{"DELTASYNC_SERVER": srv.URL, "DELTASYNC_ADMIN_TOKEN": srv.AdminToken(t)}
	users := writeFile(t, "users.txt", "# members\nu1\nu2\n\nu3\n")
	ops := writeFile(t, "ops.ndjson", `{"op":"put","key":"msgs/1","value":{"text":"hello"}}`+"\n"+
		`{"op":"merge","key":"tasks/1","patch":{"s":"seen"}}`+"\n")

	stdout, stderr, code := runIn(t, env, "admin", "patch", "--org", "acme", "--users-file", users, "--input", ops)
	if code != 0 || !strings.Contains(stdout, "3 users: 3 applied, 0 unchanged, 0 already applied, 0 failed") {
		t.Fatalf("first run: %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code = runIn(t, env, "admin", "patch", "--org", "acme", "--users-file", users, "--input", ops, "--json")
	if code != 0 {
		t.Fatalf("second run: %d\n%s%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("--json printed %d lines: %s", len(lines), stdout)
	}
	for _, l := range lines {
		var r wire.FanoutResult
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.PatchResponse == nil || !r.Duplicate {
			t.Errorf("second run line %s: want a duplicate answer (%v)", l, err)
		}
	}
	// --user, with an explicit id: a new patch.
	stdout, _, code = runIn(t, env, "admin", "patch", "--org", "acme", "--user", "u2", "--input", ops, "--id", "again")
	if code != 0 || !strings.Contains(stdout, "u2: version 1 (unchanged)") {
		t.Errorf("--user --id: %d %s", code, stdout)
	}

	bad := writeFile(t, "bad.ndjson", `{"op":"put","key":"a","value":1}`+"\n"+`{"op":"put","key":"b"}`+"\n")
	_, stderr, code = runIn(t, env, "admin", "patch", "--org", "acme", "--user", "u1", "--input", bad)
	if code != exitFailure || !strings.Contains(stderr, "line 2") {
		t.Errorf("bad op line: %d %s", code, stderr)
	}
	_, stderr, code = runIn(t, env, "admin", "patch", "--org", "acme", "--user", "u1", "--users-file", users, "--input", ops)
	if code != exitUsage {
		t.Errorf("--user and --users-file: %d %s", code, stderr)
	}
}

// TestAdminOrgCommand: `deltasync admin org set` changes the settings it
// names, `get` shows them, and bad values are refused.
func TestAdminOrgCommand(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	env := map[string]string{"DELTASYNC_SERVER": srv.URL, "DELTASYNC_ADMIN_TOKEN": srv.AdminToken(t)}
	stdout, stderr, code := runIn(t, env, "admin", "org", "set", "acme", "--offline-mode", "on", "--conflict-policy", "server-wins", "--max-patch-ops", "50", "--json")
	if code != 0 {
		t.Fatalf("set: %d %s%s", code, stdout, stderr)
	}
	stdout, _, code = runIn(t, env, "admin", "org", "get", "acme", "--json")
	var st server.OrgSettings
	if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil {
		t.Fatalf("get: %d %s %v", code, stdout, err)
	}
	if !st.OfflineMode || st.ConflictPolicy != "server-wins" || st.MaxPatchOps != 50 {
		t.Errorf("settings %+v", st)
	}
	for _, args := range [][]string{
		{"admin", "org", "set", "acme", "--offline-mode", "maybe"},
		{"admin", "org", "set", "acme"},
		{"admin", "org", "get"},
		{"admin", "org", "get", "_x"},
		{"admin", "org", "list", "acme"},
	} {
		if _, stderr, code := runIn(t, env, args...); code != exitUsage {
			t.Errorf("%v: %d %s", args, code, stderr)
		}
	}
	if _, stderr, code := runIn(t, env, "admin", "org", "set", "acme", "--conflict-policy", "loudest-wins"); code != exitFailure || !strings.Contains(stderr, "400") {
		t.Errorf("bad policy: %d %s", code, stderr)
	}
}

// TestOrgAdminToken: `deltasync token --admin --org O` mints a token that
// administers O through `deltasync admin` and is refused (403) for any
// other org; an admin token names no user.
func TestOrgAdminToken(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	secret := map[string]string{"DELTASYNC_JWT_SECRET": string(srv.Secret)}
	tok, stderr, code := runIn(t, secret, "token", "--admin", "--org", "acme")
	if code != 0 {
		t.Fatal(stderr)
	}
	c, err := parseToken(t, tok, string(srv.Secret))
	if err != nil || !c.Admin || c.Org != "acme" || c.User != "" {
		t.Fatalf("claims %+v %v", c, err)
	}
	env := map[string]string{"DELTASYNC_SERVER": srv.URL, "DELTASYNC_ADMIN_TOKEN": strings.TrimSpace(tok)}
	if _, stderr, code := runIn(t, env, "admin", "org", "set", "acme", "--offline-mode", "on"); code != 0 {
		t.Errorf("own org: %d %s", code, stderr)
	}
	if _, stderr, code := runIn(t, env, "admin", "org", "set", "globex", "--offline-mode", "on"); code != exitFailure || !strings.Contains(stderr, "403") {
		t.Errorf("other org: %d %s", code, stderr)
	}
	ops := writeFile(t, "ops.ndjson", `{"op":"delete","key":"k"}`+"\n")
	if _, stderr, code := runIn(t, env, "admin", "patch", "--org", "globex", "--user", "u", "--input", ops); code != exitFailure || !strings.Contains(stderr, "403") {
		t.Errorf("patch in other org: %d %s", code, stderr)
	}
	if _, _, code := runIn(t, secret, "token", "--admin", "--user", "alice"); code != exitUsage {
		t.Errorf("--admin --user: exit %d", code)
	}
}

// TestEditTimeReachesTheFeed: an edit made with `deltasync client` carries
// the device's time of the edit to the org's change feed.
func TestEditTimeReachesTheFeed(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{Configure: func(o *server.Options) { o.FeedSettle = time.Millisecond }})
	srv.SetOrg(t, "acme", `{"offline_mode":true}`)
	env := map[string]string{"DELTASYNC_SERVER": srv.URL, "DELTASYNC_TOKEN": srv.UserToken(t, "acme", "alice"),
		"DELTASYNC_CLIENT_DIR": t.TempDir()}
	before := time.Now().UnixMilli()
	if _, stderr, code := runIn(t, env, "client", "put", "tasks/1", `{"s":"done"}`); code != 0 {
		t.Fatal(stderr)
	}
	after := time.Now().UnixMilli()
	if _, stderr, code := runIn(t, env, "client", "push"); code != 0 {
		t.Fatal(stderr)
	}
	adm := &admin.Client{URL: srv.URL, Token: srv.AdminToken(t)}
	var evs []diff.Event
	for end := time.Now().Add(10 * time.Second); len(evs) == 0 && time.Now().Before(end); {
		p, err := adm.Changes(t.Context(), "acme", "", 10, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		evs = p.Entries
	}
	if len(evs) != 1 || len(evs[0].Ops) != 1 || evs[0].Source != diff.SourceDevice {
		t.Fatalf("feed: %+v", evs)
	}
	if at := evs[0].Ops[0].Edit.At; at < before || at > after {
		t.Errorf("edit time %d, want between %d and %d", at, before, after)
	}
}
