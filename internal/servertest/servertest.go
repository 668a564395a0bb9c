// Package servertest starts a real deltasync server on a loopback TCP port,
// with tokens minted for it, for the tests of what sits above the server
// (the command, the client) and for the benchmark harness: one helper
// instead of a copy per package. The server's own tests use their
// in-package helpers (server/helpers_test.go), which see its internals.
package servertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// DefaultJWTSecret signs the tokens of a server started without one.
const DefaultJWTSecret = "servertest-jwt-secret-0123456789abcdef"

// Options configure a test server. The zero value is a server over a fresh
// memory store with DefaultJWTSecret, the settings cache off (an admin's
// change is seen by the next request) and logs discarded.
type Options struct {
	Store     snapshot.Store // memstore.New() if nil
	JWTSecret []byte         // DefaultJWTSecret if empty
	// Configure, if set, adjusts the server's options last, before New.
	Configure func(*server.Options)
}

// Server is a running server and what a test needs to talk to it.
type Server struct {
	URL    string // "http://127.0.0.1:port"
	Addr   string // "127.0.0.1:port"
	Store  snapshot.Store
	Secret []byte // signs its tokens
	srv    *server.Server
	done   chan error
	once   sync.Once
	err    error
}

// New starts a server on a free loopback port. Close stops it.
func New(o Options) (*Server, error) {
	opts := server.DefaultOptions()
	opts.Store = o.Store
	if opts.Store == nil {
		opts.Store = memstore.New()
	}
	opts.JWTSecret = o.JWTSecret
	if len(opts.JWTSecret) == 0 {
		opts.JWTSecret = []byte(DefaultJWTSecret)
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.SettingsTTL = 0
	if o.Configure != nil {
		o.Configure(&opts)
	}
	srv, err := server.New(opts)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ln.Addr().String(), Addr: ln.Addr().String(),
		Store: opts.Store, Secret: opts.JWTSecret, srv: srv, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ln) }()
	if err := s.waitServing(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// waitServing returns once the server answers. A Shutdown that comes
// before Serve has taken the listener does not stop it (fasthttp learns
// of the listener in Serve), so New returns only a server that Close can
// stop.
func (s *Server) waitServing() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case err := <-s.done:
			s.done <- err // for Close
			return fmt.Errorf("serve ended: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server on %s did not answer within 30s: %w", s.Addr, err)
		}
	}
}

// Start is New for a test: it fails tb on an error and stops the server
// when the test ends.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	s, err := New(o)
	if err != nil {
		tb.Fatalf("servertest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("servertest: %v", err)
		}
	})
	return s
}

// Close shuts the server down, letting requests in flight finish (within
// ten seconds), and returns what Serve returned. It may be called more
// than once.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.err = fmt.Errorf("shutdown: %w", err)
			return
		}
		if err := <-s.done; err != nil {
			s.err = fmt.Errorf("serve: %w", err)
		}
	})
	return s.err
}

// Token mints a token for c, valid for an hour.
func (s *Server) Token(c server.Claims) (string, error) {
	return server.MintToken(s.Secret, c, time.Hour)
}

// AdminToken is a deployment admin's token.
func (s *Server) AdminToken(tb testing.TB) string {
	tb.Helper()
	return s.mustToken(tb, server.Claims{Admin: true})
}

// UserToken is the token of one user of one org.
func (s *Server) UserToken(tb testing.TB, org, user string) string {
	tb.Helper()
	return s.mustToken(tb, server.Claims{Org: org, User: user})
}

func (s *Server) mustToken(tb testing.TB, c server.Claims) string {
	tb.Helper()
	tok, err := s.Token(c)
	if err != nil {
		tb.Fatalf("servertest: %v", err)
	}
	return tok
}

// Do sends one request with token as its bearer and returns the status
// and the body. A request that gets no answer fails tb.
func (s *Server) Do(tb testing.TB, method, path, token string, body []byte) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("servertest: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("servertest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("servertest: %s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// SetOrg writes an org's settings as an admin (a JSON body such as
// {"offline_mode":true}), failing tb unless the server answers 200.
func (s *Server) SetOrg(tb testing.TB, org, settings string) {
	tb.Helper()
	if code, b := s.Do(tb, http.MethodPut, "/v1/admin/orgs/"+org, s.AdminToken(tb), []byte(settings)); code != http.StatusOK {
		tb.Fatalf("servertest: settings of %s: %d %s", org, code, b)
	}
}

// Upload makes an NDJSON data set the user's next version as an admin,
// failing tb unless the server answers 200.
func (s *Server) Upload(tb testing.TB, org, user string, ndjson []byte) {
	tb.Helper()
	path := "/v1/admin/orgs/" + org + "/users/" + user + "/dataset"
	if code, b := s.Do(tb, http.MethodPut, path, s.AdminToken(tb), ndjson); code != http.StatusOK {
		tb.Fatalf("servertest: upload %s/%s: %d %s", org, user, code, b)
	}
}
