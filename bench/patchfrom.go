package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/internal/gen"
)

// patchFrom fills in the zstd -19 --patch-from column: for every scenario,
// the old and new versions as NDJSON (records in key order) and the size of
// what zstd makes of the new one with the old one as its dictionary.
func (r *run) patchFrom(ctx context.Context) error {
	if r.o.ZstdBinary == "" {
		if r.rep.PatchFrom == "" {
			r.rep.PatchFrom = "not measured (no zstd binary)"
		}
		return nil
	}
	out, err := exec.CommandContext(ctx, r.o.ZstdBinary, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %w", r.o.ZstdBinary, err)
	}
	r.rep.PatchFrom = strings.TrimSpace(string(out))
	dir, err := os.MkdirTemp("", "deltasync-patchfrom-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(cmp.Or(r.o.Parallel, 2))
	for k, p := range r.pairs {
		g.Go(func() error {
			r.logf("zstd -19 --patch-from: %s %s", r.rep.Scenarios[p.row].Family, r.rep.Scenarios[p.row].Name)
			n, err := r.patchFromPair(ctx, filepath.Join(dir, fmt.Sprint(k)), p)
			r.rep.Scenarios[p.row].PatchFromBytes = n
			return err
		})
	}
	return g.Wait()
}

// patchFromPair writes the pair under prefix and runs zstd on it.
func (r *run) patchFromPair(ctx context.Context, prefix string, p versionPair) (int64, error) {
	old, new := prefix+".old.ndjson", prefix+".new.ndjson"
	defer os.Remove(old)
	defer os.Remove(new)
	if err := writeNDJSON(old, p.old); err != nil {
		return 0, err
	}
	if err := writeNDJSON(new, p.new); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, r.o.ZstdBinary, "-19", "-q", "-c", "--patch-from="+old, new)
	var cw countWriter
	cmd.Stdout = &cw
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("zstd --patch-from: %w: %s", err, stderr.String())
	}
	return cw.n, nil
}

// cZstd returns the size of the zstd command's -3 of data.
func (r *run) cZstd(ctx context.Context, data []byte) (int64, error) {
	cmd := exec.CommandContext(ctx, r.o.ZstdBinary, "-3", "-q", "-c")
	cmd.Stdin = bytes.NewReader(data)
	var cw countWriter
	cmd.Stdout = &cw
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("zstd -3: %w", err)
	}
	return cw.n, nil
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

// writeNDJSON writes records as {"key":…,"value":…} lines.
func writeNDJSON(path string, recs []gen.Record) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, rec := range recs {
		k, _ := json.Marshal(rec.Key)
		w.WriteString(`{"key":`)
		w.Write(k)
		w.WriteString(`,"value":`)
		w.Write(rec.Value)
		w.WriteString("}\n")
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
