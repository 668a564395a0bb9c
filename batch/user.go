package batch

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// DefaultMaxAttempts bounds how often BuildUser builds when it keeps losing
// the race for the next version number to other writers.
const DefaultMaxAttempts = 5

// UserOptions configure BuildUser.
type UserOptions struct {
	Org, User string
	// Secret is the deployment's chunk-ID secret. If empty it is read from
	// the store (and created there on first use): snapshot.LoadOrCreateSecret.
	Secret []byte
	// TempDir holds the sorted runs of inputs too big to sort in memory
	// (and a copy of a non-seekable input, kept for a retry); os.TempDir()
	// if empty.
	TempDir string
	// SortMemory bounds the records held in memory while sorting; larger
	// inputs spill to TempDir. 64 MiB if 0.
	SortMemory int
	// Workers hash and compress chunks; GOMAXPROCS if 0.
	Workers int
	// MaxAttempts bounds the builds when the version race is lost;
	// DefaultMaxAttempts if 0.
	MaxAttempts int
	// Now stamps the version; time.Now if nil.
	Now func() time.Time
}

// UserResult reports one user's build. It is what `deltasync build --json`
// prints, one object per user.
type UserResult struct {
	Org  string `json:"org"`
	User string `json:"user"`
	// File is the input file (BuildDir only).
	File string `json:"file,omitempty"`
	// Version is the new version, or the current head if nothing changed.
	Version uint64 `json:"version"`
	// Parent is the version this one was built on (0 for the first).
	Parent uint64 `json:"parent"`
	// Created is false when the data set equals the head: nothing written.
	Created bool `json:"created"`
	// Records, StreamBytes and Chunks describe Version.
	Records     uint64 `json:"records"`
	StreamBytes uint64 `json:"stream_bytes"`
	Chunks      int    `json:"chunks"`
	// ChunksNew and StoredBytesNew count the chunks the parent lacked,
	// which this build stored (compressed size).
	ChunksNew      int   `json:"chunks_new"`
	StoredBytesNew int64 `json:"stored_bytes_new"`
	// Changes counts record-level changes from the parent (puts and
	// deletes); for a first version it equals Records.
	Changes int `json:"changes"`
	// Puts counts every write request to the store, packs, change set,
	// manifest and head hint included.
	Puts int64 `json:"puts"`
	// InputBytes is the size of the input as read (decompressed).
	InputBytes int64 `json:"input_bytes"`
	// Attempts is 1 unless the version race was lost and the build redone.
	Attempts int     `json:"attempts"`
	Seconds  float64 `json:"seconds"`
	// Error is why the user failed ("" on success).
	Error string `json:"error"`
}

// BuildUser builds the next version of one user's data set from NDJSON read
// from input (any key order). A bad line fails the build with an error
// matching *snapshot.LineError before anything is written.
//
// If input is seekable it is read again from its start for a retry after a
// lost version race; otherwise it is copied to a temporary file under
// opts.TempDir while it is read the first time.
func BuildUser(ctx context.Context, store snapshot.Store, opts UserOptions, input io.Reader) (*UserResult, error) {
	res := &UserResult{Org: opts.Org, User: opts.User}
	start := time.Now()
	in := newRereadable(input, opts.TempDir)
	err := buildUser(ctx, store, opts, in.open, res)
	if cerr := in.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("remove spooled input: %w", cerr)
	}
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Error = err.Error()
		return res, err
	}
	return res, nil
}

// buildUser runs the build loop: a build that loses the race for its
// version number builds again on the new head (snapshot.RetryLostRace).
// open returns the input for each attempt.
func buildUser(ctx context.Context, store snapshot.Store, opts UserOptions, open func(attempt int) (io.ReadCloser, error), res *UserResult) error {
	if err := snapshot.ValidateName("org", opts.Org); err != nil {
		return err
	}
	if err := snapshot.ValidateName("user", opts.User); err != nil {
		return err
	}
	maxAttempts := opts.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	cs := snapshot.NewCountingStore(store)
	defer func() { res.Puts = cs.Counts().Puts }()
	b := &userBuild{s: cs, opts: opts, open: open, res: res, secret: opts.Secret}
	_, err := snapshot.RetryLostRace(ctx, maxAttempts, func(attempt int) error {
		return b.attempt(ctx, attempt)
	})
	return err
}

// userBuild is one user's build across its attempts.
type userBuild struct {
	s      snapshot.Store
	opts   UserOptions
	open   func(attempt int) (io.ReadCloser, error)
	res    *UserResult
	secret []byte
}

// attempt reads the input and builds and commits a version on the head.
func (b *userBuild) attempt(ctx context.Context, attempt int) error {
	b.res.Attempts = attempt
	sorted, n, err := readSorted(ctx, b.opts, b.open, attempt)
	if attempt == 1 {
		b.res.InputBytes = n
	}
	if err != nil {
		return err
	}
	// The secret is loaded only once the input is known to be good, so a
	// bad input writes nothing, even to a fresh store.
	if len(b.secret) == 0 {
		if b.secret, err = snapshot.LoadOrCreateSecret(ctx, b.s); err != nil {
			sorted.Close()
			return err
		}
	}
	bopts := snapshot.DefaultBuildOptions()
	bopts.Org, bopts.User, bopts.Secret, bopts.Workers = b.opts.Org, b.opts.User, b.secret, b.opts.Workers
	if b.opts.Now != nil {
		bopts.Now = b.opts.Now
	}
	br, changes, err := diff.BuildVersion(ctx, b.s, bopts, sorted)
	if cerr := sorted.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("remove sort runs: %w", cerr)
	}
	switch {
	case err != nil && attempt > 1:
		return fmt.Errorf("build %s/%s (attempt %d): %w", b.opts.Org, b.opts.User, attempt, err)
	case err != nil:
		return fmt.Errorf("build %s/%s: %w", b.opts.Org, b.opts.User, err)
	}
	b.res.fill(br, changes)
	return nil
}

// readSorted reads, validates and sorts one attempt's input, returning the
// bytes read.
func readSorted(ctx context.Context, opts UserOptions, open func(int) (io.ReadCloser, error), attempt int) (*snapshot.SortedRecords, int64, error) {
	rc, err := open(attempt)
	if err != nil {
		return nil, 0, err
	}
	cr := &ctxReader{ctx: ctx, r: rc}
	sorted, err := snapshot.ReadNDJSON(cr, snapshot.NDJSONOptions{RunBytes: opts.SortMemory, TempDir: opts.TempDir})
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if sorted != nil {
			sorted.Close()
		}
		if ctx.Err() != nil {
			return nil, cr.n, ctx.Err()
		}
		return nil, cr.n, err
	}
	return sorted, cr.n, nil
}

func (r *UserResult) fill(br *snapshot.BuildResult, cs *diff.ChangeSet) {
	m := br.Manifest
	if br.Unchanged {
		m = br.Parent // nil when an empty input meets an empty data set
	} else {
		r.Created = true
		r.ChunksNew, r.StoredBytesNew = br.ChunksNew, br.StoredBytesNew
		if cs != nil && cs.Full {
			r.Changes = int(m.Records)
		} else if cs != nil {
			r.Changes = len(cs.Changes)
		}
	}
	if m == nil {
		return
	}
	r.Version, r.Parent = m.Version, m.Parent
	r.Records, r.StreamBytes, r.Chunks = m.Records, m.StreamLen, len(m.Chunks)
}

// rereadable gives an input out again for a retry: by seeking back if it
// can, else from a copy taken while it was first read.
type rereadable struct {
	r      io.Reader
	seeker io.Seeker
	start  int64
	spool  *os.File
	dir    string
}

func newRereadable(r io.Reader, dir string) *rereadable {
	in := &rereadable{r: r, dir: dir}
	if s, ok := r.(io.Seeker); ok {
		// A pipe is an *os.File too, but Seek fails on it.
		if off, err := s.Seek(0, io.SeekCurrent); err == nil {
			in.seeker, in.start = s, off
		}
	}
	return in
}

func (in *rereadable) open(attempt int) (io.ReadCloser, error) {
	switch {
	case attempt == 1 && in.seeker != nil:
		return io.NopCloser(in.r), nil
	case attempt == 1:
		f, err := os.CreateTemp(in.dir, "deltasync-input-*")
		if err != nil {
			return nil, fmt.Errorf("spool input: %w", err)
		}
		in.spool = f
		return io.NopCloser(io.TeeReader(in.r, f)), nil
	case in.seeker != nil:
		if _, err := in.seeker.Seek(in.start, io.SeekStart); err != nil {
			return nil, fmt.Errorf("rewind input: %w", err)
		}
		return io.NopCloser(in.r), nil
	default:
		if _, err := in.spool.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("rewind spooled input: %w", err)
		}
		return io.NopCloser(in.spool), nil
	}
}

func (in *rereadable) Close() error {
	if in.spool == nil {
		return nil
	}
	in.spool.Close()
	return os.Remove(in.spool.Name())
}

// ctxReader stops a long read when ctx is done (ReadNDJSON takes no ctx)
// and counts the bytes read.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
