package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Errors returned by the client. Match them with errors.Is.
var (
	// ErrNotFound reports that a key has no value in the merged view.
	ErrNotFound = errors.New("key not found")
	// ErrInvalid reports a rejected edit: bad key, malformed JSON, oversize
	// value, a merge onto a value that is not an object. It is
	// snapshot.ErrInvalid, so either sentinel matches.
	ErrInvalid = snapshot.ErrInvalid
	// ErrLocked reports that another process holds the state directory.
	ErrLocked = state.ErrLocked
	// ErrCorrupt reports a state file that cannot be read. It is
	// snapshot.ErrCorrupt.
	ErrCorrupt = snapshot.ErrCorrupt
)

// Files of the state directory: StateFile holds the edit queue, conflicts,
// settings and counters; DataFile the synced version.
const (
	StateFile = state.EditsFile
	DataFile  = state.DataFile
)

// Options configure Open. Start from DefaultOptions.
type Options struct {
	// ServerURL and Token, when not empty, replace the stored ones. They are
	// kept in the state directory so later opens need not repeat them
	// (the token only without a TokenProvider).
	ServerURL string
	Token     string
	// TokenProvider, when set, supplies the bearer token (the app signs in
	// with its backend): the client calls it before its first request,
	// when the server answers 401 (then sends the request once more with
	// the new token), and before the token expires when its JWT exp claim
	// is readable (TokenRefreshSeconds ahead), so the app never has to
	// catch an auth error to sign in again. The token then lives in memory
	// only: it is never written to the state file, and one stored there
	// earlier is deleted at Open (bbolt may keep its bytes in a free page
	// until reused; Wipe removes the file). Token, and SetServer's token,
	// seed it. A failing provider is reported as error/auth and retried
	// with backoff. It may be called from any goroutine, one call at a
	// time, and may call the Client. (Not visible to gomobile callers: see
	// client/mobile.)
	TokenProvider func(ctx context.Context) (string, error)
	// TokenRefreshSeconds is how long before its exp a provided token is
	// replaced (default DefaultTokenRefreshSeconds).
	TokenRefreshSeconds int
	// LockTimeoutMillis is how long Open waits for another process to release
	// the state directory before failing with ErrLocked; 0 or less means the
	// default (bbolt itself would wait forever).
	LockTimeoutMillis int

	// HTTPClient sends the requests; nil means a client of its own with
	// DialTimeoutMillis, which follows redirects only to the server's own
	// scheme and host. It must not set an overall Timeout: a long poll
	// and a large download take long. (Not visible to gomobile callers.)
	HTTPClient *http.Client
	// DialTimeoutMillis bounds connecting to the server (default 10 s).
	DialTimeoutMillis int
	// RequestTimeoutMillis bounds a push, the wait for the first byte
	// of a sync answer beyond its long poll, and any silence within a
	// sync answer (a download stalled that long fails as a lost
	// connection and resumes at the next pull) (default 60 s).
	RequestTimeoutMillis int
	// RetryMinMillis and RetryMaxMillis bound the background loop's
	// exponential backoff after a failure (defaults 1 s and 5 min).
	RetryMinMillis int
	RetryMaxMillis int
	// LongPollSeconds is how long the background loop asks the server to
	// hold a sync request open waiting for a new version (default 30).
	LongPollSeconds int
	// ServerRetries is how many failed attempts in a row (5xx answers)
	// the status keeps showing syncing before it reports error/server
	// (default 3).
	ServerRetries int
	// MaxChangeKeys is how many keys a Change lists; a larger change is
	// described by its collections only (default DefaultMaxChangeKeys).
	MaxChangeKeys int
	// BlobCacheBytes bounds the downloaded and uploaded blobs kept on the
	// device (least recently used evicted first; blobs not yet uploaded
	// are never evicted). Default DefaultBlobCacheBytes.
	BlobCacheBytes int64
}

// DefaultOptions returns the options Open uses when nothing else is said.
func DefaultOptions() Options {
	return Options{
		LockTimeoutMillis:    200,
		DialTimeoutMillis:    10_000,
		RequestTimeoutMillis: 60_000,
		RetryMinMillis:       1_000,
		RetryMaxMillis:       300_000,
		LongPollSeconds:      30,
		ServerRetries:        3,
		MaxChangeKeys:        DefaultMaxChangeKeys,
		TokenRefreshSeconds:  DefaultTokenRefreshSeconds,
	}
}

// withDefaults fills unset (zero or negative) network options.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&o.DialTimeoutMillis, d.DialTimeoutMillis)
	set(&o.RequestTimeoutMillis, d.RequestTimeoutMillis)
	set(&o.RetryMinMillis, d.RetryMinMillis)
	set(&o.RetryMaxMillis, d.RetryMaxMillis)
	set(&o.LongPollSeconds, d.LongPollSeconds)
	set(&o.ServerRetries, d.ServerRetries)
	set(&o.MaxChangeKeys, d.MaxChangeKeys)
	set(&o.TokenRefreshSeconds, d.TokenRefreshSeconds)
	if o.BlobCacheBytes <= 0 {
		o.BlobCacheBytes = DefaultBlobCacheBytes
	}
	if o.RetryMaxMillis < o.RetryMinMillis {
		o.RetryMaxMillis = o.RetryMinMillis
	}
	return o
}

// Client is the local side of a deltasync data set: the synced version, the
// queue of edits made on this device, settings, counters and status. It is
// safe for concurrent use.
type Client struct {
	dir   string
	store *state.Store

	// wake, when set, is called after every accepted edit and every change
	// of offline mode; the sync loop sets it to learn that there is work.
	wakeMu sync.Mutex
	wake   func()
	// onInstalled receives installedChanges (set by tests; the change
	// events join here).
	onInstalled func(installedChange)

	st      statusState
	changes changeState
	tok     tokenState

	opts  Options
	httpc *http.Client
	// netMu serialises push and pull: one conversation with the server at
	// a time, so the download marker and the patch in flight have one
	// owner.
	netMu sync.Mutex
	loop  loopState
	blobs blobState // blobs.go
}

// Open opens (creating if needed) the client state in dir.
//
// Only one process may hold a state directory: if another does, Open fails
// after opts.LockTimeoutMillis with an error matching ErrLocked. A state file
// that is not a valid database fails with an error matching ErrCorrupt that
// names the file.
func Open(dir string, opts Options) (*Client, error) {
	sopts := state.Options{LockTimeout: time.Duration(opts.LockTimeoutMillis) * time.Millisecond, Mark: wire.BlobMarker()}
	st, err := state.Open(dir, sopts)
	if err != nil {
		return nil, err
	}
	if wipedState(st) {
		// A Wipe sealed this state and died before removing it: finish it.
		st.Close()
		if err := removeBlobs(dir); err != nil { // blobs.go
			return nil, err
		}
		if err := state.Remove(dir); err != nil {
			return nil, err
		}
		if st, err = state.Open(dir, sopts); err != nil {
			return nil, err
		}
	}
	opts = opts.withDefaults()
	c := &Client{dir: dir, store: st, opts: opts, httpc: opts.HTTPClient}
	if c.tok.provider = opts.TokenProvider; c.tok.provider != nil {
		c.setProvidedToken(opts.Token)
	}
	if c.httpc == nil {
		c.httpc = newHTTPClient(time.Duration(opts.DialTimeoutMillis)*time.Millisecond,
			time.Duration(opts.LongPollSeconds)*time.Second+opts.requestTimeout())
	}
	if err := c.init(opts); err != nil {
		st.Close()
		return nil, err
	}
	if err := c.openBlobs(); err != nil { // blobs.go
		st.Close()
		return nil, err
	}
	return c, nil
}

// init stores the server settings from opts and loads the status.
func (c *Client) init(opts Options) error {
	err := c.store.UpdateEdits(func(tx *state.EditsTx) error {
		if opts.ServerURL != "" {
			if err := tx.SetMeta(state.MetaServerURL, []byte(opts.ServerURL)); err != nil {
				return err
			}
		}
		if opts.TokenProvider != nil {
			// Provided tokens live in memory only.
			return tx.SetMeta(state.MetaToken, nil)
		}
		if opts.Token != "" {
			return tx.SetMeta(state.MetaToken, []byte(opts.Token))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("client state %s: %w", filepath.Join(c.dir, StateFile), err)
	}
	return c.loadStatus()
}

// Dir returns the state directory.
func (c *Client) Dir() string { return c.dir }

// Close flushes the counters and releases the state directory.
func (c *Client) Close() error {
	c.Stop()
	ferr := c.flushCounters()
	if state.IsClosed(ferr) {
		return nil // already closed
	}
	if err := c.store.Close(); err != nil {
		return err
	}
	return ferr
}

// SetWakeHook installs fn to be called (outside any lock) after each accepted
// edit and each change of offline mode. The sync loop uses it to start work
// at once instead of waiting for its next poll; nil removes the hook. fn must
// not block.
func (c *Client) SetWakeHook(fn func()) {
	c.wakeMu.Lock()
	c.wake = fn
	c.wakeMu.Unlock()
}

func (c *Client) notifyWake() {
	c.wakeMu.Lock()
	fn := c.wake
	c.wakeMu.Unlock()
	if fn != nil {
		fn()
	}
	c.kickLoop()
}

// ServerURL returns the stored server URL ("" if none).
func (c *Client) ServerURL() string { return string(c.meta(state.MetaServerURL)) }

// Token returns the bearer token the client sends ("" if none): the
// stored one, or with a TokenProvider the one in memory.
func (c *Client) Token() string {
	if c.tok.provider != nil {
		return c.providedToken()
	}
	return c.storedToken()
}

func (c *Client) storedToken() string { return string(c.meta(state.MetaToken)) }

// SetServer stores the server URL and bearer token. With a TokenProvider
// the token is kept in memory only ("" keeps the current one).
func (c *Client) SetServer(url, token string) error {
	provided := c.tok.provider != nil
	err := c.store.UpdateEdits(func(tx *state.EditsTx) error {
		if err := tx.SetMeta(state.MetaServerURL, []byte(url)); err != nil {
			return err
		}
		if provided {
			return nil
		}
		return tx.SetMeta(state.MetaToken, []byte(token))
	})
	if provided {
		c.setProvidedToken(token)
	}
	if err != nil {
		return fmt.Errorf("set server: %w", err)
	}
	// New credentials may end an auth error: try again at once.
	c.notifyWake()
	return nil
}

// meta returns a setting (nil if unset or unreadable: settings are
// informational where this is used).
func (c *Client) meta(key string) []byte {
	v, _ := c.store.Meta(key)
	return v
}

// requestTimeout is RequestTimeoutMillis as a duration.
func (o Options) requestTimeout() time.Duration {
	return time.Duration(o.RequestTimeoutMillis) * time.Millisecond
}
