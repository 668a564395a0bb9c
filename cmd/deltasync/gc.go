package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/snapshot/storeurl"
)

const gcSynopsis = `  deltasync gc [--store URL] (--keep-versions N | --keep-days D) [--grace 1h] [--dry-run] [--json]

Removes versions beyond retention (the head is always kept) and the packs no
retained version references. Two-phase with a grace period: objects younger
than --grace are never removed, so a concurrent build or sync never loses a
chunk it is about to reference. --dry-run reports what would be removed.
`

func runGC(ctx context.Context, e *env, args []string) error {
	o := gc.DefaultOptions()
	store := "file://./data"
	if v := e.getenv("DELTASYNC_STORE"); v != "" {
		store = v
	}
	var asJSON, perUser bool
	fs := newFlagSet(e, "gc", gcSynopsis)
	fs.StringVar(&store, "store", store, "store URL (env DELTASYNC_STORE)")
	fs.IntVar(&o.KeepVersions, "keep-versions", 0, "keep the newest N versions of every user")
	fs.IntVar(&o.KeepDays, "keep-days", 0, "keep the versions created within D days")
	fs.DurationVar(&o.Grace, "grace", time.Hour, "never remove objects younger than this")
	fs.BoolVar(&o.DryRun, "dry-run", false, "report what would be removed, remove nothing")
	fs.BoolVar(&perUser, "per-user", false, "report one line per user")
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if (o.KeepVersions > 0) == (o.KeepDays > 0) {
		return usagef("give exactly one of --keep-versions N and --keep-days D")
	}
	o.PerUser = perUser
	o.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := storeurl.Open(ctx, store)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
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
