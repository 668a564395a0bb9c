package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/deltasync/deltasync/internal/bytesize"
	"github.com/deltasync/deltasync/internal/gen"
)

const genSynopsis = `  deltasync gen --size 64MB [--seed 1] [--out FILE]
  deltasync gen --users N --out-dir DIR [--size-per-user 2KB-64KB] [--orgs K] [--seed 1] [--zstd]

Generates the data set of a work-management app (users, groups, channels,
messages, tasks, forms, photo attachments as base64) as NDJSON. The same
flags always give the same bytes. Sizes: ` + bytesize.Help + `.

The first form writes one data set of about --size bytes to --out (default
stdout). The second writes DIR/<org>/<user>.ndjson for --users users, each
of a size drawn between the two bounds of --size-per-user (log-uniformly:
many small data sets, a few big ones), as input for build --input-dir.
`

// genOptions are the flags of `deltasync gen`.
type genOptions struct {
	Size        bytesize.Flag
	Seed        int64
	Out         string
	Users       int
	Orgs        int
	OutDir      string
	SizePerUser string
	Zstd        bool
	JSON        bool
}

func runGen(ctx context.Context, e *env, args []string) error {
	var o genOptions
	fs := newFlagSet(e, "gen", genSynopsis)
	fs.Var(&o.Size, "size", "approximate `size` of the data set in bytes, e.g. 64MB")
	fs.Int64Var(&o.Seed, "seed", 1, "selects one of many data sets of the same shape")
	fs.StringVar(&o.Out, "out", "", "file to write (default stdout)")
	fs.IntVar(&o.Users, "users", 0, "number of users to write into --out-dir")
	fs.IntVar(&o.Orgs, "orgs", 0, "number of orgs the users are spread over (default one per 50 users)")
	fs.StringVar(&o.OutDir, "out-dir", "", "directory to write <org>/<user>.ndjson files into")
	fs.StringVar(&o.SizePerUser, "size-per-user", "2KB-64KB", "size of each user's data set: `MIN-MAX` or one size")
	fs.BoolVar(&o.Zstd, "zstd", false, "with --out-dir, write zstd-compressed .ndjson.zst files")
	fs.BoolVar(&o.JSON, "json", false, "print the summary as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.Users > 0 || o.OutDir != "" {
		if o.Size != 0 || o.Out != "" {
			return usagef("--size and --out make one data set; --users and --out-dir make a directory of them")
		}
		if o.Users <= 0 || o.OutDir == "" {
			return usagef("need both --users N and --out-dir DIR")
		}
		return genDir(ctx, e, o)
	}
	if o.Size <= 0 {
		return usagef("need --size (e.g. --size 8MB) or --users and --out-dir")
	}
	return genOne(e, o)
}

func genOne(e *env, o genOptions) error {
	opts := gen.Options{Size: int64(o.Size), Seed: o.Seed}
	var st gen.Stats
	if o.Out == "" || o.Out == "-" {
		var err error
		if st, err = gen.Generate(e.stdout, opts); err != nil {
			return err
		}
	} else if err := gen.WriteFileAtomic(o.Out, false, func(w io.Writer) (err error) {
		st, err = gen.Generate(w, opts)
		return err
	}); err != nil {
		return err
	}
	// The data may be on stdout: the summary goes to stderr.
	if o.JSON {
		return json.NewEncoder(e.stderr).Encode(map[string]any{"records": st.Records, "bytes": st.Bytes, "seed": o.Seed, "out": o.Out})
	}
	if o.Out != "" && o.Out != "-" {
		fmt.Fprintf(e.stderr, "wrote %s records, %s to %s\n", humanCount(st.Records), bytesize.Format(st.Bytes), o.Out)
	}
	return nil
}

func genDir(ctx context.Context, e *env, o genOptions) error {
	lo, hi, err := parseSizeRange(o.SizePerUser)
	if err != nil {
		return &usageError{msg: "--size-per-user: " + err.Error()}
	}
	res, err := gen.GenerateDir(ctx, gen.DirOptions{
		Dir: o.OutDir, Users: o.Users, Orgs: o.Orgs, MinSize: lo, MaxSize: hi, Seed: o.Seed, Zstd: o.Zstd,
	})
	if err != nil {
		return err
	}
	if o.JSON {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fmt.Fprintf(e.stdout, "wrote %s users in %s orgs under %s: %s records, %s of NDJSON\n",
		humanCount(res.Users), humanCount(res.Orgs), o.OutDir, humanCount(res.Records), bytesize.Format(res.Bytes))
	return nil
}

// parseSizeRange parses "MIN-MAX" or a single size.
func parseSizeRange(s string) (lo, hi int64, err error) {
	a, b, ok := strings.Cut(s, "-")
	if lo, err = bytesize.Parse(a); err != nil {
		return 0, 0, err
	}
	hi = lo
	if ok {
		if hi, err = bytesize.Parse(b); err != nil {
			return 0, 0, err
		}
	}
	if lo <= 0 || hi < lo {
		return 0, 0, fmt.Errorf("want 0 < MIN <= MAX, got %q", s)
	}
	return lo, hi, nil
}
