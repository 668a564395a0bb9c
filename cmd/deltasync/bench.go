package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/deltasync/deltasync/bench"
	"github.com/deltasync/deltasync/internal/bytesize"
)

const benchSynopsis = `  deltasync bench [--size 64MB] [--seed 1] [--json]

Generates a data set, serves it from a real server on loopback (local
directory store) and runs the edit scenarios of a work-management app
through the wire: one field of one record; 100 scattered record edits; 500
new records interleaved; 1,000 records deleted; one new 2 MB attachment; 10%
of records changed. For each it prints the bytes on the wire (headers
included) up (the client's patch) and down (another device's sync from the
previous version), beside a full download and zstd -3 of the new stream.
`

func runBench(ctx context.Context, e *env, args []string) error {
	var size bytesize.Flag = 64 << 20
	var seed int64
	var asJSON bool
	fs := newFlagSet(e, "bench", benchSynopsis)
	fs.Var(&size, "size", "data set size (MB = MiB)")
	fs.Int64Var(&seed, "seed", 1, "data and scenario seed")
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "deltasync-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	o := bench.Options{Size: int64(size), Seed: seed, Dir: dir, Compare: true}
	if !asJSON {
		o.Log = e.stderr
	}
	rep, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if asJSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintln(e.stdout, string(b))
		return nil
	}
	printBench(e, rep)
	return nil
}

func printBench(e *env, r *bench.Report) {
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(e.stdout, "data set: %s NDJSON, %d records, canonical stream %s\n",
		bytesize.Format(r.Size), r.Records, bytesize.Format(r.StreamBytes))
	fmt.Fprintf(e.stdout, "build: %.0f MB/s = %.2fx single-threaded zstd -3 (%.0f MB/s) in the same run\n",
		r.BuildMBps, r.BuildRatio, r.ZstdMBps)
	fmt.Fprintf(e.stdout, "initial sync: %s on the wire = %.3fx zstd -3 of the stream (%s)\n\n",
		bytesize.Format(r.InitialSync), float64(r.InitialSync)/float64(r.InitialZstd), bytesize.Format(r.InitialZstd))
	fmt.Fprintln(w, "scenario\tops\tup\tdown\tfull download\tzstd -3 of stream\tdown/zstd\tapply ms\t")
	for _, s := range r.Scenarios {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%.5f\t%.1f\t\n", s.Name, s.Ops, bytesize.Format(s.UpBytes), bytesize.Format(s.DownBytes),
			bytesize.Format(s.FullBytes), bytesize.Format(s.ZstdBytes), float64(s.DownBytes)/float64(max(s.ZstdBytes, 1)), s.ApplyMillis)
	}
	w.Flush()
	fmt.Fprintf(e.stdout, "\n%.1f s in all\n", r.TotalSeconds)
}
