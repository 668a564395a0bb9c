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
	e  *env
	fs *flag.FlagSet
	o  *server.Options
	// err records the first DELTASYNC_* variable that did not parse.
	err error
}

// registerServerFlags registers the flags of o on fs, with defaults taken
// from o and then the environment. It returns the error of the first
// DELTASYNC_* variable that did not parse, which serve reports before it
// touches the store.
func registerServerFlags(e *env, fs *flag.FlagSet, o *server.Options) error {
	c := &serverConfig{e: e, fs: fs, o: o}
	c.register()
	return c.err
}

// register registers the flags of server.Options. Each flag's default is
// the current value of the options, overridden by the flag's DELTASYNC_*
// variable (envName), so configuration works through flags and the
// environment alike (a flag given on the command line wins).
//
// The JWT secret is better passed as DELTASYNC_JWT_SECRET than as a flag: a
// command line is visible to every user of the machine.
func (c *serverConfig) register() {
	o := c.o
	c.stringVar(&o.Addr, "addr", "listen address")

	c.registerAuthFlags()
	c.float64Var(&o.RateLimit, "rate-limit",
		"requests per second allowed per user on this replica, 0 for no limit; over it: 429")
	c.intVar(&o.RateBurst, "rate-burst", "requests a user may make at once above the rate")
	c.durationVar(&o.HeadCacheTTL, "head-cache-ttl",
		"how long a replica trusts the head it last saw when answering polls; 0 asks the store every time")
	c.durationVar(&o.FeedSettle, "feed-settle",
		"how long change-feed entries are held back so no slower replica's entry is passed")

	c.boolVar(&o.Dev, "dev", "development mode: without a secret, accept tokens signed with the public DevJWTSecret")

	c.registerLimitFlags()
	c.registerBlobFlags()
	c.durationVar(&o.LongPollMax, "long-poll-max", "longest wait of a sync long poll")
	c.durationVar(&o.ReadyTimeout, "ready-timeout", "how long /readyz waits for the store")
	c.durationVar(&o.SettingsTTL, "settings-ttl", "how long org settings are cached per replica")
	c.durationVar(&o.ReadTimeout, "read-timeout", "longest time to read one request, body included")
	c.durationVar(&o.WriteTimeout, "write-timeout", "longest time to write one response")
	c.durationVar(&o.IdleTimeout, "idle-timeout", "how long an idle keep-alive connection stays open")
	c.registerGuardFlags()
	c.registerBackendFlags()
	c.registerFleetFlags()
}

// registerAuthFlags registers the flags of token verification and the
// chunk-ID secret.
func (c *serverConfig) registerAuthFlags() {
	o := c.o
	c.secretVar(&o.JWTSecret, "jwt-secret", "HS256 secret verifying bearer tokens, at least 32 bytes")
	if v := c.e.getenv(envName("jwt-public-key")); v != "" {
		o.JWTPublicKeyFiles = splitList(v)
	}
	c.fs.Var(&listFlag{list: &o.JWTPublicKeyFiles}, "jwt-public-key",
		"PEM file with an RS256/ES256 public key verifying bearer tokens; repeatable (env DELTASYNC_JWT_PUBLIC_KEY, comma-separated)")
	c.secretVar(&o.ChunkSecret, "chunk-secret",
		"chunk-ID secret; default: the one kept in the store, shared by every replica and builder")
	c.stringVar(&o.JWTIssuer, "jwt-issuer", "required iss claim of tokens, if set")
	c.stringVar(&o.JWTAudience, "jwt-audience", "required aud claim of tokens, if set")
	c.durationVar(&o.JWTMaxLifetime, "jwt-max-lifetime", "longest token lifetime accepted: exp - iat, or exp - now without iat")
}

// registerLimitFlags registers the size limits of patches, records and
// uploaded data sets.
func (c *serverConfig) registerLimitFlags() {
	o := c.o
	c.bytesVar(&o.MaxPatchBytes, "max-patch-bytes",
		"largest patch of several edits after decoding, e.g. 8MiB; clients split to fit, and one edit may always be as large as --max-record-bytes needs")
	c.intVar(&o.MaxPatchOps, "max-patch-ops", "most edits per patch; clients split to fit")
	c.bytesVar(&o.MaxRecordBytes, "max-record-bytes",
		"largest value an edit may write, at most 16MiB; clients refuse bigger ones at edit time")
	c.bytesVar(&o.MaxDatasetBytes, "max-dataset-bytes", "largest uploaded data set after decoding, e.g. 1GiB")
}

// registerBlobFlags registers the blob limits.
func (c *serverConfig) registerBlobFlags() {
	o := c.o
	c.bytesVar(&o.MaxBlobBytes, "max-blob-bytes",
		"largest blob (photo, file) a user may upload, e.g. 256MiB; an org may set a lower one")
	c.bytesVar(&o.EagerBlobBytes, "eager-blob-bytes",
		"clients download referenced blobs up to this size at sync, bigger ones on demand, unless the org sets its own")
}

// registerGuardFlags registers the flags of the denial-of-service guards.
func (c *serverConfig) registerGuardFlags() {
	o := c.o
	c.durationVar(&o.HeaderTimeout, "header-timeout",
		"longest wait for a request's headers; a connection silent that long is closed")
	c.bytesVar(&o.MaxHeaderBytes, "max-header-bytes",
		"largest request line and headers, bearer token included, over it 431; each open connection keeps a read buffer this size")
	c.intVar(&o.MaxConns, "max-conns",
		"most client connections open at once, over it 503; 0 derives it from the file-descriptor limit")
	c.intVar(&o.MaxConnsPerIP, "max-conns-per-ip", "most open connections from one client address, over it 429; 0 for no limit")
	c.bytesVar(&o.MaxDecodeMemory, "max-decode-memory",
		"memory for decoding zstd-compressed uploads at once (each takes 1, 8 or 64 MiB by its window); over it an upload waits, then 503")
	c.durationVar(&o.StoreTimeout, "store-timeout",
		"longest wait for the store in one call (plus the transfer time at --store-min-rate); past it 503 + Retry-After; 0 for none")
	c.bytesVar(&o.StoreMinRate, "store-min-rate",
		"slowest store transfer rate per second allowed on top of --store-timeout, e.g. 1MiB")
}

// registerBackendFlags registers the flags of the backend features:
// admin fan-out, the feed worker and consumers.
func (c *serverConfig) registerBackendFlags() {
	b := &c.o.Backend
	c.intVar(&b.MaxFanoutUsers, "max-fanout-users", "most users one fan-out admin patch may name")
	c.intVar(&b.FanoutConcurrency, "fanout-concurrency", "users of one fan-out replayed at once")
	c.boolVar(&b.Worker, "feed-worker",
		"compete for the deployment's feed-worker lease: webhook delivery and consumer lag metrics")
	c.durationVar(&b.WorkerInterval, "feed-worker-interval", "cadence of the feed worker; its lease lasts six of these")
	c.durationVar(&b.ConsumerStale, "consumer-stale",
		"report a feed consumer that has not acknowledged for this long while entries wait")
	c.registerHookFlags()
}

// registerHookFlags registers the flags of webhook delivery.
func (c *serverConfig) registerHookFlags() {
	b := &c.o.Backend
	c.durationVar(&b.HookTimeout, "hook-timeout", "longest wait for one webhook delivery")
	c.durationVar(&b.WebhookBackoffMin, "webhook-backoff-min",
		"first wait after a failed webhook delivery; it doubles per failure")
	c.durationVar(&b.WebhookBackoffMax, "webhook-backoff-max", "longest wait between webhook attempts")
	c.boolVar(&b.HooksAllowPrivate, "hooks-allow-private",
		"let webhooks and validation URLs reach loopback, private and link-local addresses")
}

// registerFleetFlags registers the flags of the change hub and watcher.
func (c *serverConfig) registerFleetFlags() {
	o := c.o
	c.durationVar(&o.Watch.Interval, "watch-interval",
		"how often a replica lists the change feed for versions committed elsewhere: the delay of a cross-replica wake-up, one store listing each")
	c.durationVar(&o.Watch.Window, "watch-window",
		"how far behind its last listing the watcher lists again: more than replicas' clocks differ plus a change-set write")
	c.durationVar(&o.HubIdleGrace, "hub-idle-grace",
		"how long a replica keeps a user's head after their last long poll, so the next poll costs the store nothing")
}

// envName is the DELTASYNC_* variable of a flag: its name in capitals,
// with _ for -.
func envName(flagName string) string {
	return "DELTASYNC_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// withEnv adds the name of the flag's variable to its usage.
func withEnv(usage, flagName string) string {
	return usage + " (env " + envName(flagName) + ")"
}

// fromEnv sets *p from the flag's DELTASYNC_* variable, if set and not
// empty; a value that does not parse leaves *p and is recorded in c.err.
func fromEnv[T any](c *serverConfig, p *T, flagName string, parse func(string) (T, error)) {
	name := envName(flagName)
	v := c.e.getenv(name)
	if v == "" {
		return
	}
	x, err := parse(v)
	if err != nil {
		if c.err == nil {
			c.err = fmt.Errorf("server: environment variable %s=%q: %w", name, v, err)
		}
		return
	}
	*p = x
}

func (c *serverConfig) stringVar(p *string, name, usage string) {
	fromEnv(c, p, name, func(v string) (string, error) { return v, nil })
	c.fs.StringVar(p, name, *p, withEnv(usage, name))
}

func (c *serverConfig) boolVar(p *bool, name, usage string) {
	fromEnv(c, p, name, strconv.ParseBool)
	c.fs.BoolVar(p, name, *p, withEnv(usage, name))
}

func (c *serverConfig) intVar(p *int, name, usage string) {
	fromEnv(c, p, name, strconv.Atoi)
	c.fs.IntVar(p, name, *p, withEnv(usage, name))
}

func (c *serverConfig) float64Var(p *float64, name, usage string) {
	fromEnv(c, p, name, func(v string) (float64, error) { return strconv.ParseFloat(v, 64) })
	c.fs.Float64Var(p, name, *p, withEnv(usage, name))
}

func (c *serverConfig) durationVar(p *time.Duration, name, usage string) {
	fromEnv(c, p, name, time.ParseDuration)
	c.fs.DurationVar(p, name, *p, withEnv(usage, name))
}

// bytesVar registers a byte size: 4096, 512k, 8MiB, 1G (bytesize.Parse).
func (c *serverConfig) bytesVar(p *int64, name, usage string) {
	fromEnv(c, p, name, bytesize.Parse)
	c.fs.Var((*bytesize.Flag)(p), name, withEnv(usage, name))
}

// secretVar registers a secret. The flag is registered before the variable
// is read, so that --help never shows it, not even as "(set)".
func (c *serverConfig) secretVar(p *[]byte, name, usage string) {
	c.fs.Var((*secretFlag)(p), name, withEnv(usage, name))
	fromEnv(c, p, name, func(v string) ([]byte, error) { return []byte(v), nil })
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
