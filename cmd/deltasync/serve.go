package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot/storeurl"
)

const serveSynopsis = `  deltasync serve [--addr 127.0.0.1:8080] [--store URL] (--jwt-secret S | --jwt-public-key FILE | --dev)

Serves the sync API. The store defaults to file://./data; an S3 store is
s3://bucket/prefix?endpoint=host:port&secure=true with credentials from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Every flag also reads a DELTASYNC_*
environment variable (named beside it); a flag on the command line wins.
SIGTERM or SIGINT stops accepting connections and lets in-flight requests
finish (up to --shutdown-timeout).
`

// serveOptions are the flags of `deltasync serve` beyond server.Options.
type serveOptions struct {
	Store           string
	ShutdownTimeout time.Duration
	LogJSON         bool
	LogLevel        slog.Level
}

// serveFlags registers every flag of `deltasync serve`; tests parse the
// documented command lines (docker-compose.yml) against it.
func serveFlags(e *env) (*serveOptions, *server.Options, *flag.FlagSet) {
	so := &serveOptions{Store: "file://./data", ShutdownTimeout: 30 * time.Second}
	if v := e.getenv("DELTASYNC_STORE"); v != "" {
		so.Store = v
	}
	opts := server.DefaultOptions()
	fs := newFlagSet(e, "serve", serveSynopsis)
	fs.StringVar(&so.Store, "store", so.Store, "store URL (env DELTASYNC_STORE)")
	fs.DurationVar(&so.ShutdownTimeout, "shutdown-timeout", so.ShutdownTimeout, "how long in-flight requests may take to finish on SIGTERM")
	fs.BoolVar(&so.LogJSON, "log-json", !e.stderrTerminal, "structured JSON logs (default when stderr is not a terminal)")
	if v := e.getenv("DELTASYNC_LOG_LEVEL"); v != "" {
		_ = so.LogLevel.UnmarshalText([]byte(v)) // a bad value is caught when the flag is parsed
	}
	fs.TextVar(&so.LogLevel, "log-level", &so.LogLevel, "debug (adds an access log line per successful request), info, warn or error (env DELTASYNC_LOG_LEVEL)")
	opts.RegisterFlags(fs)
	return so, &opts, fs
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
	store, err := storeurl.Open(ctx, so.Store)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
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
