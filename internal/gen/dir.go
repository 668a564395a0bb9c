package gen

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// The names of generated input files, as batch.BuildDir reads them
// (batch.SuffixNDJSON, batch.SuffixZstd; this package sits below batch and
// does not import it).
const (
	suffixNDJSON = ".ndjson"
	suffixZstd   = ".ndjson.zst"
)

// DirOptions configure GenerateDir.
type DirOptions struct {
	// Dir receives Dir/<org>/<user>.ndjson (or .ndjson.zst).
	Dir string
	// Users is how many data sets to write, spread round-robin over Orgs
	// orgs (ceil(Users/50) if 0).
	Users, Orgs int
	// Each user's data set size is drawn log-uniformly from
	// [MinSize, MaxSize], so there are many small and a few big ones.
	MinSize, MaxSize int64
	// Seed selects the sizes and the data; equal options give equal files.
	Seed int64
	// Zstd writes .ndjson.zst files.
	Zstd bool
}

// DirResult reports what GenerateDir wrote.
type DirResult struct {
	Users   int   `json:"users"`
	Orgs    int   `json:"orgs"`
	Records int   `json:"records"`
	Bytes   int64 `json:"bytes"` // NDJSON bytes, before any compression
}

// GenerateDir writes generated data sets for many users, the input of
// batch builds (`deltasync build`) in tests and demos. Names are org-NNN/user-NNNNN; a file is written under
// a temporary name and renamed, so a killed run leaves no partial input.
func GenerateDir(ctx context.Context, opts DirOptions) (*DirResult, error) {
	if opts.Users <= 0 {
		return nil, fmt.Errorf("generate: users must be positive")
	}
	if opts.MinSize <= 0 || opts.MaxSize < opts.MinSize {
		return nil, fmt.Errorf("generate: want 0 < min size <= max size, got %d and %d", opts.MinSize, opts.MaxSize)
	}
	if opts.Orgs <= 0 {
		opts.Orgs = (opts.Users + 49) / 50
	}
	opts.Orgs = min(opts.Orgs, opts.Users)
	rnd := rand.New(rand.NewPCG(uint64(opts.Seed), 0x3c6ef372fe94f82b))
	lo, hi := math.Log(float64(opts.MinSize)), math.Log(float64(opts.MaxSize))
	res := &DirResult{Users: opts.Users, Orgs: opts.Orgs}
	for i := range opts.Users {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		size := int64(math.Round(math.Exp(lo + (hi-lo)*rnd.Float64())))
		org := fmt.Sprintf("org-%03d", i%opts.Orgs+1)
		user := fmt.Sprintf("user-%05d", i+1)
		name := user + suffixNDJSON
		if opts.Zstd {
			name = user + suffixZstd
		}
		path := filepath.Join(opts.Dir, org, name)
		var st Stats
		err := WriteFileAtomic(path, opts.Zstd, func(w io.Writer) (err error) {
			st, err = Generate(w, Options{Size: size, Seed: opts.Seed*1_000_003 + int64(i)})
			return err
		})
		if err != nil {
			return res, err
		}
		res.Records += st.Records
		res.Bytes += st.Bytes
	}
	return res, nil
}

// WriteFileAtomic writes path (zstd-compressed if compress) through a
// temporary file in the same directory, synced and renamed into place, so a
// killed run never leaves a truncated file behind.
func WriteFileAtomic(path string, compress bool, fill func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".gen-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())              // fails harmlessly after the rename
	if err := f.Chmod(0o644); err != nil { // CreateTemp makes it 0600
		f.Close()
		return err
	}
	var w io.Writer = f
	var enc *zstd.Encoder
	if compress {
		if enc, err = zstd.NewWriter(f); err != nil {
			f.Close()
			return err
		}
		w = enc
	}
	err = fill(w)
	if err == nil && enc != nil {
		err = enc.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
