package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deltasync/deltasync/internal/bytesize"
	"github.com/deltasync/deltasync/server"
)

// serverConfig fills server.Options from the flags of `deltasync serve` and
// the DELTASYNC_* environment variables (the server library reads neither:
// cmd owns configuration).
type serverConfig struct {
	e *env
	o *server.Options
	// err records the first DELTASYNC_* variable that did not parse.
	err error
}

// registerServerFlags registers the flags of o on fs, with defaults taken
// from o and then the environment. It returns the error of the first
// DELTASYNC_* variable that did not parse, which serve reports before it
// touches the store.
func registerServerFlags(e *env, fs *flag.FlagSet, o *server.Options) error {
	c := &serverConfig{e: e, o: o}
	c.register(fs)
	return c.err
}

// register registers the flags of server.Options on fs. Each flag's
// default is the current value of the options, overridden by the matching
// DELTASYNC_* environment variable, so configuration works through flags
// and the environment alike (a flag given on the command line wins).
//
// The JWT secret is better passed as DELTASYNC_JWT_SECRET than as a flag: a
// command line is visible to every user of the machine.
func (c *serverConfig) register(fs *flag.FlagSet) {
	o := c.o
	o.Addr = c.str("DELTASYNC_ADDR", o.Addr)
	fs.StringVar(&o.Addr, "addr", o.Addr, "listen address (env DELTASYNC_ADDR)")

	c.registerAuthFlags(fs)
	o.RateLimit = envParse(c, "DELTASYNC_RATE_LIMIT", o.RateLimit, func(v string) (float64, error) { return strconv.ParseFloat(v, 64) })
	fs.Float64Var(&o.RateLimit, "rate-limit", o.RateLimit,
		"requests per second allowed per user on this replica, 0 for no limit; over it: 429 (env DELTASYNC_RATE_LIMIT)")
	o.RateBurst = envParse(c, "DELTASYNC_RATE_BURST", o.RateBurst, strconv.Atoi)
	fs.IntVar(&o.RateBurst, "rate-burst", o.RateBurst, "requests a user may make at once above the rate (env DELTASYNC_RATE_BURST)")
	o.HeadCacheTTL = c.duration("DELTASYNC_HEAD_CACHE_TTL", o.HeadCacheTTL)
	fs.DurationVar(&o.HeadCacheTTL, "head-cache-ttl", o.HeadCacheTTL,
		"how long a replica trusts the head it last saw when answering polls; 0 asks the store every time (env DELTASYNC_HEAD_CACHE_TTL)")
	o.FeedSettle = c.duration("DELTASYNC_FEED_SETTLE", o.FeedSettle)
	fs.DurationVar(&o.FeedSettle, "feed-settle", o.FeedSettle,
		"how long change-feed entries are held back so no slower replica's entry is passed (env DELTASYNC_FEED_SETTLE)")

	o.Dev = c.boolean("DELTASYNC_DEV", o.Dev)
	fs.BoolVar(&o.Dev, "dev", o.Dev,
		"development mode: without a secret, accept tokens signed with the public DevJWTSecret (env DELTASYNC_DEV)")

	c.registerLimitFlags(fs)
	c.registerBlobFlags(fs)
	o.LongPollMax = c.duration("DELTASYNC_LONG_POLL_MAX", o.LongPollMax)
	fs.DurationVar(&o.LongPollMax, "long-poll-max", o.LongPollMax,
		"longest wait of a sync long poll (env DELTASYNC_LONG_POLL_MAX)")
	o.ReadyTimeout = c.duration("DELTASYNC_READY_TIMEOUT", o.ReadyTimeout)
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", o.ReadyTimeout,
		"how long /readyz waits for the store (env DELTASYNC_READY_TIMEOUT)")
	o.SettingsTTL = c.duration("DELTASYNC_SETTINGS_TTL", o.SettingsTTL)
	fs.DurationVar(&o.SettingsTTL, "settings-ttl", o.SettingsTTL,
		"how long org settings are cached per replica (env DELTASYNC_SETTINGS_TTL)")
	o.ReadTimeout = c.duration("DELTASYNC_READ_TIMEOUT", o.ReadTimeout)
	fs.DurationVar(&o.ReadTimeout, "read-timeout", o.ReadTimeout,
		"longest time to read one request, body included (env DELTASYNC_READ_TIMEOUT)")
	o.WriteTimeout = c.duration("DELTASYNC_WRITE_TIMEOUT", o.WriteTimeout)
	fs.DurationVar(&o.WriteTimeout, "write-timeout", o.WriteTimeout,
		"longest time to write one response (env DELTASYNC_WRITE_TIMEOUT)")
	o.IdleTimeout = c.duration("DELTASYNC_IDLE_TIMEOUT", o.IdleTimeout)
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", o.IdleTimeout,
		"how long an idle keep-alive connection stays open (env DELTASYNC_IDLE_TIMEOUT)")
	c.registerGuardFlags(fs)
	c.registerBackendFlags(fs)
	c.registerFleetFlags(fs)
}

// registerAuthFlags registers the flags of token verification and the
// chunk-ID secret.
func (c *serverConfig) registerAuthFlags(fs *flag.FlagSet) {
	o := c.o
	fs.Var((*secretFlag)(&o.JWTSecret), "jwt-secret",
		"HS256 secret verifying bearer tokens, at least 32 bytes (env DELTASYNC_JWT_SECRET)")
	if v := c.str("DELTASYNC_JWT_SECRET", ""); v != "" {
		o.JWTSecret = []byte(v)
	}

	if v := c.str("DELTASYNC_JWT_PUBLIC_KEY", ""); v != "" {
		o.JWTPublicKeyFiles = splitList(v)
	}
	fs.Var(&listFlag{list: &o.JWTPublicKeyFiles}, "jwt-public-key",
		"PEM file with an RS256/ES256 public key verifying bearer tokens; repeatable (env DELTASYNC_JWT_PUBLIC_KEY, comma-separated)")

	fs.Var((*secretFlag)(&o.ChunkSecret), "chunk-secret",
		"chunk-ID secret; default: the one kept in the store, shared by every replica and builder (env DELTASYNC_CHUNK_SECRET)")
	if v := c.str("DELTASYNC_CHUNK_SECRET", ""); v != "" {
		o.ChunkSecret = []byte(v)
	}
	o.JWTIssuer = c.str("DELTASYNC_JWT_ISSUER", o.JWTIssuer)
	fs.StringVar(&o.JWTIssuer, "jwt-issuer", o.JWTIssuer, "required iss claim of tokens, if set (env DELTASYNC_JWT_ISSUER)")
	o.JWTAudience = c.str("DELTASYNC_JWT_AUDIENCE", o.JWTAudience)
	fs.StringVar(&o.JWTAudience, "jwt-audience", o.JWTAudience, "required aud claim of tokens, if set (env DELTASYNC_JWT_AUDIENCE)")
	o.JWTMaxLifetime = c.duration("DELTASYNC_JWT_MAX_LIFETIME", o.JWTMaxLifetime)
	fs.DurationVar(&o.JWTMaxLifetime, "jwt-max-lifetime", o.JWTMaxLifetime,
		"longest token lifetime accepted: exp - iat, or exp - now without iat (env DELTASYNC_JWT_MAX_LIFETIME)")
}

// registerLimitFlags registers the size limits of patches, records and
// uploaded data sets.
func (c *serverConfig) registerLimitFlags(fs *flag.FlagSet) {
	o := c.o
	o.MaxPatchBytes = c.bytes("DELTASYNC_MAX_PATCH_BYTES", o.MaxPatchBytes)
	fs.Var((*bytesize.Flag)(&o.MaxPatchBytes), "max-patch-bytes",
		"largest patch of several edits after decoding, e.g. 8MiB; clients split to fit, and one edit may always be as large as --max-record-bytes needs (env DELTASYNC_MAX_PATCH_BYTES)")
	o.MaxPatchOps = envParse(c, "DELTASYNC_MAX_PATCH_OPS", o.MaxPatchOps, strconv.Atoi)
	fs.IntVar(&o.MaxPatchOps, "max-patch-ops", o.MaxPatchOps,
		"most edits per patch; clients split to fit (env DELTASYNC_MAX_PATCH_OPS)")
	o.MaxRecordBytes = c.bytes("DELTASYNC_MAX_RECORD_BYTES", o.MaxRecordBytes)
	fs.Var((*bytesize.Flag)(&o.MaxRecordBytes), "max-record-bytes",
		"largest value an edit may write, at most 16MiB; clients refuse bigger ones at edit time (env DELTASYNC_MAX_RECORD_BYTES)")
	o.MaxDatasetBytes = c.bytes("DELTASYNC_MAX_DATASET_BYTES", o.MaxDatasetBytes)
	fs.Var((*bytesize.Flag)(&o.MaxDatasetBytes), "max-dataset-bytes",
		"largest uploaded data set after decoding, e.g. 1GiB (env DELTASYNC_MAX_DATASET_BYTES)")
}

// registerBlobFlags registers the blob limits.
func (c *serverConfig) registerBlobFlags(fs *flag.FlagSet) {
	o := c.o
	o.MaxBlobBytes = c.bytes("DELTASYNC_MAX_BLOB_BYTES", o.MaxBlobBytes)
	fs.Var((*bytesize.Flag)(&o.MaxBlobBytes), "max-blob-bytes",
		"largest blob (photo, file) a user may upload, e.g. 256MiB; an org may set a lower one (env DELTASYNC_MAX_BLOB_BYTES)")
	o.EagerBlobBytes = c.bytes("DELTASYNC_EAGER_BLOB_BYTES", o.EagerBlobBytes)
	fs.Var((*bytesize.Flag)(&o.EagerBlobBytes), "eager-blob-bytes",
		"clients download referenced blobs up to this size at sync, bigger ones on demand, unless the org sets its own (env DELTASYNC_EAGER_BLOB_BYTES)")
}

// registerGuardFlags registers the flags of the denial-of-service guards.
func (c *serverConfig) registerGuardFlags(fs *flag.FlagSet) {
	o := c.o
	o.HeaderTimeout = c.duration("DELTASYNC_HEADER_TIMEOUT", o.HeaderTimeout)
	fs.DurationVar(&o.HeaderTimeout, "header-timeout", o.HeaderTimeout,
		"longest wait for a request's headers; a connection silent that long is closed (env DELTASYNC_HEADER_TIMEOUT)")
	o.MaxConns = envParse(c, "DELTASYNC_MAX_CONNS", o.MaxConns, strconv.Atoi)
	fs.IntVar(&o.MaxConns, "max-conns", o.MaxConns,
		"most client connections open at once, over it 503; 0 derives it from the file-descriptor limit (env DELTASYNC_MAX_CONNS)")
	o.MaxConnsPerIP = envParse(c, "DELTASYNC_MAX_CONNS_PER_IP", o.MaxConnsPerIP, strconv.Atoi)
	fs.IntVar(&o.MaxConnsPerIP, "max-conns-per-ip", o.MaxConnsPerIP,
		"most open connections from one client address, over it 429; 0 for no limit (env DELTASYNC_MAX_CONNS_PER_IP)")
	o.StoreTimeout = c.duration("DELTASYNC_STORE_TIMEOUT", o.StoreTimeout)
	fs.DurationVar(&o.StoreTimeout, "store-timeout", o.StoreTimeout,
		"longest wait for the store in one call (plus the transfer time at --store-min-rate); past it 503 + Retry-After; 0 for none (env DELTASYNC_STORE_TIMEOUT)")
	o.StoreMinRate = c.bytes("DELTASYNC_STORE_MIN_RATE", o.StoreMinRate)
	fs.Var((*bytesize.Flag)(&o.StoreMinRate), "store-min-rate",
		"slowest store transfer rate per second allowed on top of --store-timeout, e.g. 1MiB (env DELTASYNC_STORE_MIN_RATE)")
}

// registerBackendFlags registers the flags of the backend features:
// admin fan-out, the feed worker and consumers.
func (c *serverConfig) registerBackendFlags(fs *flag.FlagSet) {
	o := c.o
	b := &o.Backend
	b.MaxFanoutUsers = envParse(c, "DELTASYNC_MAX_FANOUT_USERS", b.MaxFanoutUsers, strconv.Atoi)
	fs.IntVar(&b.MaxFanoutUsers, "max-fanout-users", b.MaxFanoutUsers,
		"most users one fan-out admin patch may name (env DELTASYNC_MAX_FANOUT_USERS)")
	b.FanoutConcurrency = envParse(c, "DELTASYNC_FANOUT_CONCURRENCY", b.FanoutConcurrency, strconv.Atoi)
	fs.IntVar(&b.FanoutConcurrency, "fanout-concurrency", b.FanoutConcurrency,
		"users of one fan-out replayed at once (env DELTASYNC_FANOUT_CONCURRENCY)")
	b.Worker = c.boolean("DELTASYNC_FEED_WORKER", b.Worker)
	fs.BoolVar(&b.Worker, "feed-worker", b.Worker,
		"compete for the deployment's feed-worker lease: webhook delivery and consumer lag metrics (env DELTASYNC_FEED_WORKER)")
	b.WorkerInterval = c.duration("DELTASYNC_FEED_WORKER_INTERVAL", b.WorkerInterval)
	fs.DurationVar(&b.WorkerInterval, "feed-worker-interval", b.WorkerInterval,
		"cadence of the feed worker; its lease lasts six of these (env DELTASYNC_FEED_WORKER_INTERVAL)")
	b.ConsumerStale = c.duration("DELTASYNC_CONSUMER_STALE", b.ConsumerStale)
	fs.DurationVar(&b.ConsumerStale, "consumer-stale", b.ConsumerStale,
		"report a feed consumer that has not acknowledged for this long while entries wait (env DELTASYNC_CONSUMER_STALE)")
	c.registerHookFlags(fs)
}

// registerHookFlags registers the flags of webhook delivery.
func (c *serverConfig) registerHookFlags(fs *flag.FlagSet) {
	o := c.o
	b := &o.Backend
	b.HookTimeout = c.duration("DELTASYNC_HOOK_TIMEOUT", b.HookTimeout)
	fs.DurationVar(&b.HookTimeout, "hook-timeout", b.HookTimeout,
		"longest wait for one webhook delivery (env DELTASYNC_HOOK_TIMEOUT)")
	b.WebhookBackoffMin = c.duration("DELTASYNC_WEBHOOK_BACKOFF_MIN", b.WebhookBackoffMin)
	fs.DurationVar(&b.WebhookBackoffMin, "webhook-backoff-min", b.WebhookBackoffMin,
		"first wait after a failed webhook delivery; it doubles per failure (env DELTASYNC_WEBHOOK_BACKOFF_MIN)")
	b.WebhookBackoffMax = c.duration("DELTASYNC_WEBHOOK_BACKOFF_MAX", b.WebhookBackoffMax)
	fs.DurationVar(&b.WebhookBackoffMax, "webhook-backoff-max", b.WebhookBackoffMax,
		"longest wait between webhook attempts (env DELTASYNC_WEBHOOK_BACKOFF_MAX)")
	b.HooksAllowPrivate = c.boolean("DELTASYNC_HOOKS_ALLOW_PRIVATE", b.HooksAllowPrivate)
	fs.BoolVar(&b.HooksAllowPrivate, "hooks-allow-private", b.HooksAllowPrivate,
		"let webhooks and validation URLs reach loopback, private and link-local addresses (env DELTASYNC_HOOKS_ALLOW_PRIVATE)")
}

// registerFleetFlags registers the flags of the change hub and watcher.
func (c *serverConfig) registerFleetFlags(fs *flag.FlagSet) {
	o := c.o
	o.Watch.Interval = c.duration("DELTASYNC_WATCH_INTERVAL", o.Watch.Interval)
	fs.DurationVar(&o.Watch.Interval, "watch-interval", o.Watch.Interval,
		"how often a replica lists the change feed for versions committed elsewhere: the delay of a cross-replica wake-up, one store listing each (env DELTASYNC_WATCH_INTERVAL)")
	o.Watch.Window = c.duration("DELTASYNC_WATCH_WINDOW", o.Watch.Window)
	fs.DurationVar(&o.Watch.Window, "watch-window", o.Watch.Window,
		"how far behind its last listing the watcher lists again: more than replicas' clocks differ plus a change-set write (env DELTASYNC_WATCH_WINDOW)")
	o.HubIdleGrace = c.duration("DELTASYNC_HUB_IDLE_GRACE", o.HubIdleGrace)
	fs.DurationVar(&o.HubIdleGrace, "hub-idle-grace", o.HubIdleGrace,
		"how long a replica keeps a user's head after their last long poll, so the next poll costs the store nothing (env DELTASYNC_HUB_IDLE_GRACE)")
}

// str reads a DELTASYNC_* variable; unset or empty gives def.
func (c *serverConfig) str(name, def string) string {
	if v := c.e.getenv(name); v != "" {
		return v
	}
	return def
}

// envParse reads a DELTASYNC_* variable with parse; an unset or empty
// variable gives def, a bad one def and an error that serve reports.
func envParse[T any](c *serverConfig, name string, def T, parse func(string) (T, error)) T {
	v := c.e.getenv(name)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		if c.err == nil {
			c.err = fmt.Errorf("server: environment variable %s=%q: %w", name, v, err)
		}
		return def
	}
	return x
}

func (c *serverConfig) boolean(name string, def bool) bool {
	return envParse(c, name, def, strconv.ParseBool)
}

func (c *serverConfig) bytes(name string, def int64) int64 {
	return envParse(c, name, def, bytesize.Parse)
}

func (c *serverConfig) duration(name string, def time.Duration) time.Duration {
	return envParse(c, name, def, time.ParseDuration)
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
// replaces the default (taken from the environment) instead of adding to it.
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
