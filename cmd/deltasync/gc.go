package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/deltasync/deltasync/gc"
)

const gcSynopsis = `  deltasync gc [--store URL] (--keep-versions N | --keep-days D) [--grace 1h] [--dry-run] [--json]

Removes versions beyond retention (the head is always kept) and the packs no
retained version references. Two-phase with a grace period: objects younger
than --grace are never removed, so a concurrent build or sync never loses a
chunk it is about to reference; the grace must be positive (the report shows
the one used). --dry-run reports what would be removed. On a directory store
gc also removes temporary files that killed writers left (older than an hour
or the grace, whichever is longer).
`

func runGC(ctx context.Context, e *env, args []string) error {
	o := gc.DefaultOptions()
	so := storeOptions{Store: "file://./data"}
	if v := e.getenv("DELTASYNC_STORE"); v != "" {
		so.Store = v
	}
	var asJSON, perUser bool
	fs := newFlagSet(e, "gc", gcSynopsis)
	fs.StringVar(&so.Store, "store", so.Store, "store URL (env DELTASYNC_STORE)")
	so.registerUnsafe(e, fs)
	fs.IntVar(&o.KeepVersions, "keep-versions", 0, "keep the newest N versions of every user")
	fs.IntVar(&o.KeepDays, "keep-days", 0, "keep the versions created within D days")
	fs.DurationVar(&o.Grace, "grace", gc.DefaultGrace, "never remove objects younger than this; must be positive")
	fs.BoolVar(&o.DryRun, "dry-run", false, "report what would be removed, remove nothing")
	fs.BoolVar(&perUser, "per-user", false, "report one line per user")
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (o.KeepVersions > 0) == (o.KeepDays > 0) {
		return usagef("give exactly one of --keep-versions N and --keep-days D")
	}
	if o.Grace <= 0 {
		// The library reads 0 as "the default"; on the command line a
		// typed 0s means "no grace", which would delete the packs a running
		// build or patch has written and not yet committed. Refused rather
		// than silently turned into an hour.
		return usagef("--grace %v: must be positive (default %v); objects younger than the grace may belong to a build or patch still running", o.Grace, gc.DefaultGrace)
	}
	o.PerUser = perUser
	o.Logger = warnLogger(e)
	so.existing = true
	s, err := openStore(ctx, e, so, o.Logger)
	if err != nil {
		return err
	}
	s = withDeadlines(s)
	rep, runErr := gc.Run(ctx, s, o)
	if rep != nil {
		if asJSON {
			b, _ := json.Marshal(rep)
			fmt.Fprintln(e.stdout, string(b))
		} else {
			fmt.Fprintln(e.stdout, rep.String())
		}
	}
	return runErr
}
