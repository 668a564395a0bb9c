package mobile

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deltasync/deltasync/client"
)

// Config configures Open. Start from NewConfig; zero numbers mean the
// default.
type Config struct {
	// ServerURL and Token, when not empty, replace the stored ones (kept
	// in the state directory; the token only without a TokenProvider).
	ServerURL string
	Token     string
	// TokenProvider, when set, supplies the bearer token: asked before the
	// first request, before a token's exp, and when the server answers 401.
	// The token then lives in memory only, never in the state file.
	TokenProvider TokenProvider

	LockTimeoutMillis    int64 // wait for another process holding the directory (default 200)
	DialTimeoutMillis    int64 // connecting to the server (default 10 s)
	RequestTimeoutMillis int64 // a push, and a sync answer's first byte beyond its long poll (default 60 s)
	RetryMinMillis       int64 // the background loop's backoff after a failure (default 1 s …
	RetryMaxMillis       int64 // … doubling up to 5 min)
	LongPollSeconds      int64 // how long the server holds a sync open for news (default 30)
	ServerRetries        int64 // failed attempts (5xx) shown as syncing before error/server (default 3)
	MaxChangeKeys        int64 // keys a Change lists; more are counted per collection (default 100)
	TokenRefreshSeconds  int64 // renew a provided token this long before its exp (default 60)
	BlobCacheBytes       int64 // downloaded blobs kept on the device, LRU (default 256 MiB)
	// CallTimeoutMillis bounds each Sync, Pull, Push, Rebase and Wipe
	// (0: no bound; Cancel ends them in any case).
	CallTimeoutMillis int64
}

// NewConfig returns the defaults.
func NewConfig() *Config {
	d := client.DefaultOptions()
	return &Config{
		LockTimeoutMillis:    int64(d.LockTimeoutMillis),
		DialTimeoutMillis:    int64(d.DialTimeoutMillis),
		RequestTimeoutMillis: int64(d.RequestTimeoutMillis),
		RetryMinMillis:       int64(d.RetryMinMillis),
		RetryMaxMillis:       int64(d.RetryMaxMillis),
		LongPollSeconds:      int64(d.LongPollSeconds),
		ServerRetries:        int64(d.ServerRetries),
		MaxChangeKeys:        int64(d.MaxChangeKeys),
		TokenRefreshSeconds:  int64(d.TokenRefreshSeconds),
		BlobCacheBytes:       d.BlobCacheBytes,
	}
}

// options turns the Config into client.Options, refusing numbers that are
// negative or too large for the platform's int.
func (cfg *Config) options() (client.Options, error) {
	o := client.DefaultOptions()
	o.ServerURL, o.Token = cfg.ServerURL, cfg.Token
	if p := cfg.TokenProvider; p != nil {
		o.TokenProvider = func(context.Context) (string, error) { return p.Token() }
	}
	fields := []struct {
		name string
		v    int64
		dst  *int
	}{
		{"LockTimeoutMillis", cfg.LockTimeoutMillis, &o.LockTimeoutMillis},
		{"DialTimeoutMillis", cfg.DialTimeoutMillis, &o.DialTimeoutMillis},
		{"RequestTimeoutMillis", cfg.RequestTimeoutMillis, &o.RequestTimeoutMillis},
		{"RetryMinMillis", cfg.RetryMinMillis, &o.RetryMinMillis},
		{"RetryMaxMillis", cfg.RetryMaxMillis, &o.RetryMaxMillis},
		{"LongPollSeconds", cfg.LongPollSeconds, &o.LongPollSeconds},
		{"ServerRetries", cfg.ServerRetries, &o.ServerRetries},
		{"MaxChangeKeys", cfg.MaxChangeKeys, &o.MaxChangeKeys},
		{"TokenRefreshSeconds", cfg.TokenRefreshSeconds, &o.TokenRefreshSeconds},
	}
	for _, f := range fields {
		if f.v < 0 || f.v > math.MaxInt32 {
			return o, fmt.Errorf("config: %s is %d, want 0 (the default) to %d: %w", f.name, f.v, math.MaxInt32, client.ErrInvalid)
		}
		if f.v > 0 {
			*f.dst = int(f.v)
		}
	}
	if cfg.BlobCacheBytes < 0 {
		return o, fmt.Errorf("config: BlobCacheBytes is %d, want 0 (the default) or more: %w", cfg.BlobCacheBytes, client.ErrInvalid)
	}
	o.BlobCacheBytes = cfg.BlobCacheBytes
	if cfg.CallTimeoutMillis < 0 {
		return o, fmt.Errorf("config: CallTimeoutMillis is %d, want 0 (no bound) or more: %w", cfg.CallTimeoutMillis, client.ErrInvalid)
	}
	return o, nil
}

// TokenProvider is implemented by the app to sign in with its backend.
type TokenProvider interface {
	// Token returns a bearer token for the current user (a JWT the
	// deltasync server accepts), or an error (the sync is retried later).
	Token() (string, error)
}

// errClosed reports a call on a Client after Close or Wipe (CodeClosed).
var errClosed = errors.New("the client is closed")

// Client is one user's local data set and its sync. All methods are safe
// to call from any thread.
type Client struct {
	c           *client.Client
	callTimeout time.Duration
	closed      atomic.Bool

	mu     sync.Mutex
	base   context.Context // ended by Cancel, then replaced
	cancel context.CancelFunc
}

// Open opens (creating if needed) the client state in dir, an app-private
// directory. cfg nil means NewConfig(). Only one Client may hold a
// directory at a time.
func Open(dir string, cfg *Config) (*Client, error) {
	if cfg == nil {
		cfg = NewConfig()
	}
	if dir == "" {
		return nil, fmt.Errorf("open: no state directory given: %w", client.ErrInvalid)
	}
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	c, err := client.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	m := &Client{c: c, callTimeout: time.Duration(cfg.CallTimeoutMillis) * time.Millisecond}
	m.base, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// Close stops background sync and releases the state directory.
func (m *Client) Close() error {
	m.closed.Store(true)
	m.Cancel()
	return m.c.Close()
}

// Dir returns the state directory.
func (m *Client) Dir() string { return m.c.Dir() }

// live fails once the client is closed.
func (m *Client) live() error {
	if m.closed.Load() {
		return errClosed
	}
	return nil
}

// Cancel ends the network calls under way (Sync, Pull, Push, Rebase,
// Wipe): they fail with ErrorCode CodeCancelled and resume where they
// stopped next time. Background sync (Start) is not affected: Stop it.
func (m *Client) Cancel() {
	m.mu.Lock()
	m.cancel()
	m.base, m.cancel = context.WithCancel(context.Background())
	m.mu.Unlock()
}

// callContext is the context of one network call: ended by Cancel and by
// Config.CallTimeoutMillis.
func (m *Client) callContext() (context.Context, context.CancelFunc) {
	m.mu.Lock()
	base := m.base
	m.mu.Unlock()
	if m.callTimeout > 0 {
		return context.WithTimeout(base, m.callTimeout)
	}
	return context.WithCancel(base)
}

// Start runs sync in the background (push, pull, long poll for news,
// retries with backoff) until Stop or Close. Status and the listeners
// follow it.
func (m *Client) Start() error {
	if err := m.live(); err != nil {
		return err
	}
	return m.c.Start(context.Background())
}

// Stop ends background sync and waits for it.
func (m *Client) Stop() { m.c.Stop() }

// Sync pushes the pending edits, then pulls the newest version.
func (m *Client) Sync() (*SyncResult, error) { return m.run(m.c.Sync) }

// Pull downloads and installs the newest version.
func (m *Client) Pull() (*SyncResult, error) { return m.run(m.c.Pull) }

// Push sends the pending edits.
func (m *Client) Push() (*SyncResult, error) { return m.run(m.c.Push) }

// Rebase resumes pushing after the org's reject policy refused
// conflicting edits: pull, then send them again on the new version.
func (m *Client) Rebase() (*SyncResult, error) { return m.run(m.c.Rebase) }

func (m *Client) run(call func(context.Context) (*client.SyncResult, error)) (*SyncResult, error) {
	if err := m.live(); err != nil {
		return nil, err
	}
	ctx, cancel := m.callContext()
	defer cancel()
	res, err := call(ctx)
	if err != nil {
		return nil, err
	}
	return syncResultOf(res), nil
}

// Wipe removes this user's local state (sign-out on a shared device) and
// closes the client. Unless force, pending edits are pushed first and Wipe
// fails (ErrorCode CodePendingEdits), changing nothing, while any remain.
func (m *Client) Wipe(force bool) error {
	if err := m.live(); err != nil {
		return err
	}
	ctx, cancel := m.callContext()
	defer cancel()
	if err := m.c.Wipe(ctx, force); err != nil {
		return err
	}
	m.closed.Store(true)
	return nil
}

// SetOfflineMode switches offline mode (no network use; edits keep
// queueing). Switching it on before a sync has completed fails
// (ErrorCode CodeNotSynced).
func (m *Client) SetOfflineMode(on bool) error {
	if err := m.live(); err != nil {
		return err
	}
	return m.c.SetOfflineMode(on)
}

// OfflineMode reports whether offline mode is on.
func (m *Client) OfflineMode() bool { return m.c.OfflineMode() }

// NotifyConnectivity passes on the platform's reachability: without a
// network the client makes no requests and reports offline; when it comes
// back, background sync runs at once.
func (m *Client) NotifyConnectivity(online bool) { m.c.NotifyConnectivity(online) }

// SetServer stores the server URL and token (with a TokenProvider the
// token is kept in memory only; "" keeps the current one).
func (m *Client) SetServer(url, token string) error {
	if err := m.live(); err != nil {
		return err
	}
	return m.c.SetServer(url, token)
}

// ServerURL returns the configured server URL.
func (m *Client) ServerURL() string {
	if m.live() != nil {
		return ""
	}
	return m.c.ServerURL()
}

// ExportFile writes the merged view to path as NDJSON (one
// {"key":…,"value":…} per line, sorted by key). The file is replaced
// whole, or not at all.
func (m *Client) ExportFile(path string) error {
	if err := m.live(); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	tmp := f.Name()
	err = m.c.Export(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("export: %w", err)
	}
	return nil
}
