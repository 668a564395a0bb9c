package server

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/deadline"
)

// DevJWTSecret is the fixed HS256 secret used with --dev when no secret or key
// is configured. It is public knowledge: anyone can mint tokens with it, so a
// server using it must never be reachable from outside a developer's machine.
const DevJWTSecret = "deltasync-development-secret-DO-NOT-USE-IN-PRODUCTION"

// MinJWTSecretBytes is the shortest accepted HS256 secret. RFC 7518 §3.2
// requires a key at least as long as the hash output (256 bits).
const MinJWTSecretBytes = 32

// DefaultJWTMaxLifetime is the default of Options.JWTMaxLifetime.
const DefaultJWTMaxLifetime = 24 * time.Hour

// Options configures a Server. Start from DefaultOptions.
type Options struct {
	// Addr is the TCP address ListenAndServe listens on.
	Addr string
	// Store holds every data set and the org settings. Required.
	Store snapshot.Store

	// JWTSecret verifies HS256 tokens (and MintToken signs with it).
	JWTSecret []byte
	// JWTPublicKeyFiles are PEM files holding RSA (RS256) or P-256 ECDSA
	// (ES256) public keys, as PKIX "PUBLIC KEY", PKCS#1 "RSA PUBLIC KEY"
	// or "CERTIFICATE" blocks. A file may hold several blocks.
	JWTPublicKeyFiles []string
	// JWTPublicKeys are public keys given directly (*rsa.PublicKey or
	// *ecdsa.PublicKey), in addition to the files.
	JWTPublicKeys []crypto.PublicKey

	// ChunkSecret keys chunk IDs. Empty means the secret kept in the store
	// (created once by whichever process touches the store first), which is
	// what every replica and builder on one store must share.
	ChunkSecret []byte
	// RateLimit bounds each user's requests per second on this replica
	// (token bucket with RateBurst); 0 means no limit. Over it: 429.
	RateLimit float64
	RateBurst int
	// HeadCacheTTL is how long a replica trusts the head it last saw for a
	// user when answering polls (0: always ask the store). Versions made
	// through this replica show at once, others after at most this long.
	HeadCacheTTL time.Duration
	// FeedSettle holds change-feed entries back this long (see diff.ReadFeed).
	FeedSettle time.Duration

	// JWTIssuer and JWTAudience, when set, must match the tokens' iss and
	// aud claims (tokens from another issuer or meant for another service
	// are refused even if signed with a trusted key).
	JWTIssuer, JWTAudience string
	// JWTMaxLifetime is the longest a token may be valid: exp - iat, or
	// exp - now for a token without iat. A longer-lived token is refused.
	JWTMaxLifetime time.Duration

	// Dev allows starting without a JWT secret or key, using DevJWTSecret.
	Dev bool
	// Logger receives access logs and errors; nil means slog.Default().
	Logger *slog.Logger

	// MaxPatchBytes bounds the canonical body of a patch of several edits
	// (diff.Limits.MaxBytes); a patch of one edit may be as large as one
	// record of MaxRecordBytes needs. MaxPatchOps bounds the edits of a
	// patch (0: 10,000). MaxRecordBytes bounds one value a patch writes
	// (0: snapshot.MaxValueLen, also the most). An org's settings may lower
	// each; clients get the lower of the two in their policy and split their
	// queues to fit, so these limits never cost an edit.
	MaxPatchBytes  int64
	MaxPatchOps    int
	MaxRecordBytes int64
	// MaxDatasetBytes bounds an uploaded NDJSON data set (after decoding).
	MaxDatasetBytes int64
	// MaxBlobBytes bounds one blob (an org may lower it); EagerBlobBytes is
	// the largest blob clients download when a record they sync references
	// it, unless the org sets its own (bigger ones are fetched on demand).
	// BlobPartBytes is the most of an upload held in memory before it is
	// stored as one part (blobs.go).
	MaxBlobBytes   int64
	EagerBlobBytes int64
	BlobPartBytes  int
	// LongPollMax is the longest a sync request may wait for a new version.
	LongPollMax time.Duration
	// ReadyTimeout bounds the store probe of /readyz.
	ReadyTimeout time.Duration
	// SettingsTTL is how long org settings are cached by one replica; a
	// change made through another replica shows up after at most this long.
	SettingsTTL time.Duration

	// SyncVerifyBytes is how much of a delta pack's chunk data a sync reads
	// and verifies before it commits to a 200 answer (0: none): damage
	// found there is a JSON 500, damage found later ends the pack with an
	// abort frame. It bounds the memory each sync request holds for this.
	SyncVerifyBytes int64

	// ReadTimeout, WriteTimeout and IdleTimeout are the connection timeouts
	// of the underlying fasthttp server. Reads cover a whole (streamed) upload
	// and writes a whole download, so they are generous.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	IdleTimeout  time.Duration

	// Denial-of-service guards (see listener.go, admission.go and the
	// snapshot/deadline package).
	//
	// HeaderTimeout bounds the wait for a request's headers, from the
	// connection's first byte (or its opening); ReadTimeout then bounds the
	// body alone. A connection silent for that long is closed.
	HeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request's line and headers together, the
	// bearer token included (over it: 431). It is also the read buffer that
	// every open connection keeps, so it is memory per connected device:
	// lower it only if the tokens you accept (with the rest of the headers)
	// stay well under it. 0 means DefaultMaxHeaderBytes.
	MaxHeaderBytes int64
	// MaxConns bounds the client connections open at once; over it a new
	// connection is answered 503 and closed. 0 derives it from the
	// process's file-descriptor limit (DefaultMaxConns).
	MaxConns int
	// MaxConnsPerIP bounds the open connections from one client address
	// (over it: 429 and closed); 0, the default, means no such limit, since
	// behind a load balancer or a carrier NAT many clients share one.
	MaxConnsPerIP int
	// MaxDecodeMemory bounds the memory of the zstd decoders of the
	// compressed uploads (blobs, data sets) decoding at once: each takes
	// its window's class (1, 8 or 64 MiB, by its first frame's header) for
	// as long as it lasts; an upload over it waits up to 5 s, then gets 503
	// with Retry-After. At the default, 256 MiB, 29 uploads compressed with
	// an 8 MiB window (zstd's default for streams) decode at once.
	MaxDecodeMemory int64
	// StoreTimeout is how long one store call may wait for the store, and
	// StoreMinRate the slowest transfer rate (bytes per second) allowed on
	// top of it for an object's bytes: a call moving n bytes gets
	// StoreTimeout + n/StoreMinRate. Past it the request answers 503 with
	// Retry-After. A StoreTimeout of 0 sets no deadline.
	StoreTimeout time.Duration
	StoreMinRate int64

	// Backend configures admin patches, the per-org change feed, consumers,
	// webhooks and write validation (BackendOptions).
	Backend BackendOptions
	// Watch configures the change-feed watcher that wakes long polls for
	// versions committed elsewhere (other replicas, batch builds): see
	// WatchOptions and watcher.go.
	Watch WatchOptions
	// Notifier, if set, carries the news of commits between replicas
	// faster than the watcher (see Notifier; redisnotify is one).
	Notifier Notifier
	// Now is the server's clock where time decides what it does: the
	// change feed's settle horizon and cursors, consumers', settings' and
	// blob uploads' timestamps, the feed worker's lease, webhook retries and
	// consumer lag, and the settings and head caches' TTLs. nil means
	// time.Now. Tests move it instead of sleeping. Timers, latencies and
	// what is compared with the feed keys other writers date by the real
	// clock (the watcher, the hub, the org feed's wake-ups) keep time.Now.
	Now func() time.Time

	// HubIdleGrace is how long a replica keeps track of a user's head
	// after the user's last long poll here ended, so that the next poll
	// costs the store nothing (hub.go).
	HubIdleGrace time.Duration
}

// DefaultOptions returns the defaults: listen on 127.0.0.1:8080, 8 MiB
// patches, 1 GiB data sets, 60 s long polls, settings cached for 2 s.
func DefaultOptions() Options {
	return Options{
		Addr:            "127.0.0.1:8080",
		MaxPatchBytes:   8 << 20,
		MaxPatchOps:     10_000,
		MaxRecordBytes:  snapshot.MaxValueLen,
		MaxDatasetBytes: 1 << 30,
		MaxBlobBytes:    256 << 20,
		EagerBlobBytes:  1 << 20,
		BlobPartBytes:   1 << 20,
		LongPollMax:     60 * time.Second,
		FeedSettle:      10 * time.Second,
		JWTMaxLifetime:  DefaultJWTMaxLifetime,
		HeadCacheTTL:    250 * time.Millisecond,
		RateBurst:       20,
		ReadyTimeout:    2 * time.Second,
		SettingsTTL:     2 * time.Second,
		SyncVerifyBytes: 2 << 20,
		ReadTimeout:     10 * time.Minute,
		WriteTimeout:    30 * time.Minute,
		IdleTimeout:     2 * time.Minute,
		HeaderTimeout:   10 * time.Second,
		MaxDecodeMemory: 256 << 20,
		MaxHeaderBytes:  DefaultMaxHeaderBytes,
		StoreTimeout:    deadline.DefaultOptions().Timeout,
		StoreMinRate:    deadline.DefaultOptions().MinRate,
		Backend:         DefaultBackendOptions(),
		Watch:           DefaultWatchOptions(),
		HubIdleGrace:    10 * time.Minute,
	}
}

// DefaultMaxHeaderBytes is the default Options.MaxHeaderBytes: fasthttp's
// default read buffer, room for a request with a 3 KB bearer token.
const DefaultMaxHeaderBytes = 4 << 10

// Bounds of Options.MaxHeaderBytes.
const (
	minHeaderBytes = 1 << 10
	maxHeaderBytes = 1 << 20
)

// validateGuards checks the options of the denial-of-service guards.
func (o *Options) validateGuards() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"feed-settle", o.FeedSettle}, {"head-cache-ttl", o.HeadCacheTTL},
		{"read-timeout", o.ReadTimeout}, {"write-timeout", o.WriteTimeout}, {"idle-timeout", o.IdleTimeout},
	} {
		if d.v < 0 {
			return fmt.Errorf("server: %s must not be negative, not %v", d.name, d.v)
		}
	}
	if o.HeaderTimeout <= 0 {
		return fmt.Errorf("server: header-timeout must be positive, not %v", o.HeaderTimeout)
	}
	if o.MaxHeaderBytes != 0 && (o.MaxHeaderBytes < minHeaderBytes || o.MaxHeaderBytes > maxHeaderBytes) {
		return fmt.Errorf("server: max-header-bytes must be %d..%d, not %d", minHeaderBytes, maxHeaderBytes, o.MaxHeaderBytes)
	}
	if least := windowClasses[0].cost(); o.MaxDecodeMemory < least {
		return fmt.Errorf("server: max-decode-memory (%d) must be at least %d bytes (one decoder of the smallest zstd window)", o.MaxDecodeMemory, least)
	}
	if o.MaxConns < 0 || o.MaxConnsPerIP < 0 {
		return fmt.Errorf("server: max-conns (%d) and max-conns-per-ip (%d) must not be negative", o.MaxConns, o.MaxConnsPerIP)
	}
	if o.StoreTimeout < 0 {
		return fmt.Errorf("server: store-timeout must not be negative, not %v", o.StoreTimeout)
	}
	if o.StoreTimeout > 0 && o.StoreMinRate <= 0 {
		return fmt.Errorf("server: store-min-rate must be positive, not %d", o.StoreMinRate)
	}
	return nil
}

// Validate checks the options and fills in what Dev implies. It refuses to
// run without a JWT secret or public key unless Dev is set; with Dev and no
// key it installs DevJWTSecret and logs a loud warning.
func (o *Options) Validate() error {
	if o.Store == nil {
		return errors.New("server: no store configured")
	}
	if o.Addr == "" {
		return errors.New("server: empty listen address")
	}
	if _, port, err := net.SplitHostPort(o.Addr); err != nil {
		return fmt.Errorf("server: listen address %q: %w", o.Addr, err)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("server: listen address %q: port %q is not a number 0..65535", o.Addr, port)
	}
	if o.MaxBlobBytes <= 0 || o.MaxBlobBytes > maxInt || o.EagerBlobBytes < 0 || o.BlobPartBytes <= 0 {
		return fmt.Errorf("server: blob limits: max %d must be positive and at most %d, eager %d not negative, part %d positive",
			o.MaxBlobBytes, maxInt, o.EagerBlobBytes, o.BlobPartBytes)
	}
	if o.MaxPatchBytes <= 0 || o.MaxDatasetBytes <= 0 {
		return fmt.Errorf("server: body limits must be positive (patch %d, dataset %d)", o.MaxPatchBytes, o.MaxDatasetBytes)
	}
	// fasthttp counts body sizes in int; keep every limit representable.
	if o.MaxPatchBytes > maxInt || o.MaxDatasetBytes > maxInt {
		return fmt.Errorf("server: body limits must be at most %d", maxInt)
	}
	if err := o.validateLimits(); err != nil {
		return err
	}
	if o.LongPollMax <= 0 || o.ReadyTimeout <= 0 || o.SettingsTTL < 0 {
		return errors.New("server: long-poll-max and ready-timeout must be positive, settings-ttl not negative")
	}
	if o.JWTMaxLifetime <= 0 {
		return fmt.Errorf("server: jwt-max-lifetime must be positive, got %v", o.JWTMaxLifetime)
	}
	if err := o.validateGuards(); err != nil {
		return err
	}
	if err := o.validateBackend(); err != nil {
		return err
	}
	if err := o.validateFleet(); err != nil {
		return err
	}
	if len(o.JWTSecret) > 0 && len(o.JWTSecret) < MinJWTSecretBytes {
		return fmt.Errorf("server: JWT secret has %d bytes, need at least %d", len(o.JWTSecret), MinJWTSecretBytes)
	}
	if len(o.JWTSecret) == 0 && len(o.JWTPublicKeyFiles) == 0 && len(o.JWTPublicKeys) == 0 {
		if !o.Dev {
			return errors.New("server: no JWT secret or public key configured (set --jwt-secret or DELTASYNC_JWT_SECRET, --jwt-public-key, or use --dev for local development)")
		}
		o.JWTSecret = []byte(DevJWTSecret)
		o.logger().Warn("DEVELOPMENT MODE: accepting tokens signed with the public development secret; anyone can mint tokens for any org and user. Never expose this server.",
			slog.String("secret", DevJWTSecret))
	}
	if _, err := newVerifier(o); err != nil {
		return err
	}
	return nil
}

const maxInt = int64(^uint(0) >> 1)

// validateLimits checks the patch limits, filling in the defaults of the
// ones left zero.
func (o *Options) validateLimits() error {
	d := diff.DefaultLimits()
	if o.MaxPatchOps == 0 {
		o.MaxPatchOps = d.MaxOps
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = d.MaxRecordBytes
	}
	if o.MaxPatchOps < 0 {
		return fmt.Errorf("server: max-patch-ops must be positive, got %d", o.MaxPatchOps)
	}
	if o.MaxRecordBytes < 0 || o.MaxRecordBytes > snapshot.MaxValueLen {
		return fmt.Errorf("server: max-record-bytes must be 1..%d (the data model's largest value), got %d", snapshot.MaxValueLen, o.MaxRecordBytes)
	}
	return nil
}

// patchLimits are the server's own patch limits.
func (o *Options) patchLimits() diff.Limits {
	return diff.Limits{MaxOps: o.MaxPatchOps, MaxBytes: o.MaxPatchBytes, MaxRecordBytes: o.MaxRecordBytes}.Fill()
}

// now reads the server's clock (Options.Now).
func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}
