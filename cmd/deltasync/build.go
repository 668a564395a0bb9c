package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/deltasync/deltasync/batch"
	"github.com/deltasync/deltasync/internal/bytesize"
)

const buildSynopsis = `  deltasync build [--store URL] --org O --user U --input FILE.ndjson [--json]
  deltasync build [--store URL] --input-dir DIR [--jobs N] [--shard i/n] [--json]

Builds the next version of a user's data set from an NDJSON export (one
{"key":…,"value":…} per line, any order). Only chunks the store lacks are
uploaded; an unchanged data set creates no version and writes nothing.

With --input-dir, every DIR/<org>/<user>.ndjson (or .ndjson.zst) is built,
--jobs users at a time. A bad file fails only its user; the exit code is 1
if any user failed. Re-running after a crash finishes the rest without
duplicate versions. --shard i/n builds only the users that hash to shard i
of n, so n jobs can split the work.

With --json, the result is one JSON object per user on stdout.
Store URLs: file://./data (default), /abs/dir, s3://bucket/prefix?endpoint=host:port&secure=false
(credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). The store is
probed first: it must enforce create-only and compare-and-swap writes.
`

// buildOptions are the flags of `deltasync build`.
type buildOptions struct {
	storeOptions
	Org      string
	User     string
	Input    string
	InputDir string
	Jobs     int
	Shard    string
	TempDir  string
	JSON     bool
}

func runBuild(ctx context.Context, e *env, args []string) error {
	var o buildOptions
	fs := newFlagSet(e, "build", buildSynopsis)
	fs.StringVar(&o.Store, "store", "file://./data", "store URL")
	fs.StringVar(&o.Org, "org", "", "org of the data set (with --input)")
	fs.StringVar(&o.User, "user", "", "user of the data set (with --input)")
	fs.StringVar(&o.Input, "input", "", "NDJSON file to build, or - for stdin")
	fs.StringVar(&o.InputDir, "input-dir", "", "directory of <org>/<user>.ndjson[.zst] files to build")
	fs.IntVar(&o.Jobs, "jobs", 0, "users built at once with --input-dir (default 2 per CPU)")
	fs.StringVar(&o.Shard, "shard", "", "with --input-dir, build only the users of shard `i/n` (0 <= i < n)")
	fs.StringVar(&o.TempDir, "temp-dir", "", "directory for sort runs of inputs too big to sort in memory (default the system's)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object per user instead of a summary")
	o.registerUnsafe(e, fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case o.InputDir != "" && (o.Input != "" || o.Org != "" || o.User != ""):
		return usagef("--input-dir builds every user in the directory; it does not go with --input, --org or --user")
	case o.InputDir != "":
		return buildDir(ctx, e, o)
	case o.Input == "" || o.Org == "" || o.User == "":
		return usagef("need --org, --user and --input (or --input-dir)")
	case o.Jobs != 0 || o.Shard != "":
		return usagef("--jobs and --shard go with --input-dir")
	}
	return buildOne(ctx, e, o)
}

func buildOne(ctx context.Context, e *env, o buildOptions) error {
	// Open the input before the store, so a mistyped file name creates
	// nothing.
	var in io.Reader = e.stdin
	if o.Input != "-" {
		f, err := os.Open(o.Input)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	store, err := openStore(ctx, e, o.storeOptions, warnLogger(e))
	if err != nil {
		return err
	}
	store = withDeadlines(store)
	res, err := batch.BuildUser(ctx, store, batch.UserOptions{Org: o.Org, User: o.User, TempDir: o.TempDir}, in)
	if o.JSON {
		if jerr := json.NewEncoder(e.stdout).Encode(res); jerr != nil && err == nil {
			err = jerr
		}
	} else if err == nil {
		printUser(e.stdout, res)
	}
	if err != nil && o.Input != "-" {
		return fmt.Errorf("%s: %w", o.Input, err)
	}
	return err
}

func printUser(w io.Writer, r *batch.UserResult) {
	if !r.Created {
		if r.Version == 0 {
			fmt.Fprintf(w, "%s/%s: empty data set, nothing to build\n", r.Org, r.User)
			return
		}
		fmt.Fprintf(w, "%s/%s: unchanged, still version %d (nothing written)\n", r.Org, r.User, r.Version)
		fmt.Fprintf(w, "  records  %s, %s in %s chunks\n", humanCount(r.Records), bytesize.Format(int64(r.StreamBytes)), humanCount(r.Chunks))
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s/%s: version %d created (parent %d)\n", r.Org, r.User, r.Version, r.Parent)
	if r.Parent == 0 {
		fmt.Fprintf(tw, "  records\t%s\n", humanCount(r.Records))
	} else {
		fmt.Fprintf(tw, "  records\t%s (%s changed)\n", humanCount(r.Records), humanCount(r.Changes))
	}
	fmt.Fprintf(tw, "  stream\t%s in %s chunks\n", bytesize.Format(int64(r.StreamBytes)), humanCount(r.Chunks))
	fmt.Fprintf(tw, "  new\t%s chunks, %s stored\n", humanCount(r.ChunksNew), bytesize.Format(r.StoredBytesNew))
	fmt.Fprintf(tw, "  store puts\t%d\n", r.Puts)
	fmt.Fprintf(tw, "  time\t%.2f s (%s/s of input)\n", r.Seconds, bytesize.Format(int64(float64(r.InputBytes)/max(r.Seconds, 1e-9))))
	tw.Flush()
}

func buildDir(ctx context.Context, e *env, o buildOptions) error {
	shard, err := batch.ParseShard(o.Shard)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	if o.Jobs < 0 {
		return usagef("--jobs must be positive")
	}
	store, err := openStore(ctx, e, o.storeOptions, warnLogger(e))
	if err != nil {
		return err
	}
	store = withDeadlines(store)
	var bar *progressbar.ProgressBar
	enc := json.NewEncoder(e.stdout)
	var writeErr error
	progress := func(p batch.Progress) {
		if p.User != nil && o.JSON && writeErr == nil {
			writeErr = enc.Encode(p.User)
		}
		if !e.stderrTerminal {
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions64(max(p.BytesTotal, 1),
				progressbar.OptionSetWriter(e.stderr),
				progressbar.OptionShowBytes(true),
				progressbar.OptionUseIECUnits(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionSetPredictTime(false),
				progressbar.OptionClearOnFinish())
		}
		desc := fmt.Sprintf("users %d/%d", p.UsersDone, p.UsersTotal)
		if p.UsersFailed > 0 {
			desc += fmt.Sprintf(" (%d failed)", p.UsersFailed)
		}
		if p.ETA > 0 {
			desc += fmt.Sprintf(", ETA %s", p.ETA.Round(time.Second))
		}
		bar.Describe(desc)
		bar.Set64(p.BytesDone)
	}
	res, err := batch.BuildDir(ctx, store, batch.DirOptions{
		Dir: o.InputDir, Jobs: o.Jobs, Shard: shard, TempDir: o.TempDir,
	}, progress)
	if bar != nil {
		bar.Finish()
	}
	if res != nil {
		if o.JSON {
			// stdout holds only the per-user lines; the summary is for people.
			printDirSummary(e.stderr, res, shard)
		} else {
			printDirSummary(e.stdout, res, shard)
			for _, u := range res.Users {
				if u.Error != "" {
					fmt.Fprintf(e.stderr, "FAILED %s/%s: %s\n", u.Org, u.User, u.Error)
				}
			}
		}
	}
	if err != nil {
		return err
	}
	if writeErr != nil {
		return writeErr
	}
	return res.Err()
}

func printDirSummary(w io.Writer, r *batch.DirResult, shard batch.Shard) {
	var chunksNew int
	var storedNew int64
	for _, u := range r.Users {
		chunksNew += u.ChunksNew
		storedNew += u.StoredBytesNew
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	users := fmt.Sprintf("%s (%s created, %s unchanged, %s failed", humanCount(r.Total),
		humanCount(r.Created), humanCount(r.Unchanged), humanCount(r.Failed))
	if r.NotStarted > 0 {
		users += fmt.Sprintf(", %s not started", humanCount(r.NotStarted))
	}
	users += ")"
	if shard.N > 0 {
		users += fmt.Sprintf(" in shard %s; %s in other shards", shard, humanCount(r.OtherShards))
	}
	fmt.Fprintf(tw, "users\t%s\n", users)
	fmt.Fprintf(tw, "input\t%s in %.1f s (%s/s)\n", bytesize.Format(r.InputBytes), r.Seconds,
		bytesize.Format(int64(float64(r.InputBytes)/max(r.Seconds, 1e-9))))
	fmt.Fprintf(tw, "new data\t%s chunks, %s stored\n", humanCount(chunksNew), bytesize.Format(storedNew))
	fmt.Fprintf(tw, "store puts\t%d\n", r.Puts)
	tw.Flush()
}
