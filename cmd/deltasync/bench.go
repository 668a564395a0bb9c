package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"text/tabwriter"

	"github.com/deltasync/deltasync/bench"
	"github.com/deltasync/deltasync/internal/bytesize"
)

const benchSynopsis = `  deltasync bench [--size 64MB] [--seed 1] [--seeds 3] [--patch-from=true] [--json]

Generates data sets of two kinds (a work-management app; a sales CRM with
random ids, long notes and a schema migration), serves them from a real
server on loopback (local directory store) and runs their edit scenarios
through the wire: one field of one record; 100 scattered record edits; 500
new records; 1,000 records deleted; one new 2 MB attachment (work) or one
field renamed in 10% of records (CRM); 10% of records changed. For each it
prints the bytes on the wire (headers included) up (the client's patch) and
down (another device's sync from the previous version), where the down bytes
went, the same sync in delta format 2 (what clients that ask for no format
get), a full download, zstd -3 of the new stream and, when the zstd command
is installed, zstd -19 --patch-from of the old and new NDJSON (slow: about
a minute per scenario at 64 MB; --patch-from=false skips it). The initial
sync is measured on --seeds seeds of each kind.
`

func runBench(ctx context.Context, e *env, args []string) error {
	var size bytesize.Flag = 64 << 20
	var seed int64
	var seeds int
	var asJSON, patchFrom bool
	fs := newFlagSet(e, "bench", benchSynopsis)
	fs.Var(&size, "size", "data set size (MB = MiB)")
	fs.Int64Var(&seed, "seed", 1, "data and scenario seed")
	fs.IntVar(&seeds, "seeds", 3, "seeds the initial sync is measured on, from --seed on")
	fs.BoolVar(&patchFrom, "patch-from", true, "compare with zstd -19 --patch-from when the zstd command is installed")
	fs.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if seeds < 1 {
		return usagef("--seeds must be at least 1")
	}
	dir, err := os.MkdirTemp("", "deltasync-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	o := bench.Options{Size: int64(size), Seed: seed, Seeds: seeds, Dir: dir, Compare: true}
	if patchFrom {
		o.ZstdBinary, _ = exec.LookPath("zstd")
	}
	if !asJSON {
		o.Log = e.stderr
	}
	rep, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if !patchFrom {
		rep.PatchFrom = "not measured (--patch-from=false)"
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
	fmt.Fprintf(e.stdout, "data set: %s NDJSON, %d records, canonical stream %s\n",
		bytesize.Format(r.Size), r.Records, bytesize.Format(r.StreamBytes))
	fmt.Fprintf(e.stdout, "build: %.0f MB/s = %.2fx single-threaded zstd -3 (%.0f MB/s) in the same run\n",
		r.BuildMBps, r.BuildRatio, r.ZstdMBps)
	fmt.Fprintf(e.stdout, "initial sync: %s on the wire = %.3fx zstd -3 of the stream (%s)\n\n",
		bytesize.Format(r.InitialSync), float64(r.InitialSync)/float64(r.InitialZstd), bytesize.Format(r.InitialZstd))
	w := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "initial sync\tseed\trecords\tstream\ton the wire\tzstd -3 of stream\tratio\tC zstd -3\tratio\t")
	for _, s := range r.InitialSyncs {
		cz, cr := "-", "-"
		if s.CZstdBytes > 0 {
			cz, cr = bytesize.Format(s.CZstdBytes), fmt.Sprintf("%.3f", s.CZstdRatio)
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\t%.3f\t%s\t%s\t\n", s.Family, s.Seed, s.Records, bytesize.Format(s.StreamBytes),
			bytesize.Format(s.SyncBytes), bytesize.Format(s.ZstdBytes), s.Ratio, cz, cr)
	}
	w.Flush()
	fmt.Fprintf(e.stdout, "\npatch-from column: %s\n\n", r.PatchFrom)
	w = tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "data\tscenario\tops\tup\tdown\tzstd -19 --patch-from\tdown/patch-from\tformat 2 down\tfull download\tzstd -3 of stream\tapply ms\tsync ms\t")
	for _, s := range r.Scenarios {
		pf, ratio := "-", "-"
		if s.PatchFromBytes > 0 {
			pf, ratio = bytesize.Format(s.PatchFromBytes), fmt.Sprintf("%.2f", float64(s.DownBytes)/float64(s.PatchFromBytes))
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t\n", s.Family, s.Name, s.Ops, bytesize.Format(s.UpBytes),
			bytesize.Format(s.DownBytes), pf, ratio, bytesize.Format(s.DownFormat2), bytesize.Format(s.FullBytes),
			bytesize.Format(s.ZstdBytes), s.ApplyMillis, s.SyncMillis)
	}
	w.Flush()
	fmt.Fprintln(e.stdout, "\nwhere the down bytes went (bytes):")
	w = tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "data\tscenario\thttp headers\ttransfer framing\tpack header\tmanifest delta\tchunk payload\tpack framing\tgroups\t")
	for _, s := range r.Scenarios {
		d := s.Down
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", s.Family, s.Name, d.HTTPHeaders, d.Transfer, d.Header, d.Manifest, d.Payload, d.Framing, d.Groups)
	}
	w.Flush()
	fmt.Fprintf(e.stdout, "\n%.1f s in all\n", r.TotalSeconds)
}
