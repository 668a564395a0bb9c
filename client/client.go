package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/deltasync/deltasync/snapshot"
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
	ErrLocked = errors.New("client state is in use by another process")
	// ErrCorrupt reports a state file that cannot be read. It is
	// snapshot.ErrCorrupt.
	ErrCorrupt = snapshot.ErrCorrupt
)

// StateFile is the name of the bbolt file inside the state directory.
const StateFile = "state.db"

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
	// DialTimeoutMillis. It must not set an overall Timeout: a long poll
	// and a large download take long. (Not visible to gomobile callers.)
	HTTPClient *http.Client
	// DialTimeoutMillis bounds connecting to the server (default 10 s).
	DialTimeoutMillis int
	// RequestTimeoutMillis bounds a push and the wait for the first byte
	// of a sync answer beyond its long poll (default 60 s).
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
	if o.RetryMaxMillis < o.RetryMinMillis {
		o.RetryMaxMillis = o.RetryMinMillis
	}
	return o
}

// Bucket names. Every bucket is created by Open.
var (
	bucketMeta      = []byte("meta")      // settings and counters, see meta* keys
	bucketRecords   = []byte("records")   // key -> canonical value of the synced version
	bucketChunks    = []byte("chunks")    // chunk id (16 bytes) -> raw chunk bytes
	bucketQueue     = []byte("queue")     // seq (big-endian uint64) -> edit JSON, pending
	bucketSent      = []byte("sent")      // seq -> edit JSON, applied by the server, not yet pulled
	bucketEditIndex = []byte("editindex") // key 0x00 seq -> nothing; edits of queue and sent by key
	bucketInflight  = []byte("inflight")  // "patch" -> inflightPatch JSON
	bucketConflicts = []byte("conflicts") // conflict id (big-endian uint64) -> Conflict JSON
)

var allBuckets = [][]byte{
	bucketMeta, bucketRecords, bucketChunks, bucketQueue, bucketSent,
	bucketEditIndex, bucketInflight, bucketConflicts,
}

// Keys in bucketMeta.
var (
	metaFormat     = []byte("format")      // state format version, big-endian uint64
	metaServerURL  = []byte("server_url")  // string
	metaToken      = []byte("token")       // string
	metaVersion    = []byte("version")     // local (synced) version, big-endian uint64
	metaManifest   = []byte("manifest")    // manifest bytes of the local version
	metaOffline    = []byte("offline")     // 1 byte: offline mode on
	metaPolicy     = []byte("policy")      // wire.Policy JSON
	metaCounters   = []byte("counters")    // counters JSON
	metaEditSeq    = []byte("edit_seq")    // last assigned edit seq, big-endian uint64
	metaConflictID = []byte("conflict_id") // last assigned conflict id, big-endian uint64
)

const stateFormat = 1

// Client is the local side of a deltasync data set: the synced version, the
// queue of edits made on this device, settings, counters and status. It is
// safe for concurrent use.
type Client struct {
	dir string
	db  *bolt.DB

	// wake, when set, is called after every accepted edit and every change
	// of offline mode; the sync loop sets it to learn that there is work.
	wakeMu sync.Mutex
	wake   func()

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
}

// Open opens (creating if needed) the client state in dir.
//
// Only one process may hold a state directory: if another does, Open fails
// after opts.LockTimeoutMillis with an error matching ErrLocked. A state file
// that is not a valid database fails with an error matching ErrCorrupt that
// names the file.
func Open(dir string, opts Options) (*Client, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create client state directory: %w", err)
	}
	path := filepath.Join(dir, StateFile)
	timeout := time.Duration(opts.LockTimeoutMillis) * time.Millisecond
	if timeout <= 0 {
		// bbolt waits forever on a zero timeout; a mobile app must never hang.
		timeout = time.Duration(DefaultOptions().LockTimeoutMillis) * time.Millisecond
	}
	db, err := openBolt(path, timeout)
	if err != nil {
		return nil, err
	}
	if wipedFile(db) {
		// A Wipe sealed this file and died before removing it: finish it.
		db.Close()
		if err := removeState(dir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create client state directory: %w", err)
		}
		if db, err = openBolt(path, timeout); err != nil {
			return nil, err
		}
	}
	opts = opts.withDefaults()
	c := &Client{dir: dir, db: db, opts: opts, httpc: opts.HTTPClient}
	if c.tok.provider = opts.TokenProvider; c.tok.provider != nil {
		c.setProvidedToken(opts.Token)
	}
	if c.httpc == nil {
		c.httpc = newHTTPClient(time.Duration(opts.DialTimeoutMillis)*time.Millisecond,
			time.Duration(opts.LongPollSeconds)*time.Second+time.Duration(opts.RequestTimeoutMillis)*time.Millisecond)
	}
	if err := c.init(opts); err != nil {
		db.Close()
		return nil, err
	}
	return c, nil
}

// openBolt opens the bbolt file and translates its failures into the
// client's sentinels. bbolt panics on some kinds of damage (a meta page that
// checks out pointing at garbage), so the open is guarded.
func openBolt(path string, timeout time.Duration) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("client state %s is damaged (%v): %w", path, r, ErrCorrupt)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, &lockedError{dir: filepath.Dir(path)}
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
		return nil, fmt.Errorf("client state %s is not a valid database (%v): %w", path, err, ErrCorrupt)
	default:
		return nil, fmt.Errorf("open client state %s: %w", path, err)
	}
}

// init creates the buckets, checks the state format, stores the server
// settings from opts and loads the status counters.
func (c *Client) init(opts Options) error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if f := meta.Get(metaFormat); f == nil {
			if err := meta.Put(metaFormat, u64(stateFormat)); err != nil {
				return err
			}
		} else if len(f) != 8 {
			return fmt.Errorf("state format field: %w", ErrCorrupt)
		} else if v := binary.BigEndian.Uint64(f); v != stateFormat {
			return fmt.Errorf("client state format %d, this build reads %d: %w", v, stateFormat, snapshot.ErrUnsupportedVersion)
		}
		if opts.ServerURL != "" {
			if err := meta.Put(metaServerURL, []byte(opts.ServerURL)); err != nil {
				return err
			}
		}
		if opts.TokenProvider != nil {
			// Provided tokens live in memory only.
			return meta.Delete(metaToken)
		}
		if opts.Token != "" {
			if err := meta.Put(metaToken, []byte(opts.Token)); err != nil {
				return err
			}
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
	if errors.Is(ferr, bolterrors.ErrDatabaseNotOpen) {
		return nil // already closed
	}
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("close client state: %w", err)
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
func (c *Client) ServerURL() string { return string(c.metaString(metaServerURL)) }

// Token returns the bearer token the client sends ("" if none): the
// stored one, or with a TokenProvider the one in memory.
func (c *Client) Token() string {
	if c.tok.provider != nil {
		return c.providedToken()
	}
	return c.storedToken()
}

func (c *Client) storedToken() string { return string(c.metaString(metaToken)) }

// SetServer stores the server URL and bearer token. With a TokenProvider
// the token is kept in memory only ("" keeps the current one).
func (c *Client) SetServer(url, token string) error {
	provided := c.tok.provider != nil
	err := c.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(metaServerURL, []byte(url)); err != nil {
			return err
		}
		if provided {
			return nil
		}
		return meta.Put(metaToken, []byte(token))
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

func (c *Client) metaString(key []byte) []byte {
	v, _ := c.getMeta(key)
	return v
}

// getMeta returns a copy of a meta value (nil if unset). Pull and push keep
// their own resume state here under keys of their choosing.
func (c *Client) getMeta(key []byte) ([]byte, error) {
	var out []byte
	err := c.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(key); v != nil {
			out = bytes.Clone(v)
		}
		return nil
	})
	return out, err
}

// setMeta stores (or with a nil value deletes) one meta value durably.
func (c *Client) setMeta(key, value []byte) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		if value == nil {
			return tx.Bucket(bucketMeta).Delete(key)
		}
		return tx.Bucket(bucketMeta).Put(key, value)
	})
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func getU64(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// lockedError names the directory another process holds; it matches
// ErrLocked.
type lockedError struct{ dir string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("client state in %s is in use by another process", e.dir)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }
