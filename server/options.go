package server

import (
	"crypto"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/bytesize"
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
	// MaxConns bounds the client connections open at once; over it a new
	// connection is answered 503 and closed. 0 derives it from the
	// process's file-descriptor limit (DefaultMaxConns).
	MaxConns int
	// MaxConnsPerIP bounds the open connections from one client address
	// (over it: 429 and closed); 0, the default, means no such limit, since
	// behind a load balancer or a carrier NAT many clients share one.
	MaxConnsPerIP int
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
	// HubIdleGrace is how long a replica keeps track of a user's head
	// after the user's last long poll here ended, so that the next poll
	// costs the store nothing (hub.go).
	HubIdleGrace time.Duration

	// envErr records a DELTASYNC_* variable that RegisterFlags could not
	// parse; Validate reports it, since RegisterFlags cannot fail.
	envErr error
}

// registerBlobFlags is RegisterFlags for the blob limits.
func (o *Options) registerBlobFlags(fs *flag.FlagSet) {
	o.MaxBlobBytes = o.envBytes("DELTASYNC_MAX_BLOB_BYTES", o.MaxBlobBytes)
	fs.Var((*bytesize.Flag)(&o.MaxBlobBytes), "max-blob-bytes",
		"largest blob (photo, file) a user may upload, e.g. 256MiB; an org may set a lower one (env DELTASYNC_MAX_BLOB_BYTES)")
	o.EagerBlobBytes = o.envBytes("DELTASYNC_EAGER_BLOB_BYTES", o.EagerBlobBytes)
	fs.Var((*bytesize.Flag)(&o.EagerBlobBytes), "eager-blob-bytes",
		"clients download referenced blobs up to this size at sync, bigger ones on demand, unless the org sets its own (env DELTASYNC_EAGER_BLOB_BYTES)")
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
		StoreTimeout:    deadline.DefaultOptions().Timeout,
		StoreMinRate:    deadline.DefaultOptions().MinRate,
		Backend:         DefaultBackendOptions(),
		Watch:           DefaultWatchOptions(),
		HubIdleGrace:    10 * time.Minute,
	}
}

// RegisterFlags registers the server's flags on fs. Each flag's default is
// the current value of o, overridden by the matching DELTASYNC_* environment
// variable, so configuration works through flags and the environment alike
// (a flag given on the command line wins). --store is cmd's business.
//
// The JWT secret is better passed as DELTASYNC_JWT_SECRET than as a flag: a
// command line is visible to every user of the machine.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	o.Addr = o.envString("DELTASYNC_ADDR", o.Addr)
	fs.StringVar(&o.Addr, "addr", o.Addr, "listen address (env DELTASYNC_ADDR)")

	o.registerAuthFlags(fs)
	o.RateLimit = envParse(o, "DELTASYNC_RATE_LIMIT", o.RateLimit, func(v string) (float64, error) { return strconv.ParseFloat(v, 64) })
	fs.Float64Var(&o.RateLimit, "rate-limit", o.RateLimit,
		"requests per second allowed per user on this replica, 0 for no limit; over it: 429 (env DELTASYNC_RATE_LIMIT)")
	o.RateBurst = envParse(o, "DELTASYNC_RATE_BURST", o.RateBurst, strconv.Atoi)
	fs.IntVar(&o.RateBurst, "rate-burst", o.RateBurst, "requests a user may make at once above the rate (env DELTASYNC_RATE_BURST)")
	o.HeadCacheTTL = o.envDuration("DELTASYNC_HEAD_CACHE_TTL", o.HeadCacheTTL)
	fs.DurationVar(&o.HeadCacheTTL, "head-cache-ttl", o.HeadCacheTTL,
		"how long a replica trusts the head it last saw when answering polls; 0 asks the store every time (env DELTASYNC_HEAD_CACHE_TTL)")
	o.FeedSettle = o.envDuration("DELTASYNC_FEED_SETTLE", o.FeedSettle)
	fs.DurationVar(&o.FeedSettle, "feed-settle", o.FeedSettle,
		"how long change-feed entries are held back so no slower replica's entry is passed (env DELTASYNC_FEED_SETTLE)")

	o.Dev = o.envBool("DELTASYNC_DEV", o.Dev)
	fs.BoolVar(&o.Dev, "dev", o.Dev,
		"development mode: without a secret, accept tokens signed with the public DevJWTSecret (env DELTASYNC_DEV)")

	o.registerLimitFlags(fs)
	o.registerBlobFlags(fs)
	o.LongPollMax = o.envDuration("DELTASYNC_LONG_POLL_MAX", o.LongPollMax)
	fs.DurationVar(&o.LongPollMax, "long-poll-max", o.LongPollMax,
		"longest wait of a sync long poll (env DELTASYNC_LONG_POLL_MAX)")
	o.ReadyTimeout = o.envDuration("DELTASYNC_READY_TIMEOUT", o.ReadyTimeout)
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", o.ReadyTimeout,
		"how long /readyz waits for the store (env DELTASYNC_READY_TIMEOUT)")
	o.SettingsTTL = o.envDuration("DELTASYNC_SETTINGS_TTL", o.SettingsTTL)
	fs.DurationVar(&o.SettingsTTL, "settings-ttl", o.SettingsTTL,
		"how long org settings are cached per replica (env DELTASYNC_SETTINGS_TTL)")
	o.ReadTimeout = o.envDuration("DELTASYNC_READ_TIMEOUT", o.ReadTimeout)
	fs.DurationVar(&o.ReadTimeout, "read-timeout", o.ReadTimeout,
		"longest time to read one request, body included (env DELTASYNC_READ_TIMEOUT)")
	o.WriteTimeout = o.envDuration("DELTASYNC_WRITE_TIMEOUT", o.WriteTimeout)
	fs.DurationVar(&o.WriteTimeout, "write-timeout", o.WriteTimeout,
		"longest time to write one response (env DELTASYNC_WRITE_TIMEOUT)")
	o.IdleTimeout = o.envDuration("DELTASYNC_IDLE_TIMEOUT", o.IdleTimeout)
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", o.IdleTimeout,
		"how long an idle keep-alive connection stays open (env DELTASYNC_IDLE_TIMEOUT)")
	o.registerGuardFlags(fs)
	o.registerBackendFlags(fs)
	o.registerFleetFlags(fs)
}

// registerAuthFlags registers the flags of token verification and the
// chunk-ID secret.
func (o *Options) registerAuthFlags(fs *flag.FlagSet) {
	fs.Var((*secretFlag)(&o.JWTSecret), "jwt-secret",
		"HS256 secret verifying bearer tokens, at least 32 bytes (env DELTASYNC_JWT_SECRET)")
	if v, ok := os.LookupEnv("DELTASYNC_JWT_SECRET"); ok && v != "" {
		o.JWTSecret = []byte(v)
	}

	if v, ok := os.LookupEnv("DELTASYNC_JWT_PUBLIC_KEY"); ok && v != "" {
		o.JWTPublicKeyFiles = splitList(v)
	}
	fs.Var(&listFlag{list: &o.JWTPublicKeyFiles}, "jwt-public-key",
		"PEM file with an RS256/ES256 public key verifying bearer tokens; repeatable (env DELTASYNC_JWT_PUBLIC_KEY, comma-separated)")

	fs.Var((*secretFlag)(&o.ChunkSecret), "chunk-secret",
		"chunk-ID secret; default: the one kept in the store, shared by every replica and builder (env DELTASYNC_CHUNK_SECRET)")
	if v, ok := os.LookupEnv("DELTASYNC_CHUNK_SECRET"); ok && v != "" {
		o.ChunkSecret = []byte(v)
	}
	o.JWTIssuer = o.envString("DELTASYNC_JWT_ISSUER", o.JWTIssuer)
	fs.StringVar(&o.JWTIssuer, "jwt-issuer", o.JWTIssuer, "required iss claim of tokens, if set (env DELTASYNC_JWT_ISSUER)")
	o.JWTAudience = o.envString("DELTASYNC_JWT_AUDIENCE", o.JWTAudience)
	fs.StringVar(&o.JWTAudience, "jwt-audience", o.JWTAudience, "required aud claim of tokens, if set (env DELTASYNC_JWT_AUDIENCE)")
	o.JWTMaxLifetime = o.envDuration("DELTASYNC_JWT_MAX_LIFETIME", o.JWTMaxLifetime)
	fs.DurationVar(&o.JWTMaxLifetime, "jwt-max-lifetime", o.JWTMaxLifetime,
		"longest token lifetime accepted: exp - iat, or exp - now without iat (env DELTASYNC_JWT_MAX_LIFETIME)")
}

// registerLimitFlags registers the size limits of patches, records and
// uploaded data sets.
func (o *Options) registerLimitFlags(fs *flag.FlagSet) {
	o.MaxPatchBytes = o.envBytes("DELTASYNC_MAX_PATCH_BYTES", o.MaxPatchBytes)
	fs.Var((*bytesize.Flag)(&o.MaxPatchBytes), "max-patch-bytes",
		"largest patch of several edits after decoding, e.g. 8MiB; clients split to fit, and one edit may always be as large as --max-record-bytes needs (env DELTASYNC_MAX_PATCH_BYTES)")
	o.MaxPatchOps = envParse(o, "DELTASYNC_MAX_PATCH_OPS", o.MaxPatchOps, strconv.Atoi)
	fs.IntVar(&o.MaxPatchOps, "max-patch-ops", o.MaxPatchOps,
		"most edits per patch; clients split to fit (env DELTASYNC_MAX_PATCH_OPS)")
	o.MaxRecordBytes = o.envBytes("DELTASYNC_MAX_RECORD_BYTES", o.MaxRecordBytes)
	fs.Var((*bytesize.Flag)(&o.MaxRecordBytes), "max-record-bytes",
		"largest value an edit may write, at most 16MiB; clients refuse bigger ones at edit time (env DELTASYNC_MAX_RECORD_BYTES)")
	o.MaxDatasetBytes = o.envBytes("DELTASYNC_MAX_DATASET_BYTES", o.MaxDatasetBytes)
	fs.Var((*bytesize.Flag)(&o.MaxDatasetBytes), "max-dataset-bytes",
		"largest uploaded data set after decoding, e.g. 1GiB (env DELTASYNC_MAX_DATASET_BYTES)")
}

// registerGuardFlags registers the flags of the denial-of-service guards.
func (o *Options) registerGuardFlags(fs *flag.FlagSet) {
	o.HeaderTimeout = o.envDuration("DELTASYNC_HEADER_TIMEOUT", o.HeaderTimeout)
	fs.DurationVar(&o.HeaderTimeout, "header-timeout", o.HeaderTimeout,
		"longest wait for a request's headers; a connection silent that long is closed (env DELTASYNC_HEADER_TIMEOUT)")
	o.MaxConns = envParse(o, "DELTASYNC_MAX_CONNS", o.MaxConns, strconv.Atoi)
	fs.IntVar(&o.MaxConns, "max-conns", o.MaxConns,
		"most client connections open at once, over it 503; 0 derives it from the file-descriptor limit (env DELTASYNC_MAX_CONNS)")
	o.MaxConnsPerIP = envParse(o, "DELTASYNC_MAX_CONNS_PER_IP", o.MaxConnsPerIP, strconv.Atoi)
	fs.IntVar(&o.MaxConnsPerIP, "max-conns-per-ip", o.MaxConnsPerIP,
		"most open connections from one client address, over it 429; 0 for no limit (env DELTASYNC_MAX_CONNS_PER_IP)")
	o.StoreTimeout = o.envDuration("DELTASYNC_STORE_TIMEOUT", o.StoreTimeout)
	fs.DurationVar(&o.StoreTimeout, "store-timeout", o.StoreTimeout,
		"longest wait for the store in one call (plus the transfer time at --store-min-rate); past it 503 + Retry-After; 0 for none (env DELTASYNC_STORE_TIMEOUT)")
	o.StoreMinRate = o.envBytes("DELTASYNC_STORE_MIN_RATE", o.StoreMinRate)
	fs.Var((*bytesize.Flag)(&o.StoreMinRate), "store-min-rate",
		"slowest store transfer rate per second allowed on top of --store-timeout, e.g. 1MiB (env DELTASYNC_STORE_MIN_RATE)")
}

// validateGuards checks the options of the denial-of-service guards.
func (o *Options) validateGuards() error {
	if o.HeaderTimeout <= 0 {
		return fmt.Errorf("server: header-timeout must be positive, not %v", o.HeaderTimeout)
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
	if o.envErr != nil {
		return o.envErr
	}
	if o.Store == nil {
		return errors.New("server: no store configured")
	}
	if o.Addr == "" {
		return errors.New("server: empty listen address")
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

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

func (o *Options) envString(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// envParse reads a DELTASYNC_* variable with parse; an unset or empty
// variable gives def, a bad one def and an error that Validate reports.
func envParse[T any](o *Options, name string, def T, parse func(string) (T, error)) T {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		o.setEnvErr(name, v, err)
		return def
	}
	return x
}

func (o *Options) envBool(name string, def bool) bool {
	return envParse(o, name, def, strconv.ParseBool)
}

func (o *Options) envBytes(name string, def int64) int64 {
	return envParse(o, name, def, bytesize.Parse)
}

func (o *Options) envDuration(name string, def time.Duration) time.Duration {
	return envParse(o, name, def, time.ParseDuration)
}

func (o *Options) setEnvErr(name, value string, err error) {
	if o.envErr == nil {
		o.envErr = fmt.Errorf("server: environment variable %s=%q: %w", name, value, err)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// secretFlag is a flag.Value for a secret: String never prints it, so usage
// output and flag dumps do not leak it.
type secretFlag []byte

func (f *secretFlag) String() string {
	if f == nil || len(*f) == 0 {
		return ""
	}
	return "(set)"
}

func (f *secretFlag) Set(s string) error { *f = []byte(s); return nil }

// listFlag is a repeatable string flag. The first use on the command line
// replaces the default taken from the environment instead of adding to it.
type listFlag struct {
	list *[]string
	set  bool
}

func (f *listFlag) String() string {
	if f == nil || f.list == nil {
		return ""
	}
	return strings.Join(*f.list, ",")
}

func (f *listFlag) Set(s string) error {
	if !f.set {
		*f.list = nil
		f.set = true
	}
	*f.list = append(*f.list, s)
	return nil
}
