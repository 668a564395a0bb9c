package client

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/server"
)

// tokenSource is a TokenProvider that hands out the tokens of a list in
// turn (the last one again when the list ends), or fails with err.
type tokenSource struct {
	mu     sync.Mutex
	tokens []string
	err    error
	calls  int
}

func (s *tokenSource) get(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.err != nil {
		return "", s.err
	}
	tok := s.tokens[0]
	if len(s.tokens) > 1 {
		s.tokens = s.tokens[1:]
	}
	return tok, nil
}

func (s *tokenSource) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// authHeaders records the bearer tokens of the requests sent.
type authHeaders struct {
	base http.RoundTripper
	mu   sync.Mutex
	seen []string
}

func (a *authHeaders) RoundTrip(req *http.Request) (*http.Response, error) {
	a.mu.Lock()
	a.seen = append(a.seen, strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer "))
	a.mu.Unlock()
	return a.base.RoundTrip(req)
}

func (a *authHeaders) last() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[len(a.seen)-1]
}

func (ts *testServer) tokenFor(user string, ttl time.Duration) string {
	ts.t.Helper()
	tok, err := server.MintToken(netJWTSecret, server.Claims{Org: testOrg, User: user}, ttl)
	if err != nil {
		ts.t.Fatal(err)
	}
	return tok
}

func providerClient(t *testing.T, ts *testServer, dir string, src *tokenSource, rt http.RoundTripper) *Client {
	t.Helper()
	opts := DefaultOptions()
	opts.ServerURL = ts.url
	opts.TokenProvider = src.get
	if rt != nil {
		opts.HTTPClient = &http.Client{Transport: rt}
	}
	c, err := Open(dir, opts)
	mustDo(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTokenProviderAnswers401 protects issue 12 item 5: an app had to catch
// an auth error and sign in again. With a provider, a 401 makes the client
// ask it for a new token and send the request (a patch, body and all) once
// more; the edit applies once and the app never sees the refusal.
func TestTokenProviderAnswers401(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	revoked, err := server.MintToken([]byte("a-rotated-away-secret-0123456789abcdef"), server.Claims{Org: testOrg, User: "ann"}, time.Hour)
	mustDo(t, err)
	src := &tokenSource{tokens: []string{revoked, ts.token("ann")}}
	c := providerClient(t, ts, t.TempDir(), src, nil)
	mustDo(t, c.Put("tasks/2", bigForm(100<<10))) // a body that waits for 100-continue
	res, err := c.Sync(context.Background())
	mustDo(t, err)
	if res.EditsApplied != 1 || c.Status().State != StateSynced || src.callCount() != 2 {
		t.Fatalf("sync after a 401: %+v, state %s, provider called %d times (want 2)", res, c.Status().State, src.callCount())
	}
	if !strings.Contains(ts.export("ann"), `"tasks/2"`) {
		t.Fatal("the edit sent after the 401 is not on the server")
	}
	// Still refused with the new token: one more ask per request, then
	// error/auth, no loop.
	src.mu.Lock()
	src.tokens, src.calls = []string{revoked}, 0
	src.mu.Unlock()
	mustDo(t, c.SetServer(ts.url, revoked))
	if _, err := c.Pull(context.Background()); !errors.Is(err, ErrAuth) {
		t.Fatalf("pull with only refused tokens: %v, want ErrAuth", err)
	}
	if n := src.callCount(); n != 1 {
		t.Errorf("provider called %d times for one refused request, want 1", n)
	}
	if s := c.Status(); s.State != StateError || s.Reason != ReasonAuth {
		t.Errorf("status: %s/%s", s.State, s.Reason)
	}
}

// TestTokenProviderRenewsBeforeExpiry: a token whose exp is readable is
// replaced before it expires, without a refused request first.
func TestTokenProviderRenewsBeforeExpiry(t *testing.T) {
	ts := newTestServer(t)
	first, second := ts.tokenFor("ann", time.Hour), ts.tokenFor("ann", 2*time.Hour)
	src := &tokenSource{tokens: []string{first, second}}
	rec := &authHeaders{base: http.DefaultTransport}
	c := providerClient(t, ts, t.TempDir(), src, rec)
	clock := useClock(c)
	clock.t = time.Now()
	_, err := c.Sync(context.Background())
	mustDo(t, err)
	if rec.last() != first || src.callCount() != 1 {
		t.Fatalf("first sync sent %.20s…, provider called %d times", rec.last(), src.callCount())
	}
	clock.add(59*time.Minute + 30*time.Second) // within the 60 s margin of first's exp
	_, err = c.Sync(context.Background())
	mustDo(t, err)
	if rec.last() != second || src.callCount() != 2 {
		t.Fatalf("sync near expiry sent the old token (%v) or asked %d times", rec.last() == first, src.callCount())
	}
	for _, tok := range rec.seen {
		if tok == "" {
			t.Fatal("a request went out without a token")
		}
	}
}

// TestTokenProviderFailureIsAuthError: a provider that fails leaves the
// client in error/auth with the provider's reason, nothing sent.
func TestTokenProviderFailureIsAuthError(t *testing.T) {
	ts := newTestServer(t)
	src := &tokenSource{err: errors.New("the backend is unreachable")}
	c := providerClient(t, ts, t.TempDir(), src, nil)
	_, err := c.Sync(context.Background())
	if !errors.Is(err, ErrAuth) || !temporary(err) {
		t.Fatalf("sync with a failing provider: %v (temporary %v), want ErrAuth, temporary", err, temporary(err))
	}
	if s := c.Status(); s.State != StateError || s.Reason != ReasonAuth || !strings.Contains(s.Message, "the backend is unreachable") {
		t.Fatalf("status: %s/%s %q", s.State, s.Reason, s.Message)
	}
	// A provider that returns something unsendable is refused as well.
	src.mu.Lock()
	src.err, src.tokens = nil, []string{"two\r\nlines"}
	src.mu.Unlock()
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "white space") {
		t.Fatalf("sync with a token holding a line break: %v", err)
	}
}

// TestProvidedTokenNotInStateFile protects issue 12 item 5: with a
// provider the token is not written to the state file, and a token stored
// there before the app switched to a provider is removed.
func TestProvidedTokenNotInStateFile(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	dir := t.TempDir()
	seed, fresh := ts.tokenFor("ann", time.Hour), ts.tokenFor("ann", 3*time.Hour)
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = ts.url, seed
	src := &tokenSource{tokens: []string{fresh}}
	opts.TokenProvider = src.get
	c, err := Open(dir, opts)
	mustDo(t, err)
	_, err = c.Sync(context.Background())
	mustDo(t, err)
	mustDo(t, c.SetServer(ts.url, fresh))
	mustDo(t, c.Close())
	raw, err := os.ReadFile(filepath.Join(dir, StateFile))
	mustDo(t, err)
	for _, tok := range []string{seed, fresh} {
		if bytes.Contains(raw, []byte(tok)) {
			t.Fatal("a provided token is in the state file in plaintext")
		}
	}

	// Stored without a provider, then opened with one: deleted.
	old := t.TempDir()
	c = ts.client("ann", nil, old)
	if c.Token() == "" {
		t.Fatal("no token stored without a provider")
	}
	mustDo(t, c.Close())
	opts.Token = ""
	c, err = Open(old, opts)
	mustDo(t, err)
	defer c.Close()
	if c.storedToken() != "" {
		t.Fatal("the stored token survived opening with a provider")
	}
}

func TestJWTExpiry(t *testing.T) {
	ts := newTestServer(t)
	tok := ts.tokenFor("ann", time.Hour)
	if _, exp := jwtTimes(tok); time.Until(exp) < 59*time.Minute || time.Until(exp) > 61*time.Minute {
		t.Errorf("exp of a one-hour token read as %v", exp)
	}
	for _, bad := range []string{"", "opaque-token", "a.b.c", "a.e30.c", "a.eyJleHAiOiJzb29uIn0.c", "a.eyJleHAiOi0xfQ.c"} {
		if _, exp := jwtTimes(bad); !exp.IsZero() {
			t.Errorf("exp of %q read as %v, want zero", bad, exp)
		}
	}
}
