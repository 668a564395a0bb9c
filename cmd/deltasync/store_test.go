package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/internal/testkit"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storetest"
	"github.com/deltasync/deltasync/snapshot/storeurl"
)

// runWith runs a command in-process with a prepared env and a deadline: a
// command that should have refused to start but serves instead is stopped
// at the deadline (and then exits 0, which the caller sees as a failure).
func runWith(t *testing.T, e *env, args ...string) (code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	return run(ctx, e, args)
}

// storeCommands are the commands that open a store for writing, each with
// the arguments it needs besides --store.
func storeCommands(t *testing.T) map[string][]string {
	input := genFile(t, "20KB", "1")
	return map[string][]string{
		"serve": {"serve", "--dev", "--addr", freePort(t)},
		"build": {"build", "--org", "acme", "--user", "alice", "--input", input},
		"gc":    {"gc", "--keep-versions", "1"},
	}
}

// A URL scheme with one slash used to become a relative directory named
// "file:" or "s3:"; every command refuses it and creates nothing.
func TestStoreURLWithOneSlashIsRefused(t *testing.T) {
	cmds := storeCommands(t)
	t.Chdir(t.TempDir())
	for name, args := range cmds {
		for _, u := range []string{"file:/srv/deltasync", "file:data", "s3:/bucket/prefix?endpoint=127.0.0.1:1", "s3:bucket"} {
			var out, errb bytes.Buffer
			code := runWith(t, testEnv(nil, &out, &errb), append(args, "--store", u)...)
			if code != exitUsage || !strings.Contains(errb.String(), `without "//"`) {
				t.Errorf("%s --store %s: exit %d, stderr %q; want exit 2 explaining the missing //", name, u, code, errb.String())
			}
		}
	}
	if ents, _ := filepath.Glob("*"); len(ents) != 0 {
		t.Errorf("refused store URLs left %v in the working directory", ents)
	}
}

// An s3:// store without credentials fails at start-up, naming the
// variables, instead of on the first request.
func TestS3StoreWithoutCredentialsFailsAtStartup(t *testing.T) {
	const store = "s3://bucket/prefix?endpoint=127.0.0.1:1&secure=false"
	for name, args := range storeCommands(t) {
		for _, tt := range []struct {
			key, secret string
			want        []string
		}{
			{"", "", []string{envAccessKey + " and " + envSecretKey}},
			{"AK", "", []string{envSecretKey}},
			{"", "SK", []string{envAccessKey}},
		} {
			var out, errb bytes.Buffer
			e := testEnv(map[string]string{envAccessKey: tt.key, envSecretKey: tt.secret}, &out, &errb)
			code := runWith(t, e, append(args, "--store", store)...)
			msg := errb.String()
			if code != exitFailure || !strings.Contains(msg, "no S3 credentials: set "+tt.want[0]) || !strings.Contains(msg, "127.0.0.1:1") {
				t.Errorf("%s with key %q secret %q: exit %d, stderr %q; want exit 1 naming %s and the endpoint", name, tt.key, tt.secret, code, msg, tt.want[0])
			}
		}
	}
}

// Wrong credentials fail at start-up too: the probe is the first request.
func TestS3StoreWithWrongCredentialsFailsAtStartup(t *testing.T) {
	s3test.Each(t, func(t *testing.T, srv s3test.Server) {
		var out, errb bytes.Buffer
		e := testEnv(map[string]string{envAccessKey: srv.AccessKey, envSecretKey: "wrong-" + srv.SecretKey}, &out, &errb)
		code := runWith(t, e, "serve", "--dev", "--addr", freePort(t), "--store", srv.URL(t))
		// With create=true the bucket check fails first, else the probe.
		if code != exitFailure || !strings.Contains(errb.String(), "(S3 endpoint ") {
			t.Errorf("serve with a wrong secret key: exit %d, stderr %q; want exit 1 naming the endpoint", code, errb.String())
		}
	})
}

// serve without a JWT secret used to open the store (creating its
// directory, and with create=true its bucket) before refusing to start.
func TestServeRefusesBadConfigBeforeTouchingStore(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no secret", nil, "no JWT secret"},
		{"short secret", []string{"--jwt-secret", "too-short"}, "need at least 32"},
		{"sample secret", []string{"--jwt-secret", SampleJWTSecret}, "deploy/deltasync.env"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			var out, errb bytes.Buffer
			args := append([]string{"serve", "--addr", freePort(t), "--store", "file://" + dir}, tt.args...)
			code := runWith(t, testEnv(nil, &out, &errb), args...)
			if code == exitOK || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want a refusal mentioning %q", code, errb.String(), tt.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused serve touched the store: %s exists (%v)", dir, err)
			}
		})
	}
	t.Run("s3", func(t *testing.T) {
		s3test.Each(t, func(t *testing.T, srv s3test.Server) {
			// A bucket of its own that create=true would make.
			loc, err := storeurl.Parse(srv.BaseURL)
			if err != nil {
				t.Fatal(err)
			}
			var rnd [6]byte
			rand.Read(rnd[:])
			bucket := "deltasync-refused-" + hex.EncodeToString(rnd[:])
			u := "s3://" + bucket + "/p?endpoint=" + loc.S3.Endpoint + "&secure=false&create=true"
			var out, errb bytes.Buffer
			e := testEnv(map[string]string{envAccessKey: srv.AccessKey, envSecretKey: srv.SecretKey}, &out, &errb)
			if code := runWith(t, e, "serve", "--addr", freePort(t), "--store", u); code == exitOK {
				t.Fatalf("serve without a secret started")
			}
			s, err := storeurl.Open(t.Context(), "s3://"+bucket+"?endpoint="+loc.S3.Endpoint+"&secure=false", srv.Options())
			if err != nil {
				t.Fatal(err)
			}
			err = s.List(t.Context(), "", func(snapshot.ObjectInfo) error { return nil })
			if !errors.Is(err, snapshot.ErrNotExist) {
				t.Errorf("listing bucket %s after the refused start: %v; want it not to exist", bucket, err)
			}
		})
	})
}

// The sample secret is refused from the environment too, and the constant
// is the one deploy/deltasync.env really prints.
func TestServeRefusesSampleSecretFromDeployEnv(t *testing.T) {
	f, err := os.Open("../../deploy/deltasync.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sample := ""
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "DELTASYNC_JWT_SECRET="); ok {
			sample = v
		}
	}
	if sample != SampleJWTSecret {
		t.Fatalf("deploy/deltasync.env sets DELTASYNC_JWT_SECRET=%q, serve refuses %q: keep them equal", sample, SampleJWTSecret)
	}
	dir := filepath.Join(t.TempDir(), "store")
	var out, errb bytes.Buffer
	code := runWith(t, testEnv(map[string]string{"DELTASYNC_JWT_SECRET": sample}, &out, &errb), "serve", "--addr", freePort(t), "--store", "file://"+dir)
	if code != exitFailure || !strings.Contains(errb.String(), "published sample") {
		t.Errorf("serve with the sample secret: exit %d, stderr %q", code, errb.String())
	}
}

// A store that takes conditional writes and ignores them loses versions;
// serve, build and gc refuse it at start-up, naming the store and the
// guarantee, unless --unsafe-no-conditional-writes says otherwise.
func TestStartupProbeRefusesStoreIgnoringConditions(t *testing.T) {
	for name, args := range storeCommands(t) {
		dir := filepath.Join(t.TempDir(), "store")
		mustMkdir(t, dir) // gc refuses a missing one before the probe
		var out, errb bytes.Buffer
		e := testEnv(nil, &out, &errb)
		e.wrapStore = func(s snapshot.Store) snapshot.Store { return storetest.IgnoreConditions(s) }
		code := runWith(t, e, append(args, "--store", "file://"+dir)...)
		msg := errb.String()
		for _, want := range []string{dir, string(snapshot.CreateOnly), "not enforced", "--unsafe-no-conditional-writes"} {
			if code != exitFailure || !strings.Contains(msg, want) {
				t.Errorf("%s on a store ignoring conditions: exit %d, stderr %q; want exit 1 mentioning %q", name, code, msg, want)
			}
		}
		if keys := fileStoreKeys(t, dir); len(keys) != 0 {
			t.Errorf("%s: the refused start left %v in the store", name, keys)
		}
	}
}

func TestUnsafeNoConditionalWritesStartsAndSaysSoEveryTime(t *testing.T) {
	cmds := storeCommands(t)
	for _, name := range []string{"build", "gc"} {
		dir := filepath.Join(t.TempDir(), "store")
		mustMkdir(t, dir)
		for run := range 2 {
			var out, errb bytes.Buffer
			e := testEnv(nil, &out, &errb)
			e.wrapStore = func(s snapshot.Store) snapshot.Store { return storetest.IgnoreConditions(s) }
			code := runWith(t, e, append(cmds[name], "--store", "file://"+dir, "--unsafe-no-conditional-writes")...)
			if code != exitOK || !strings.Contains(errb.String(), "UNSAFE") || !strings.Contains(errb.String(), "not enforced") {
				t.Errorf("%s run %d with the override: exit %d, stderr %q; want success and an UNSAFE warning", name, run+1, code, errb.String())
			}
		}
	}
	// The variable works as the flag does; on a conforming store the
	// warning says the flag is not needed.
	var out, errb bytes.Buffer
	e := testEnv(map[string]string{envUnsafeNoConditionalWrites: "true"}, &out, &errb)
	if code := runWith(t, e, append(cmds["gc"], "--store", "file://"+t.TempDir())...); code != exitOK || !strings.Contains(errb.String(), "flag is not needed") {
		t.Errorf("gc with %s=true on a conforming store: exit %d, stderr %q", envUnsafeNoConditionalWrites, code, errb.String())
	}
	e = testEnv(map[string]string{envUnsafeNoConditionalWrites: "maybe"}, &out, &errb)
	if code := runWith(t, e, append(cmds["gc"], "--store", "file://"+t.TempDir())...); code != exitUsage {
		t.Errorf("gc with %s=maybe: exit %d, want 2", envUnsafeNoConditionalWrites, code)
	}
}

// serve with the override starts, answers, and logs the warning.
func TestServeUnsafeNoConditionalWritesLogs(t *testing.T) {
	addr := freePort(t)
	var out, errb testkit.Buffer
	e := testEnv(nil, &out, &errb)
	e.wrapStore = func(s snapshot.Store) snapshot.Store { return storetest.IgnoreConditions(s) }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, e, []string{"serve", "--dev", "--addr", addr, "--store", "file://" + t.TempDir(), "--unsafe-no-conditional-writes"})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errb.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up: %s", errb.String())
		}
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("serve exit %d", code)
	}
	if !strings.Contains(errb.String(), "UNSAFE") {
		t.Errorf("serve with --unsafe-no-conditional-writes did not log it: %s", errb.String())
	}
}

// gc --grace 0s used to mean an hour without a word: it is refused, and the
// report names the grace actually used.
func TestGCGrace(t *testing.T) {
	store := "file://" + t.TempDir()
	for _, g := range []string{"0s", "0", "-1h"} {
		_, stderr, code := runIn(t, nil, "gc", "--store", store, "--keep-versions", "1", "--grace", g)
		if code != exitUsage || !strings.Contains(stderr, "--grace") || !strings.Contains(stderr, "must be positive") {
			t.Errorf("gc --grace %s: exit %d, stderr %q; want exit 2 refusing it", g, code, stderr)
		}
	}
	stdout, stderr, code := runIn(t, nil, "gc", "--store", store, "--keep-versions", "1", "--grace", "90m")
	if code != exitOK || !strings.Contains(stdout, "grace 1h30m0s") {
		t.Errorf("gc --grace 90m: exit %d, stdout %q, stderr %q; want the grace in the report", code, stdout, stderr)
	}
	stdout, _, _ = runIn(t, nil, "gc", "--store", store, "--keep-versions", "1")
	if !strings.Contains(stdout, "grace 1h0m0s") {
		t.Errorf("gc with the default grace: %q; want grace 1h0m0s", stdout)
	}
	stdout, _, _ = runIn(t, nil, "gc", "--store", store, "--keep-versions", "1", "--grace", "2h", "--json")
	var rep struct {
		GraceSeconds int64 `json:"grace_seconds"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.GraceSeconds != 7200 {
		t.Errorf("gc --json --grace 2h: %q (%v); want grace_seconds 7200", stdout, err)
	}
}

// fileStoreKeys lists the objects of a directory store (nothing if the
// directory does not exist).
func fileStoreKeys(t *testing.T, dir string) []string {
	t.Helper()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	s, err := storeurl.Open(t.Context(), "file://"+dir, storeurl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := s.List(t.Context(), "", func(oi snapshot.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// A store that does not answer fails the start within the probe's bound
// instead of hanging serve, build or gc.
func TestStartupProbeGivesUpOnAHungStore(t *testing.T) {
	defer func(d time.Duration) { probeTimeout = d }(probeTimeout)
	probeTimeout = 100 * time.Millisecond
	for name, args := range storeCommands(t) {
		var out, errb bytes.Buffer
		e := testEnv(nil, &out, &errb)
		e.wrapStore = hungWrites
		code := runWith(t, e, append(args, "--store", "file://"+t.TempDir())...)
		if code != exitFailure || !strings.Contains(errb.String(), "did not answer within 100ms") {
			t.Errorf("%s on a hung store: exit %d, stderr %q; want exit 1 saying the store did not answer", name, code, errb.String())
		}
	}
}

// hungWrites wraps s so that its create-only writes wait until their
// context ends, like a stopped server.
func hungWrites(s snapshot.Store) snapshot.Store {
	f := storetest.Wrap(s)
	f.PutIfAbsentFunc = func(ctx context.Context, _ string, _ io.Reader, _ int64) (snapshot.ObjectInfo, error) {
		<-ctx.Done()
		return snapshot.ObjectInfo{}, ctx.Err()
	}
	return f
}

// TestGCRefusesAMissingStoreDirectory: gc at a mistyped directory created
// it and reported a clean run (0 users scanned), exit 0.
func TestGCRefusesAMissingStoreDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "typo")
	_, stderr, code := runIn(t, nil, "gc", "--store", "file://"+dir, "--keep-versions", "1")
	if code != exitFailure || !strings.Contains(stderr, "does not exist") {
		t.Errorf("gc on a missing directory: exit %d, stderr %q; want exit 1 naming it", code, stderr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("gc created the store directory (%v)", err)
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}
