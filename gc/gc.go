package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// DefaultGrace is the grace period when Options.Grace is zero. It must be
// longer than any build, patch replay or sync takes from reading the head to
// its last write or read.
const DefaultGrace = time.Hour

// DefaultWorkers is the number of concurrent manifest reads and deletes
// within one user when Options.Workers is zero.
const DefaultWorkers = 4

// Options configure Run. They map one to one onto the flags of
// `deltasync gc`:
//
//	--keep-versions N   KeepVersions = N
//	--keep-days D       KeepDays = D
//	--grace 1h          Grace (a time.Duration flag; the command refuses
//	                    0, which here means DefaultGrace)
//	--dry-run           DryRun = true
//	--json              (output only: encode the *Report with encoding/json)
//
// Exactly one of KeepVersions and KeepDays must be positive.
type Options struct {
	// KeepVersions keeps the newest N versions of every user.
	KeepVersions int
	// KeepDays keeps the versions whose manifest was created (CreatedUnix)
	// within the last D days, measured from Now.
	KeepDays int
	// Grace protects objects younger than this (by ObjectInfo.ModTime): an
	// unreferenced pack is deleted only once it is older, and
	// a version beyond retention only once the version that superseded it
	// is older. Zero means DefaultGrace; negative is invalid.
	Grace time.Duration
	// DryRun deletes nothing; the Report counts what would be deleted.
	DryRun bool
	// Workers bounds concurrent manifest reads and deletes within one user
	// (DefaultWorkers if zero).
	Workers int
	// PerUser adds a line per user to Report.PerUser (users that fail are
	// listed whatever this says).
	PerUser bool
	// Now is the clock (time.Now if nil); tests move it to age objects.
	Now func() time.Time
	// Logger receives a line per user with something to do (Info), per
	// deleted object (Debug) and per failure (Warn). Nil discards.
	Logger *slog.Logger
	// ConsumerStale is how long a consumer holding versions back may go
	// without acknowledging before the report calls it stale (and the
	// log warns). Its versions are kept all the same. Zero means
	// DefaultConsumerStale.
	ConsumerStale time.Duration
}

// DefaultConsumerStale is Options.ConsumerStale when zero.
const DefaultConsumerStale = 24 * time.Hour

// DefaultOptions returns the grace period, worker count and clock Run uses
// when they are left zero; the caller still picks a retention rule.
func DefaultOptions() Options {
	return Options{Grace: DefaultGrace, Workers: DefaultWorkers, Now: time.Now}
}

// Validate checks the retention rule and the grace period. Errors match
// snapshot.ErrInvalid.
func (o *Options) Validate() error {
	switch {
	case o.KeepVersions < 0 || o.KeepDays < 0:
		return fmt.Errorf("gc: --keep-versions and --keep-days must not be negative: %w", snapshot.ErrInvalid)
	case o.KeepVersions > 0 && o.KeepDays > 0:
		return fmt.Errorf("gc: give either --keep-versions or --keep-days, not both: %w", snapshot.ErrInvalid)
	case o.KeepVersions == 0 && o.KeepDays == 0:
		return fmt.Errorf("gc: a retention rule is required (--keep-versions N or --keep-days D): %w", snapshot.ErrInvalid)
	case o.Grace < 0:
		return fmt.Errorf("gc: grace period %v is negative: %w", o.Grace, snapshot.ErrInvalid)
	case o.Workers < 0:
		return fmt.Errorf("gc: %d workers: %w", o.Workers, snapshot.ErrInvalid)
	}
	return nil
}

func (o *Options) fill() error {
	if err := o.Validate(); err != nil {
		return err
	}
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ConsumerStale <= 0 {
		o.ConsumerStale = DefaultConsumerStale
	}
	return nil
}

// Counts are the totals of one user or of a whole run. In a dry run,
// "deleted" means "would be deleted".
type Counts struct {
	VersionsKept    int `json:"versions_kept"`
	VersionsDeleted int `json:"versions_deleted"`
	// VersionsDeferred are beyond retention but were superseded less than
	// the grace period ago (a sync or build may still be reading them).
	VersionsDeferred  int `json:"versions_deferred"`
	ChangeSetsDeleted int `json:"change_sets_deleted"`
	PacksKept         int `json:"packs_kept"`
	PacksDeleted      int `json:"packs_deleted"`
	// PacksDeferred are referenced by no version but younger than the grace
	// period (an in-progress build may be about to claim them).
	PacksDeferred int   `json:"packs_deferred"`
	PackBytesKept int64 `json:"pack_bytes_kept"`
	// BytesFreed sums the sizes of the deleted manifests, change sets and
	// packs, as listed.
	BytesFreed int64 `json:"bytes_freed"`
	// VersionsHeld are beyond retention but kept because a registered
	// consumer of the org has not acknowledged their feed entries.
	VersionsHeld int `json:"versions_held"`
}

func (c *Counts) add(o Counts) {
	c.VersionsKept += o.VersionsKept
	c.VersionsDeleted += o.VersionsDeleted
	c.VersionsDeferred += o.VersionsDeferred
	c.ChangeSetsDeleted += o.ChangeSetsDeleted
	c.PacksKept += o.PacksKept
	c.PacksDeleted += o.PacksDeleted
	c.PacksDeferred += o.PacksDeferred
	c.PackBytesKept += o.PackBytesKept
	c.BytesFreed += o.BytesFreed
	c.VersionsHeld += o.VersionsHeld
}

func (c Counts) busy() bool {
	return c.VersionsDeleted+c.VersionsDeferred+c.ChangeSetsDeleted+c.PacksDeleted+c.PacksDeferred+c.VersionsHeld > 0
}

// Report is what a run did (or, with DryRun, would do). Its JSON form is the
// output of `deltasync gc --json`.
type Report struct {
	DryRun bool      `json:"dry_run"`
	Now    time.Time `json:"now"` // the clock reading every age was measured against
	// Grace is the grace period in effect, in seconds.
	GraceSeconds int64 `json:"grace_seconds"`
	UsersScanned int   `json:"users_scanned"`
	UsersFailed  int   `json:"users_failed"`
	// TempFilesDeleted counts the temporary files that killed writers left
	// in a store that keeps its own (snapshot.TempSweeper: the directory
	// store), older than the grace period or an hour, whichever is longer.
	// A dry run removes none and counts none.
	TempFilesDeleted int `json:"temp_files_deleted"`
	// Blobs (blobs.go): deleted (with their grants) and kept.
	BlobsDeleted   int   `json:"blobs_deleted"`
	BlobsKept      int   `json:"blobs_kept"`
	BlobBytesFreed int64 `json:"blob_bytes_freed"`
	// UploadsExpired counts blob uploads abandoned for AbandonedUpload.
	UploadsExpired int `json:"uploads_expired"`
	Counts
	PerUser []UserReport `json:"per_user,omitempty"`
	// Consumers are the registered feed consumers that held versions
	// back (Counts.VersionsHeld), each with how many.
	Consumers []ConsumerReport `json:"consumers,omitempty"`
}

// ConsumerReport is a consumer that kept versions from deletion.
type ConsumerReport struct {
	Org          string `json:"org"`
	Name         string `json:"name"`
	Cursor       string `json:"cursor"`
	AckedUnix    int64  `json:"acked_unix"`
	VersionsHeld int    `json:"versions_held"`
	// Stale: it has not acknowledged for longer than
	// Options.ConsumerStale. Its versions are kept all the same: delete
	// the consumer (DELETE …/consumers/{name}) to let them go.
	Stale bool `json:"stale"`
}

// UserReport is one user's part of a Report.
type UserReport struct {
	Org  string `json:"org"`
	User string `json:"user"`
	// Head is the newest version seen, including versions claimed during
	// the run (0: none); OldestKept is the oldest version left (0: none).
	Head       uint64 `json:"head"`
	OldestKept uint64 `json:"oldest_kept"`
	Counts
	Error string `json:"error,omitempty"`
}

// String summarises the report in one line, for a terminal.
func (r *Report) String() string {
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	s := fmt.Sprintf("gc (grace %v): %d users scanned; %s %d versions, %d change sets, %d packs (%d bytes); kept %d versions, %d packs (%d bytes); deferred by grace: %d versions, %d packs",
		time.Duration(r.GraceSeconds)*time.Second, r.UsersScanned, verb, r.VersionsDeleted, r.ChangeSetsDeleted, r.PacksDeleted, r.BytesFreed,
		r.VersionsKept, r.PacksKept, r.PackBytesKept, r.VersionsDeferred, r.PacksDeferred)
	if r.TempFilesDeleted > 0 {
		s += fmt.Sprintf("; removed %d abandoned temp files", r.TempFilesDeleted)
	}
	if r.VersionsHeld > 0 {
		s += fmt.Sprintf("; kept %d versions for %d feed consumers", r.VersionsHeld, len(r.Consumers))
		for _, c := range r.Consumers {
			if c.Stale {
				s += fmt.Sprintf(" (%s/%s is STALE)", c.Org, c.Name)
			}
		}
	}
	if r.BlobsDeleted+r.BlobsKept+r.UploadsExpired > 0 {
		s += fmt.Sprintf("; blobs: %s %d (%d bytes), kept %d; %d abandoned uploads", verb, r.BlobsDeleted, r.BlobBytesFreed, r.BlobsKept, r.UploadsExpired)
	}
	if r.UsersFailed > 0 {
		s += fmt.Sprintf("; %d users FAILED", r.UsersFailed)
	}
	return s
}

// Run garbage-collects every user of the store: it deletes the versions
// beyond retention (oldest first, never the head), their change sets in the
// change feed, and the packs no remaining version references. See the
// package documentation for the rules.
//
// A failing user does not stop the others: Run then returns the report with
// an error joining every user's failure. Only a failed listing or a done ctx
// stops the run early.
func Run(ctx context.Context, store Store, opts Options) (*Report, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	r := &runner{s: store, opts: opts, now: opts.Now()}
	rep := &Report{DryRun: opts.DryRun, Now: r.now, GraceSeconds: int64(opts.Grace / time.Second)}
	if err := r.readConsumers(ctx); err != nil {
		return rep, err
	}
	defer r.reportConsumers(rep)
	var (
		cur  *userObjects
		errs []error
	)
	if err := sweepTemp(ctx, store, opts, rep); err != nil {
		errs = append(errs, err)
	}
	flush := func() error {
		if cur == nil {
			return nil
		}
		u := cur
		cur = nil
		ur, err := r.user(ctx, u)
		rep.UsersScanned++
		rep.add(ur.Counts)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			err = fmt.Errorf("gc %s/%s: %w", u.org, u.user, err)
			ur.Error = err.Error()
			rep.UsersFailed++
			errs = append(errs, err)
			opts.Logger.Warn("gc: user failed", "org", u.org, "user", u.user, "err", err)
		} else if ur.busy() {
			opts.Logger.Info("gc: user", "org", u.org, "user", u.user, "head", ur.Head, "oldest_kept", ur.OldestKept,
				"versions_deleted", ur.VersionsDeleted, "versions_deferred", ur.VersionsDeferred,
				"change_sets_deleted", ur.ChangeSetsDeleted, "packs_deleted", ur.PacksDeleted,
				"packs_deferred", ur.PacksDeferred, "bytes_freed", ur.BytesFreed, "dry_run", opts.DryRun)
		}
		if opts.PerUser || err != nil {
			rep.PerUser = append(rep.PerUser, ur)
		}
		return nil
	}
	// Listing the whole store is the only way to find the users. The keys
	// of one user share the prefix "<org>/<user>/", so in lexical order
	// they are contiguous: each user is collected whole and processed as
	// soon as the listing moves past it, so memory holds one user at a
	// time.
	blobs := newBlobObjects() // blobs.go
	err := store.List(ctx, "", func(oi snapshot.ObjectInfo) error {
		blobs.note(oi)
		org, user, rest, ok := splitUserKey(oi.Key)
		if !ok {
			return nil // the secret, org settings, anything not a user's
		}
		if cur != nil && (cur.org != org || cur.user != user) {
			if err := flush(); err != nil {
				return err
			}
		}
		if cur == nil {
			cur = newUserObjects(org, user)
		}
		cur.add(rest, oi)
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return rep, fmt.Errorf("gc: list store: %w", err)
	}
	if err := r.collectBlobs(ctx, blobs, rep); err != nil {
		errs = append(errs, fmt.Errorf("gc blobs: %w", err))
	}
	return rep, errors.Join(errs...)
}

// sweepTemp removes the temp files killed writers abandoned, in stores that
// keep their own. Never younger than DefaultGrace: a temp file is no object
// any version could reference, so a short grace gives no reason to cut a
// slow writer's file short.
func sweepTemp(ctx context.Context, store Store, opts Options, rep *Report) error {
	sw, ok := snapshot.AsTempSweeper(store)
	if !ok || opts.DryRun {
		return nil
	}
	n, err := sw.SweepTemp(ctx, max(opts.Grace, DefaultGrace))
	rep.TempFilesDeleted = n
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	if n > 0 {
		opts.Logger.Info("gc: removed abandoned temp files", "count", n)
	}
	return nil
}

// splitUserKey splits "<org>/<user>/<rest>" where org and user are valid
// names. Reserved names start with "_" and never pass, so "_deltasync/…"
// and "<org>/_settings.json" are not user keys.
func splitUserKey(key string) (org, user, rest string, ok bool) {
	org, after, ok1 := strings.Cut(key, "/")
	user, rest, ok2 := strings.Cut(after, "/")
	if !ok1 || !ok2 || rest == "" {
		return "", "", "", false
	}
	if snapshot.ValidateName("org", org) != nil || snapshot.ValidateName("user", user) != nil {
		return "", "", "", false
	}
	return org, user, rest, true
}
