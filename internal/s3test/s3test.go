// Package s3test connects tests to the S3-compatible servers that
// scripts/test starts (versitygw and MinIO), so that every S3-backed suite
// runs once per server: the self-hosting targets tested as they are run.
//
// The servers are a table in DELTASYNC_TEST_S3: entries separated by white
// space, each an optional name and an s3:// store URL with optional
// credentials,
//
//	[NAME=]s3://[ACCESS_KEY:SECRET_KEY@]bucket[/prefix]?endpoint=host:port&secure=false[&create=true]
//
// for example (one line in the variable)
//
//	versitygw=s3://deltasync-test?endpoint=127.0.0.1:7070&secure=false
//	minio=s3://AK:SK@deltasync-test?endpoint=127.0.0.1:9000&secure=false
//
// An entry without credentials uses AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY; one without a name is "s3" (or "s3-2", "s3-3" …
// after the first), so the single URL of older setups still works.
// Credentials in a test URL are read here only: the store URLs handed to
// code under test never carry them (storeurl refuses them), they travel as
// Server.Options or Server.Env.
//
// Without the variable the tests skip, except under CI (CI=true), where a
// skipped S3 suite would hide a broken setup and fails instead.
//
// Each runs a test once per server, in a subtest named after it. URL, Store
// and Check are the older single-server helpers: they use the first server.
// With DELTASYNC_TEST_S3_REPORT naming a file, every run through Each (and
// the first-server helpers) appends a line "status server each|first
// package test" to it, from which scripts/test prints which suites ran
// against which server.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/s3store"
	"github.com/deltasync/deltasync/snapshot/storeurl"
)

// EnvVar names the variable that lists the S3 servers.
const EnvVar = "DELTASYNC_TEST_S3"

// ReportEnvVar names the variable holding the file that runs are recorded in.
const ReportEnvVar = "DELTASYNC_TEST_S3_REPORT"

// Server is one S3-compatible server of the table.
type Server struct {
	Name string
	// BaseURL is the configured store URL, without credentials.
	BaseURL string
	// AccessKey and SecretKey are this server's credentials.
	AccessKey, SecretKey string
}

// Options are the storeurl options that open this server's stores.
func (s Server) Options() storeurl.Options {
	return storeurl.Options{AccessKey: s.AccessKey, SecretKey: s.SecretKey}
}

// Env is this server's credentials as environment entries, for a deltasync
// process (or cmd's injected environment) that opens its store URLs.
func (s Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}

// URL returns a store URL for a fresh, random prefix below the configured
// one, after making sure the bucket exists. Objects under the prefix are
// deleted when the test ends.
func (s Server) URL(t testing.TB) string {
	t.Helper()
	u, _ := s.open(t)
	return u
}

// Store returns a store over a fresh, random prefix, like URL.
func (s Server) Store(t testing.TB) snapshot.Store {
	t.Helper()
	_, st := s.open(t)
	return st
}

// Each runs fn once per configured server, in a subtest named after the
// server (skipped without servers, failed under CI).
func Each(t *testing.T, fn func(t *testing.T, srv Server)) {
	t.Helper()
	suite := t.Name()
	for _, srv := range Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Logf("S3 server %s: %s", srv.Name, srv.BaseURL)
			record(t, srv.Name, suite, "each")
			fn(t, srv)
		})
	}
}

// Servers returns the configured servers. It skips the test when there are
// none (fails it under CI) and fails it when the table does not parse.
func Servers(t testing.TB) []Server {
	t.Helper()
	raw := os.Getenv(EnvVar)
	if strings.TrimSpace(raw) == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("S3 suite not run: %s not set; under CI the S3 suite must run (scripts/test sets it)", EnvVar)
		}
		t.Skipf("S3 suite skipped: %s not set (scripts/test sets it)", EnvVar)
	}
	servers, err := ParseServers(raw, os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"))
	if err != nil {
		t.Fatalf("%s: %v", EnvVar, err)
	}
	return servers
}

// Default is the first configured server, which URL, Store and Check use.
func Default(t testing.TB) Server {
	t.Helper()
	return Servers(t)[0]
}

// URL returns a fresh store URL on the first server (see Server.URL). A
// process or command opening it needs that server's credentials: scripts/test
// puts the first server's in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
func URL(t testing.TB) string {
	t.Helper()
	srv := Default(t)
	record(t, srv.Name, t.Name(), "first")
	return srv.URL(t)
}

// Store returns a store over a fresh prefix on the first server.
func Store(t testing.TB) snapshot.Store {
	t.Helper()
	srv := Default(t)
	record(t, srv.Name, t.Name(), "first")
	return srv.Store(t)
}

// Check skips the test when no S3 server is configured (fails it under CI)
// and returns the first server's URL. A test with many subtests calls it
// first to skip once instead of in every subtest.
func Check(t testing.TB) string {
	t.Helper()
	return Default(t).BaseURL
}

var serverName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// ParseServers parses the table of DELTASYNC_TEST_S3; key and secret are the
// credentials of entries that carry none.
func ParseServers(raw, key, secret string) ([]Server, error) {
	var servers []Server
	seen := map[string]bool{}
	for i, entry := range strings.Fields(raw) {
		srv, err := parseEntry(entry, key, secret)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i+1, err)
		}
		if srv.Name == "" {
			srv.Name = "s3"
			if i > 0 {
				srv.Name = fmt.Sprintf("s3-%d", i+1)
			}
		}
		if seen[srv.Name] {
			return nil, fmt.Errorf("entry %d: server name %q used twice", i+1, srv.Name)
		}
		seen[srv.Name] = true
		servers = append(servers, srv)
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("no servers")
	}
	return servers, nil
}

func parseEntry(entry, key, secret string) (Server, error) {
	var srv Server
	rest := entry
	if !strings.HasPrefix(strings.ToLower(entry), "s3://") {
		name, after, ok := strings.Cut(entry, "=")
		if !ok || !serverName.MatchString(name) {
			return Server{}, fmt.Errorf("%q: want [NAME=]s3://…, NAME of A-Z a-z 0-9 . _ -", redact(entry))
		}
		srv.Name, rest = name, after
	}
	u, err := url.Parse(rest)
	if err != nil {
		return Server{}, fmt.Errorf("%q: %w", redact(entry), err)
	}
	srv.AccessKey, srv.SecretKey = key, secret
	if u.User != nil {
		pw, ok := u.User.Password()
		if u.User.Username() == "" || !ok || pw == "" {
			return Server{}, fmt.Errorf("%s: credentials in the URL must be ACCESS_KEY:SECRET_KEY@", u.Redacted())
		}
		srv.AccessKey, srv.SecretKey = u.User.Username(), pw
		u.User = nil
	}
	srv.BaseURL = u.String()
	loc, err := storeurl.Parse(srv.BaseURL)
	if err != nil {
		return Server{}, err
	}
	if loc.Scheme != "s3" {
		return Server{}, fmt.Errorf("%s: want an s3:// URL", srv.BaseURL)
	}
	if srv.AccessKey == "" || srv.SecretKey == "" {
		return Server{}, fmt.Errorf("%s: no credentials (put ACCESS_KEY:SECRET_KEY@ in the URL, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", srv.BaseURL)
	}
	return srv, nil
}

// redact hides a secret in an entry that did not parse as a URL.
func redact(entry string) string {
	if i := strings.LastIndexByte(entry, '@'); i >= 0 {
		if j := strings.Index(entry, "://"); j >= 0 && j < i {
			return entry[:j+3] + "xxxxx" + entry[i:]
		}
	}
	return entry
}

func (s Server) open(t testing.TB) (string, *s3store.Store) {
	t.Helper()
	loc, err := storeurl.Parse(s.BaseURL)
	if err != nil {
		t.Fatalf("%s: server %s: %v", EnvVar, s.Name, err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	sub := "test-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(rnd[:])
	if base := loc.S3.Prefix; base != "" {
		loc.S3.Prefix = base + "/" + sub
	} else {
		loc.S3.Prefix = sub
	}
	loc.S3.AccessKey, loc.S3.SecretKey = s.AccessKey, s.SecretKey
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s3store.New(ctx, loc.S3)
	if err != nil {
		t.Fatalf("server %s: %v", s.Name, err)
	}
	if err := st.EnsureBucket(ctx); err != nil {
		t.Fatalf("server %s: %v", s.Name, err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := st.RemoveAll(ctx, ""); err != nil {
			t.Errorf("clean up S3 prefix %s on %s: %v", loc.S3.Prefix, s.Name, err)
		}
	})
	return withPrefix(s.BaseURL, loc.S3.Prefix), st
}

// withPrefix replaces the path of an s3:// URL, keeping its query.
func withPrefix(raw, prefix string) string {
	rest := strings.TrimPrefix(raw, "s3://")
	query := ""
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, query = rest[:i], rest[i:]
	}
	bucket, _, _ := strings.Cut(rest, "/")
	return "s3://" + bucket + "/" + prefix + query
}

var (
	recordMu   sync.Mutex
	recordOnce = map[string]bool{}
)

// record notes in the report file, when the test ends, that the suite ran
// against the named server in t, and how t ended; how is "each" (through
// Each) or "first" (the first-server helpers). One line per test and server.
func record(t testing.TB, server, suite, how string) {
	path := os.Getenv(ReportEnvVar)
	if path == "" {
		return
	}
	recordMu.Lock()
	id := server + " " + suite
	done := recordOnce[id]
	recordOnce[id] = true
	recordMu.Unlock()
	if done {
		return
	}
	t.Cleanup(func() {
		status := "pass"
		switch {
		case t.Failed():
			status = "FAIL"
		case t.Skipped():
			status = "skip"
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Errorf("%s: %v", ReportEnvVar, err)
			return
		}
		defer f.Close()
		// One short write per line: O_APPEND keeps lines from parallel
		// test processes whole.
		if _, err := fmt.Fprintf(f, "%s %s %s %s %s\n", status, server, how, testPackage(), suite); err != nil {
			t.Errorf("%s: %v", ReportEnvVar, err)
		}
	})
}

// testPackage is the import path of the package under test, relative to the
// module ("snapshot/s3store").
func testPackage() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "?"
	}
	p := strings.TrimSuffix(bi.Path, ".test")
	if rel, ok := strings.CutPrefix(p, bi.Main.Path+"/"); ok {
		return rel
	}
	return p
}
