package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"time"

	"github.com/deltasync/deltasync/redisnotify"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

const serveSynopsis = `  deltasync serve [--addr 127.0.0.1:8080] [--store URL] (--jwt-secret S | --jwt-public-key FILE | --dev)

Serves the sync API. The store defaults to file://./data; an S3 store is
s3://bucket/prefix?endpoint=host:port&secure=true with credentials from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Every flag also reads a DELTASYNC_*
environment variable (named beside it); a flag on the command line wins.
The configuration is checked before the store is touched; then the store is
probed once: it must enforce create-only and compare-and-swap writes.
SIGTERM or SIGINT stops accepting connections and lets in-flight requests
finish (up to --shutdown-timeout).
`

// serveOptions are the flags of `deltasync serve` beyond server.Options.
type serveOptions struct {
	storeOptions
	ShutdownTimeout time.Duration
	LogJSON         bool
	LogLevel        slog.Level
	// NotifyRedis and NotifyChannel configure the optional Redis pub/sub
	// plug-in of the change hub (redisnotify).
	NotifyRedis, NotifyChannel string
	// serverEnvErr is a DELTASYNC_* variable of server.Options that did not
	// parse (registerServerFlags), reported with the configuration check.
	serverEnvErr error
}

// serveFlags registers every flag of `deltasync serve`; tests parse the
// documented command lines (docker-compose.yml) against it.
func serveFlags(e *env) (*serveOptions, *server.Options, *flag.FlagSet) {
	so := &serveOptions{storeOptions: storeOptions{Store: "file://./data"}, ShutdownTimeout: 30 * time.Second}
	if v := e.getenv("DELTASYNC_STORE"); v != "" {
		so.Store = v
	}
	opts := server.DefaultOptions()
	opts.Backend.Worker = true // one holds the lease: webhooks and consumer lag
	fs := newFlagSet(e, "serve", serveSynopsis)
	fs.StringVar(&so.Store, "store", so.Store, "store URL (env DELTASYNC_STORE)")
	so.registerUnsafe(e, fs)
	fs.DurationVar(&so.ShutdownTimeout, "shutdown-timeout", so.ShutdownTimeout, "how long in-flight requests may take to finish on SIGTERM")
	fs.BoolVar(&so.LogJSON, "log-json", !e.stderrTerminal, "structured JSON logs (default when stderr is not a terminal)")
	if v := e.getenv("DELTASYNC_LOG_LEVEL"); v != "" {
		_ = so.LogLevel.UnmarshalText([]byte(v)) // a bad value is caught when the flag is parsed
	}
	fs.TextVar(&so.LogLevel, "log-level", &so.LogLevel, "debug (adds an access log line per successful request), info, warn or error (env DELTASYNC_LOG_LEVEL)")
	so.NotifyRedis, so.NotifyChannel = e.getenv("DELTASYNC_NOTIFY_REDIS"), e.getenv("DELTASYNC_NOTIFY_CHANNEL")
	fs.StringVar(&so.NotifyRedis, "notify-redis", so.NotifyRedis,
		"optional: redis://host:port[/db] whose pub/sub carries commits between replicas in milliseconds; the feed watcher stays on (env DELTASYNC_NOTIFY_REDIS)")
	fs.StringVar(&so.NotifyChannel, "notify-channel", so.NotifyChannel,
		"pub/sub channel of --notify-redis, the same for every replica (default "+redisnotify.DefaultChannel+"; env DELTASYNC_NOTIFY_CHANNEL)")
	so.serverEnvErr = registerServerFlags(e, fs, &opts)
	return so, &opts, fs
}

// notifier opens the Redis plug-in if configured. A bad URL fails the
// start; a server that does not answer yet is only logged: the feed
// watcher carries the news until the subscription succeeds.
func (so *serveOptions) notifier(ctx context.Context, log *slog.Logger) (*redisnotify.Notifier, error) {
	if so.NotifyRedis == "" {
		return nil, nil
	}
	n, err := redisnotify.New(redisnotify.Options{URL: so.NotifyRedis, Channel: so.NotifyChannel})
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := n.Ping(pctx); err != nil {
		log.Warn("notifier: Redis does not answer yet; long polls are woken by the feed watcher until it does", "err", err)
	} else {
		log.Info("notifier: commits travel between replicas through Redis pub/sub")
	}
	return n, nil
}

func runServe(ctx context.Context, e *env, args []string) error {
	so, opts, fs := serveFlags(e)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ho := &slog.HandlerOptions{Level: so.LogLevel}
	var h slog.Handler = slog.NewTextHandler(e.stderr, ho)
	if so.LogJSON {
		h = slog.NewJSONHandler(e.stderr, ho)
	}
	log := slog.New(h)
	opts.Logger = log
	// Refuse a bad configuration before the store is opened or probed: a
	// server that will not start must leave no trace in the store.
	if err := checkServeConfig(*opts, so.serverEnvErr); err != nil {
		return err
	}
	n, err := so.notifier(ctx, log)
	if err != nil {
		return err
	}
	if n != nil {
		defer n.Close()
		opts.Notifier = n
	}
	store, err := openStore(ctx, e, so.storeOptions, log)
	if err != nil {
		return err
	}
	opts.Store = store
	if len(opts.ChunkSecret) == 0 {
		log.Info("chunk IDs keyed with the secret kept in the store (shared by every replica and builder)", "store", so.Store)
	}
	s, err := server.New(*opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", so.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), so.ShutdownTimeout)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return <-errc
}

// SampleJWTSecret is the HS256 secret printed in deploy/deltasync.env. It is
// public, so a server using it accepts tokens anyone can mint; serve refuses
// it (a test keeps it equal to the file's).
const SampleJWTSecret = "change-me-to-32-or-more-random-bytes-0123456789"

// checkServeConfig validates the options as server.New will, without a
// store: a placeholder stands in for it, and the copy's logger is silenced
// so that server.New's warnings are logged once. envErr is a bad
// environment value found when the flags were registered.
func checkServeConfig(opts server.Options, envErr error) error {
	if string(opts.JWTSecret) == SampleJWTSecret {
		return errors.New("the JWT secret is the published sample from deploy/deltasync.env (" + SampleJWTSecret +
			"): anyone could mint tokens with it; set DELTASYNC_JWT_SECRET to your backend's own secret (e.g. openssl rand -base64 48)")
	}
	if envErr != nil {
		return envErr
	}
	opts.Store = memstore.New()
	opts.Logger = slog.New(slog.DiscardHandler)
	return opts.Validate()
}
