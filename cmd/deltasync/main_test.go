package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/deltasync/deltasync/internal/bytesize"
	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storeurl"
)

// The test binary doubles as the deltasync binary: run with
// DELTASYNC_TEST_AS_CLI=1 it executes main, so tests can run the real
// command as a process (exit codes, kill -9) without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("DELTASYNC_TEST_AS_CLI") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// cli runs the deltasync binary (this test binary) as a process.
func cli(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return cliEnv(t, nil, stdin, args...)
}

// cliEnv is cli with env added to the process's environment.
func cliEnv(t *testing.T, env []string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := cliCommand(t, args...)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

func cliCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe, args...)
	cmd.Env = append(os.Environ(), "DELTASYNC_TEST_AS_CLI=1")
	return cmd
}

// runIn runs a command in-process. The S3 credentials that scripts/test
// exports (the first S3 server's) reach the command unless getenv names
// them, so a test can pass s3test.URL as --store; a test that needs them
// absent maps them to "".
func runIn(t *testing.T, getenv map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	e := testEnv(getenv, &out, &errb)
	code = run(context.Background(), e, args)
	return out.String(), errb.String(), code
}

func testEnv(getenv map[string]string, stdout, stderr io.Writer) *env {
	return &env{stdin: strings.NewReader(""), stdout: stdout, stderr: stderr, getenv: func(k string) string {
		if v, ok := getenv[k]; ok {
			return v
		}
		if k == envAccessKey || k == envSecretKey {
			return os.Getenv(k)
		}
		return ""
	}}
}

func genFile(t *testing.T, size string, seed string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sample.ndjson")
	if _, stderr, code := runIn(t, nil, "gen", "--size", size, "--seed", seed, "--out", path); code != 0 {
		t.Fatalf("gen: exit %d: %s", code, stderr)
	}
	return path
}

// storeObjects lists the objects of a file store directory (its own
// temp and lock files aside).
func storeObjects(t *testing.T, dir string) []string {
	t.Helper()
	var objs []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a missing store directory holds nothing
		}
		if d.IsDir() && p != dir && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			objs = append(objs, p)
		}
		return nil
	})
	return objs
}

var requiredFields = []string{"org", "user", "version", "created", "records", "stream_bytes", "chunks",
	"chunks_new", "stored_bytes_new", "puts", "seconds", "error"}

// oneJSON decodes stdout that must be exactly one JSON object.
func oneJSON(t *testing.T, stdout string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(stdout))
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("stdout %q: %v", stdout, err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err == nil {
		t.Fatalf("stdout has more than one JSON value: %q", stdout)
	}
	if strings.Count(strings.TrimSpace(stdout), "\n") != 0 {
		t.Fatalf("stdout is not one line: %q", stdout)
	}
	for _, f := range requiredFields {
		if _, ok := m[f]; !ok {
			t.Errorf("JSON lacks %q: %s", f, stdout)
		}
	}
	return m
}

func TestBuildJSONThenUnchanged(t *testing.T) {
	input := genFile(t, "512KB", "1")
	store := t.TempDir()
	args := []string{"build", "--store", "file://" + store, "--org", "demo", "--user", "alice", "--input", input, "--json"}

	stdout, stderr, code := cli(t, "", args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	m := oneJSON(t, stdout)
	if m["created"] != true || m["version"] != 1.0 || m["org"] != "demo" || m["user"] != "alice" ||
		m["records"].(float64) < 100 || m["puts"].(float64) < 3 || m["error"] != "" {
		t.Fatalf("first build: %s", stdout)
	}

	stdout, stderr, code = cli(t, "", args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	again := oneJSON(t, stdout)
	if again["created"] != false || again["puts"] != 0.0 || again["version"] != 1.0 || again["records"] != m["records"] {
		t.Fatalf("second build: %s", stdout)
	}

	// The same input from stdin is the same data set.
	data, _ := os.ReadFile(input)
	stdout, stderr, code = cli(t, string(data), "build", "--store", store, "--org", "demo", "--user", "alice", "--input", "-", "--json")
	if code != 0 || oneJSON(t, stdout)["created"] != false {
		t.Fatalf("stdin build: exit %d %s %s", code, stdout, stderr)
	}
}

func TestBuildHumanSummary(t *testing.T) {
	input := genFile(t, "64KB", "2")
	store := t.TempDir()
	stdout, stderr, code := runIn(t, nil, "build", "--store", store, "--org", "demo", "--user", "bob", "--input", input)
	if code != 0 || !strings.Contains(stdout, "demo/bob: version 1 created") || !strings.Contains(stdout, "store puts") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, _, code = runIn(t, nil, "build", "--store", store, "--org", "demo", "--user", "bob", "--input", input)
	if code != 0 || !strings.Contains(stdout, "unchanged, still version 1") {
		t.Fatalf("exit %d\n%s", code, stdout)
	}
}

func TestBuildBadLineWritesNothing(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "bad.ndjson")
	os.WriteFile(input, []byte("{\"key\":\"a\",\"value\":1}\n\n{\"key\":\"b\",\"value\":tru}\n"), 0o644)
	store := filepath.Join(dir, "store")
	stdout, stderr, code := cli(t, "", "build", "--store", "file://"+store, "--org", "demo", "--user", "alice", "--input", input)
	if code != 1 || !strings.Contains(stderr, "line 3") || !strings.Contains(stderr, input) {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming the file and line 3", code, stderr)
	}
	if stdout != "" {
		t.Fatalf("stdout %q, want nothing", stdout)
	}
	if objs := storeObjects(t, store); len(objs) != 0 {
		t.Fatalf("a bad input wrote %v", objs)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nope"},
		{"build", "--bogus"},
		{"build", "--org", "a", "--user", "b"},
		{"build", "--input-dir", "x", "--org", "a"},
		{"build", "--input-dir", "x", "--shard", "3/3"},
		{"build", "--org", "a", "--user", "b", "--input", "f", "--jobs", "2"},
		{"build", "--org", "a", "--user", "b", "--input", "f", "stray"},
		{"gen"},
		{"gen", "--size", "12parsecs"},
		{"gen", "--size", "1MB", "--users", "3"},
		{"gen", "--users", "3", "--out-dir", "x", "--size-per-user", "9KB-1KB"},
		{"token", "--org", "a", "--user", "b"},
		{"token", "--org", "a", "--dev"},
	} {
		_, stderr, code := runIn(t, nil, args...)
		if code != exitUsage || stderr == "" {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 with a message", args, code, stderr)
		}
	}
	for _, args := range [][]string{{"help"}, {"build", "--help"}, {"help", "gen"}, {"token", "-h"}} {
		stdout, _, code := runIn(t, nil, args...)
		if code != 0 || !strings.Contains(stdout, "Usage") {
			t.Errorf("%q: exit %d, stdout %q", args, code, stdout)
		}
	}
}

func TestGenIsDeterministic(t *testing.T) {
	a, _, _ := runIn(t, nil, "gen", "--size", "200KB", "--seed", "7")
	b, _, _ := runIn(t, nil, "gen", "--size", "200KiB", "--seed", "7")
	c, _, _ := runIn(t, nil, "gen", "--size", "200KB", "--seed", "8")
	if a != b || len(a) == 0 {
		t.Fatal("the same size and seed gave different data")
	}
	if a == c {
		t.Fatal("different seeds gave the same data")
	}
	if n := len(a); n < 195<<10 || n > 205<<10 {
		t.Fatalf("--size 200KB gave %d bytes, want about %d", n, 200<<10)
	}
	file, err := os.ReadFile(genFile(t, "200KB", "7"))
	if err != nil || string(file) != a {
		t.Fatalf("--out differs from stdout (%v)", err)
	}

	d1, d2 := t.TempDir(), t.TempDir()
	for _, d := range []string{d1, d2} {
		if _, stderr, code := runIn(t, nil, "gen", "--users", "12", "--orgs", "3", "--out-dir", d, "--size-per-user", "1KB-8KB", "--seed", "3"); code != 0 {
			t.Fatal(stderr)
		}
	}
	files, _ := filepath.Glob(filepath.Join(d1, "*", "*.ndjson"))
	orgs, _ := filepath.Glob(filepath.Join(d1, "*"))
	if len(files) != 12 || len(orgs) != 3 {
		t.Fatalf("%d files in %d orgs, want 12 in 3", len(files), len(orgs))
	}
	for _, f := range files {
		x, _ := os.ReadFile(f)
		y, err := os.ReadFile(filepath.Join(d2, strings.TrimPrefix(f, d1)))
		if err != nil || !bytes.Equal(x, y) {
			t.Fatalf("%s differs between two runs", f)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"512", 512}, {"512KB", 512 << 10}, {"512k", 512 << 10}, {"64MB", 64 << 20}, {"64MiB", 64 << 20},
		{"64 mb", 64 << 20}, {"1G", 1 << 30}, {"2GiB", 2 << 30}, {"0", 0},
	} {
		if got, err := bytesize.Parse(tc.in); err != nil || got != tc.want {
			t.Errorf("bytesize.Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "MB", "-1", "1.5MB", "1TB", "99999999999G"} {
		if _, err := bytesize.Parse(bad); err == nil {
			t.Errorf("bytesize.Parse(%q) accepted", bad)
		}
	}
}

// tokenClaims are the claims of a minted token as another JWT library
// (go-jose) reads them.
type tokenClaims struct {
	Org   string `json:"org"`
	User  string `json:"user"`
	Admin bool   `json:"admin"`
	josejwt.Claims
}

// parseToken verifies a token minted by `deltasync token` with go-jose, a JWT
// library the server does not use: the tokens are standard HS256 JWTs.
func parseToken(t *testing.T, tok, secret string) (*tokenClaims, error) {
	t.Helper()
	jt, err := josejwt.ParseSigned(strings.TrimSpace(tok), []jose.SignatureAlgorithm{jose.HS256})
	if err != nil {
		return nil, err
	}
	var c tokenClaims
	if err := jt.Claims([]byte(secret), &c); err != nil {
		return nil, err
	}
	if c.Expiry == nil || c.IssuedAt == nil {
		return nil, fmt.Errorf("token without exp or iat: %+v", c)
	}
	return &c, c.ValidateWithLeeway(josejwt.Expected{Time: time.Now()}, 0)
}

func TestToken(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef-test"
	stdout, stderr, code := runIn(t, nil, "token", "--org", "acme", "--user", "alice", "--ttl", "10m", "--jwt-secret", secret)
	if code != 0 {
		t.Fatal(stderr)
	}
	c, err := parseToken(t, stdout, secret)
	if err != nil || c.Org != "acme" || c.User != "alice" || c.Admin {
		t.Fatalf("claims %+v, %v", c, err)
	}
	if ttl := time.Until(c.Expiry.Time()); ttl < 9*time.Minute || ttl > 10*time.Minute {
		t.Fatalf("expires in %v, want 10m", ttl)
	}
	if _, err := parseToken(t, stdout, secret+"x"); err == nil {
		t.Fatal("token verifies with another secret")
	}

	// The secret from the environment; an admin token.
	stdout, stderr, code = runIn(t, map[string]string{"DELTASYNC_JWT_SECRET": secret}, "token", "--admin")
	if code != 0 {
		t.Fatal(stderr)
	}
	if c, err := parseToken(t, stdout, secret); err != nil || !c.Admin {
		t.Fatalf("admin claims %+v, %v", c, err)
	}

	// iss and aud; a lifetime the default server refuses is warned about.
	stdout, stderr, code = runIn(t, nil, "token", "--admin", "--jwt-secret", secret,
		"--issuer", "https://app.example", "--audience", "deltasync", "--ttl", "48h")
	if code != 0 || !strings.Contains(stderr, "--jwt-max-lifetime") {
		t.Fatalf("exit %d, stderr %q; want a warning naming --jwt-max-lifetime", code, stderr)
	}
	if c, err := parseToken(t, stdout, secret); err != nil || c.Issuer != "https://app.example" || !c.Audience.Contains("deltasync") {
		t.Fatalf("claims %+v, %v; want iss and aud", c, err)
	}

	// --dev signs with the development secret, and says so.
	stdout, stderr, code = runIn(t, nil, "token", "--org", "acme", "--user", "bob", "--dev")
	if code != 0 || !strings.Contains(stderr, "development secret") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if _, err := parseToken(t, stdout, server.DevJWTSecret); err != nil {
		t.Fatal(err)
	}

	// Too short a secret is refused by MintToken.
	if _, stderr, code := runIn(t, nil, "token", "--org", "a", "--user", "b", "--jwt-secret", "short"); code != exitFailure || !strings.Contains(stderr, "32") {
		t.Fatalf("short secret: exit %d, %q", code, stderr)
	}
}

// dirUsers maps "org/user" to its input file.
func dirUsers(t *testing.T, dir string) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*.ndjson*"))
	out := map[string]string{}
	for _, f := range files {
		user := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(f), ".zst"), ".ndjson")
		out[filepath.Base(filepath.Dir(f))+"/"+user] = f
	}
	return out
}

func TestBuildDirJSONLinesAndFailures(t *testing.T) {
	in := t.TempDir()
	if _, stderr, code := runIn(t, nil, "gen", "--users", "10", "--out-dir", in, "--seed", "4"); code != 0 {
		t.Fatal(stderr)
	}
	users := dirUsers(t, in)
	bad := users["org-001/user-00004"]
	os.WriteFile(bad, []byte("{\"key\":\"a\",\"value\":1}\n{\"key\":\"a\",\"value\":2}\n"), 0o644)
	store := t.TempDir()
	stdout, stderr, code := cli(t, "", "build", "--store", store, "--input-dir", in, "--jobs", "3", "--json")
	if code != 1 || !strings.Contains(stderr, "1 of 10 users failed") {
		t.Fatalf("exit %d, stderr %q; want 1 and a failure count", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 10 {
		t.Fatalf("%d JSON lines, want one per user:\n%s", len(lines), stdout)
	}
	for _, l := range lines {
		var u map[string]any
		if err := json.Unmarshal([]byte(l), &u); err != nil {
			t.Fatal(err)
		}
		name := u["org"].(string) + "/" + u["user"].(string)
		if users[name] == bad {
			if e := u["error"].(string); !strings.Contains(e, "line 2") || !strings.Contains(e, "duplicate key") || !strings.Contains(e, bad) {
				t.Errorf("bad user's error %q", e)
			}
		} else if u["created"] != true || u["error"] != "" {
			t.Errorf("%s: %s", name, l)
		}
	}
}

// The acceptance of issue 6: a batch build killed with SIGKILL halfway and
// run again leaves every user with exactly one version holding its data.
func TestBuildDirKill9ThenRerunFile(t *testing.T) {
	kill9ThenRerun(t, "file://"+t.TempDir(), nil, storeurl.Options{})
}

func TestBuildDirKill9ThenRerunS3(t *testing.T) {
	s3test.Each(t, func(t *testing.T, srv s3test.Server) {
		kill9ThenRerun(t, srv.URL(t), srv.Env(), srv.Options())
	})
}

// kill9ThenRerun runs the build processes with env added to theirs (the
// store's credentials) and opens the store with so to check it.
func kill9ThenRerun(t *testing.T, storeURL string, env []string, so storeurl.Options) {
	in := t.TempDir()
	if _, stderr, code := runIn(t, nil, "gen", "--users", "200", "--out-dir", in, "--seed", "5", "--size-per-user", "2KB-64KB"); code != 0 {
		t.Fatal(stderr)
	}
	args := []string{"build", "--store", storeURL, "--input-dir", in, "--jobs", "4", "--json"}
	cmd := cliCommand(t, args...)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	done := 0
	for done < 80 && sc.Scan() {
		done++
	}
	cmd.Process.Kill() // SIGKILL: no cleanup of any kind
	cmd.Wait()
	if done < 80 {
		t.Fatalf("the build ended after %d users, before it could be killed", done)
	}

	stdout, stderr, code := cliEnv(t, env, "", args...)
	if code != 0 {
		t.Fatalf("re-run: exit %d: %s", code, stderr)
	}
	created, unchanged := 0, 0
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var u struct{ Created bool }
		json.Unmarshal([]byte(l), &u)
		if u.Created {
			created++
		} else {
			unchanged++
		}
	}
	t.Logf("killed after %d users reported; the re-run created %d and found %d done", done, created, unchanged)
	if created+unchanged != 200 || unchanged < done {
		t.Fatalf("re-run: %d created, %d unchanged; %d were reported done before the kill", created, unchanged, done)
	}

	ctx := t.Context()
	store, err := storeurl.Open(ctx, storeURL, so)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := snapshot.LoadOrCreateSecret(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	for name, path := range dirUsers(t, in) {
		org, user, _ := strings.Cut(name, "/")
		var vs []uint64
		store.List(ctx, snapshot.UserPrefix(org, user)+"versions/", func(oi snapshot.ObjectInfo) error {
			if v, ok := snapshot.ParseManifestKey(oi.Key); ok {
				vs = append(vs, v)
			}
			return nil
		})
		if len(vs) != 1 || vs[0] != 1 {
			t.Errorf("%s: versions %v, want exactly [1]", name, vs)
			continue
		}
		m, err := snapshot.ReadManifest(ctx, store, org, user, 1)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		err = snapshot.NewReader(store, m, secret).Records(ctx, func(k, v []byte) error {
			got.Write(snapshot.AppendNDJSONLine(nil, string(k), v))
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := sortedNDJSON(t, path); got.String() != want {
			t.Errorf("%s: version 1 does not read back as its input", name)
		}
	}
}

// sortedNDJSON is an input file as the builder stores it: canonical
// values, sorted by key.
func sortedNDJSON(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := snapshot.ReadNDJSON(f, snapshot.NDJSONOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer recs.Close()
	var b bytes.Buffer
	for {
		k, v, err := recs.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b.Write(snapshot.AppendNDJSONLine(nil, k, v))
	}
	return b.String()
}
