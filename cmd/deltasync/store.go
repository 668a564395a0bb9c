package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storeurl"
)

// The S3 credentials follow the AWS and MinIO tools' convention.
const (
	envAccessKey = "AWS_ACCESS_KEY_ID"
	envSecretKey = "AWS_SECRET_ACCESS_KEY"
)

const envUnsafeNoConditionalWrites = "DELTASYNC_UNSAFE_NO_CONDITIONAL_WRITES"

// probeTimeout bounds the start-up probe: a store that does not answer
// (stopped, unreachable, a firewall dropping packets) fails the start instead
// of hanging it; minio-go alone would retry for many minutes. A variable so
// tests can shorten it.
var probeTimeout = 30 * time.Second

// storeOptions are the store flags of the commands that write to a store
// (serve, build, gc).
type storeOptions struct {
	Store string // URL
	// UnsafeNoConditionalWrites starts even if the store fails the
	// conditional-write probe (logged on every start).
	UnsafeNoConditionalWrites bool
	envErr                    error // a bad environment value, reported by openStore
	// existing: the command only cleans up what is there (gc), so a
	// directory store that does not exist is a mistyped --store, refused
	// rather than created empty and reported clean.
	existing bool
}

// registerUnsafe registers --unsafe-no-conditional-writes, defaulting to
// DELTASYNC_UNSAFE_NO_CONDITIONAL_WRITES.
func (o *storeOptions) registerUnsafe(e *env, fs *flag.FlagSet) {
	if v := e.getenv(envUnsafeNoConditionalWrites); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			o.envErr = usagef("%s=%q is not a boolean", envUnsafeNoConditionalWrites, v)
		}
		o.UnsafeNoConditionalWrites = b
	}
	fs.BoolVar(&o.UnsafeNoConditionalWrites, "unsafe-no-conditional-writes", o.UnsafeNoConditionalWrites,
		"start even if the store does not enforce create-only and compare-and-swap writes; concurrent writers can then lose versions (env "+envUnsafeNoConditionalWrites+")")
}

// openStore opens the store a command was given and probes it once: an
// s3:// store needs credentials (named when missing), and every store must
// enforce the conditional writes that version claims rely on, unless the
// operator said otherwise (then log says so, every start).
func openStore(ctx context.Context, e *env, o storeOptions, log *slog.Logger) (snapshot.Store, error) {
	if o.envErr != nil {
		return nil, o.envErr
	}
	loc, err := storeurl.Parse(o.Store)
	if err != nil {
		return nil, &usageError{msg: "--store: " + err.Error()}
	}
	if loc.Scheme == "file" && o.existing {
		if _, err := os.Stat(loc.Path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("store %s: directory %s does not exist (check --store; this command never creates a store)", storeurl.Redact(o.Store), loc.Path)
		}
	}
	var so storeurl.Options
	where := storeurl.Redact(o.Store)
	if loc.Scheme == "s3" {
		where = fmt.Sprintf("%s (S3 endpoint %s)", where, loc.S3.Endpoint)
		so.AccessKey, so.SecretKey = e.getenv(envAccessKey), e.getenv(envSecretKey)
		if missing := missingCredentials(so); missing != "" {
			return nil, fmt.Errorf("store %s: no S3 credentials: set %s", where, missing)
		}
	}
	s, err := storeurl.Open(ctx, o.Store, so)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	if e.wrapStore != nil {
		s = e.wrapStore(s)
	}
	if err := probeStore(ctx, s, where, o.UnsafeNoConditionalWrites, log); err != nil {
		return nil, err
	}
	return s, nil
}

func missingCredentials(o storeurl.Options) string {
	var missing []string
	if o.AccessKey == "" {
		missing = append(missing, envAccessKey)
	}
	if o.SecretKey == "" {
		missing = append(missing, envSecretKey)
	}
	return strings.Join(missing, " and ")
}

// probeStore runs the conditional-write probe. Without the unsafe flag any
// failure refuses the start: a store that cannot be written now (wrong
// credentials, no bucket) would fail the first request anyway, and one that
// ignores the conditions would lose versions without a word.
func probeStore(ctx context.Context, s snapshot.Store, where string, unsafe bool, log *slog.Logger) error {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	err := snapshot.ProbeConditionalWrites(pctx, s)
	if err != nil && ctx.Err() == nil && errors.Is(pctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("the store did not answer within %v: %w", probeTimeout, err)
	}
	if unsafe {
		if err != nil {
			log.Warn("UNSAFE: --unsafe-no-conditional-writes: starting although the store failed the conditional-write probe; "+
				"concurrent writers (replicas, builds, admin uploads) can overwrite each other's versions and lose data",
				"store", where, "err", err.Error())
		} else {
			log.Warn("UNSAFE: --unsafe-no-conditional-writes is set, but the store passed the conditional-write probe: the flag is not needed",
				"store", where)
		}
		return nil
	}
	if errors.Is(err, snapshot.ErrNoConditionalWrites) {
		return fmt.Errorf("store %s: %w; refusing to start: two writers claiming one version would overwrite each other. "+
			"Use a store that enforces If-None-Match: * and If-Match (AWS S3, MinIO, versitygw, a local directory), "+
			"or, if exactly one writer ever runs, --unsafe-no-conditional-writes", where, err)
	}
	if err != nil {
		return fmt.Errorf("store %s: start-up probe: %w", where, err)
	}
	return nil
}

// warnLogger is the logger of the commands without log flags (build, gc):
// warnings and errors as text on stderr.
func warnLogger(e *env) *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
