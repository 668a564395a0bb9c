package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/server"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/serve-help.golden from the current `serve --help`")

// TestServeHelpGolden pins `deltasync serve --help` (with no DELTASYNC_*
// variable set): every flag's name, usage and default, so moving the
// configuration code cannot change what an operator reads.
func TestServeHelpGolden(t *testing.T) {
	stdout, stderr, code := runIn(t, nil, "serve", "--help")
	if code != 0 {
		t.Fatalf("serve --help: exit %d: %s", code, stderr)
	}
	const golden = "testdata/serve-help.golden"
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(want) {
		t.Errorf("serve --help differs from %s (run with -update if the change is meant):\n%s", golden, stdout)
	}
}

// parseServe parses a serve command line against the given environment as
// runServe does, returning the options or the parse error.
func parseServe(t *testing.T, getenv map[string]string, args ...string) (*server.Options, error) {
	t.Helper()
	e := testEnv(getenv, &bytes.Buffer{}, &bytes.Buffer{})
	_, opts, fs := serveFlags(e)
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	return opts, nil
}

// serveDefaults are the options serve starts from.
func serveDefaults() server.Options {
	o := server.DefaultOptions()
	o.Backend.Worker = true
	return o
}

func TestServeFlagsAndEnvironment(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want func(o *server.Options) // edits serveDefaults into the expected result
	}{
		{"defaults", nil, nil, func(*server.Options) {}},
		{
			"environment",
			map[string]string{
				"DELTASYNC_ADDR":                 "0.0.0.0:9000",
				"DELTASYNC_JWT_SECRET":           "env-secret",
				"DELTASYNC_JWT_PUBLIC_KEY":       "a.pem, b.pem",
				"DELTASYNC_CHUNK_SECRET":         "chunky",
				"DELTASYNC_DEV":                  "true",
				"DELTASYNC_MAX_PATCH_BYTES":      "1MiB",
				"DELTASYNC_MAX_DATASET_BYTES":    "2g",
				"DELTASYNC_LONG_POLL_MAX":        "30s",
				"DELTASYNC_RATE_LIMIT":           "2.5",
				"DELTASYNC_MAX_PATCH_OPS":        "77",
				"DELTASYNC_FEED_WORKER":          "false",
				"DELTASYNC_WEBHOOK_BACKOFF_MAX":  "1m",
				"DELTASYNC_HOOKS_ALLOW_PRIVATE":  "1",
				"DELTASYNC_WATCH_INTERVAL":       "3s",
				"DELTASYNC_HUB_IDLE_GRACE":       "1m",
				"DELTASYNC_STORE_MIN_RATE":       "2MiB",
				"DELTASYNC_JWT_ISSUER":           "iss",
				"DELTASYNC_FEED_WORKER_INTERVAL": "",
			},
			nil,
			func(o *server.Options) {
				o.Addr = "0.0.0.0:9000"
				o.JWTSecret = []byte("env-secret")
				o.JWTPublicKeyFiles = []string{"a.pem", "b.pem"}
				o.ChunkSecret = []byte("chunky")
				o.Dev = true
				o.MaxPatchBytes = 1 << 20
				o.MaxDatasetBytes = 2 << 30
				o.LongPollMax = 30 * time.Second
				o.RateLimit = 2.5
				o.MaxPatchOps = 77
				o.Backend.Worker = false
				o.Backend.WebhookBackoffMax = time.Minute
				o.Backend.HooksAllowPrivate = true
				o.Watch.Interval = 3 * time.Second
				o.HubIdleGrace = time.Minute
				o.StoreMinRate = 2 << 20
				o.JWTIssuer = "iss"
			},
		},
		{
			"flags win over environment",
			map[string]string{"DELTASYNC_ADDR": "0.0.0.0:9000", "DELTASYNC_JWT_PUBLIC_KEY": "env.pem",
				"DELTASYNC_JWT_SECRET": "env-secret", "DELTASYNC_FEED_WORKER": "false", "DELTASYNC_MAX_CONNS": "5"},
			[]string{"--addr", ":7000", "--jwt-secret", "flag-secret", "--jwt-public-key", "x.pem", "--jwt-public-key", "y.pem",
				"--max-patch-bytes", "4096", "--dev", "--long-poll-max", "5s", "--feed-worker", "--max-conns", "9",
				"--max-patch-ops", "250", "--max-record-bytes", "1MiB", "--watch-window", "1m"},
			func(o *server.Options) {
				o.Addr = ":7000"
				o.JWTSecret = []byte("flag-secret")
				o.JWTPublicKeyFiles = []string{"x.pem", "y.pem"}
				o.MaxPatchBytes = 4096
				o.Dev = true
				o.LongPollMax = 5 * time.Second
				o.MaxConns = 9
				o.MaxPatchOps = 250
				o.MaxRecordBytes = 1 << 20
				o.Watch.Window = time.Minute
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseServe(t, tc.env, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			want := serveDefaults()
			tc.want(&want)
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("options =\n%+v\nwant\n%+v", *got, want)
			}
		})
	}
}

// TestServeSecretNotPrinted: a secret from the environment shows up in
// neither --help nor the flag's value.
func TestServeSecretNotPrinted(t *testing.T) {
	env := map[string]string{"DELTASYNC_JWT_SECRET": "super-secret-value", "DELTASYNC_CHUNK_SECRET": "super-chunk-value"}
	stdout, _, code := runIn(t, env, "serve", "--help")
	if code != 0 || strings.Contains(stdout, "super-") {
		t.Errorf("serve --help: exit %d, shows a secret:\n%s", code, stdout)
	}
	e := testEnv(env, &bytes.Buffer{}, &bytes.Buffer{})
	_, _, fs := serveFlags(e)
	for _, name := range []string{"jwt-secret", "chunk-secret"} {
		if v := fs.Lookup(name).Value.String(); strings.Contains(v, "super") {
			t.Errorf("--%s value prints the secret: %q", name, v)
		}
	}
}

// TestServeRefusesABadEnvironmentValue: a DELTASYNC_* variable that does
// not parse stops serve with an error naming it (exit 1), before the store
// is touched, whether or not a flag overrides it.
func TestServeRefusesABadEnvironmentValue(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		args        []string
	}{
		{"DELTASYNC_MAX_PATCH_BYTES", "lots", nil},
		{"DELTASYNC_LONG_POLL_MAX", "soon", nil},
		{"DELTASYNC_DEV", "maybe", nil},
		{"DELTASYNC_MAX_CONNS", "many", []string{"--max-conns", "3"}},
		{"DELTASYNC_RATE_LIMIT", "fast", nil},
		{"DELTASYNC_HOOKS_ALLOW_PRIVATE", "perhaps", nil},
		{"DELTASYNC_WATCH_WINDOW", "wide", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"serve", "--dev", "--addr", freePort(t), "--store", "file://" + dir}, tc.args...)
			// A cancelled context: a serve that wrongly starts stops at once
			// instead of serving until the test times out.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var stderrb bytes.Buffer
			code := run(ctx, testEnv(map[string]string{tc.name: tc.value}, &bytes.Buffer{}, &stderrb), args)
			stderr := stderrb.String()
			want := "deltasync serve: server: environment variable " + tc.name + "=\"" + tc.value + "\""
			if code != exitFailure || !strings.Contains(stderr, want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, exitFailure, want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("the refused start left %d entries in the store", len(entries))
			}
		})
	}
}

// TestServeReadsTheProcessEnvironment runs serve as a process: a bad
// DELTASYNC_* value in the real environment stops it with exit 1 and an
// error naming the variable, and --help shows a value taken from it as the
// flag's default.
func TestServeReadsTheProcessEnvironment(t *testing.T) {
	cmd := cliCommand(t, "serve", "--dev", "--addr", freePort(t), "--store", "file://"+t.TempDir())
	cmd.Env = append(cmd.Env, "DELTASYNC_MAX_PATCH_BYTES=lots")
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != exitFailure ||
		!strings.Contains(string(out), `environment variable DELTASYNC_MAX_PATCH_BYTES="lots"`) {
		t.Errorf("serve with a bad environment value: exit %d (%v), output %s", code, err, out)
	}
	cmd = cliCommand(t, "serve", "--help")
	cmd.Env = append(cmd.Env, "DELTASYNC_LONG_POLL_MAX=42s")
	out, err = cmd.Output()
	if err != nil || !strings.Contains(string(out), "(env DELTASYNC_LONG_POLL_MAX) (default 42s)") {
		t.Errorf("serve --help with DELTASYNC_LONG_POLL_MAX=42s: %v\n%s", err, out)
	}
}
