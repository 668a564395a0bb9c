package batch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/snapshot"
)

// File name suffixes BuildDir reads.
const (
	SuffixNDJSON = ".ndjson"
	SuffixZstd   = ".ndjson.zst"
)

// ErrUsersFailed is matched by DirResult.Err when some users failed.
var ErrUsersFailed = errors.New("some users failed")

// DirOptions configure BuildDir.
type DirOptions struct {
	// Dir holds the inputs as Dir/<org>/<user>.ndjson or .ndjson.zst.
	Dir string
	// Jobs is how many users build at once; 2×GOMAXPROCS if 0 (a build
	// waits on the store much of the time).
	Jobs int
	// Shard keeps only the users that hash to it; the zero Shard keeps all.
	Shard Shard
	// Secret is the chunk-ID secret; loaded from (or created in) the store
	// once for all users if empty.
	Secret []byte
	// TempDir holds sort runs; os.TempDir() if empty.
	TempDir string
	// SortMemory bounds each user's in-memory sort (see UserOptions);
	// 256 MiB / Jobs (at least 8 MiB) if 0, so the total stays bounded.
	SortMemory int
	// Workers per user build; GOMAXPROCS / Jobs (at least 1) if 0.
	Workers int
	// MaxDecoderMemory bounds the memory a .zst input may make the
	// decoder allocate (its window); 128 MiB if 0.
	MaxDecoderMemory uint64
	// ProgressInterval is how often progress is reported between users'
	// completions; 250ms if 0, never if negative.
	ProgressInterval time.Duration
	// MaxAttempts bounds each user's builds on lost version races.
	MaxAttempts int
}

// Progress is reported while BuildDir runs.
type Progress struct {
	UsersDone, UsersFailed, UsersTotal int
	// BytesDone counts input file bytes read so far (compressed bytes for
	// .zst files); BytesTotal is the sum of the input files' sizes.
	BytesDone, BytesTotal int64
	Elapsed               time.Duration
	// BytesPerSec is the input rate so far; ETA is the time left at that
	// rate (0 while unknown).
	BytesPerSec float64
	ETA         time.Duration
	// User is the user that just finished, or nil for a periodic report.
	User *UserResult
}

// DirResult reports a BuildDir run.
type DirResult struct {
	// Users holds every user attempted, sorted by org and user.
	Users []*UserResult `json:"users"`
	// Total is the users of this shard; Created, Unchanged and Failed
	// split those attempted; NotStarted were left when ctx ended.
	Total      int `json:"total"`
	Created    int `json:"created"`
	Unchanged  int `json:"unchanged"`
	Failed     int `json:"failed"`
	NotStarted int `json:"not_started"`
	// OtherShards counts the users left to other shards.
	OtherShards int     `json:"other_shards"`
	InputBytes  int64   `json:"input_bytes"`
	Puts        int64   `json:"puts"`
	Seconds     float64 `json:"seconds"`
}

// Err returns nil if every user of the shard built, otherwise an error
// matching ErrUsersFailed that names the first failures.
func (r *DirResult) Err() error {
	if r.Failed == 0 && r.NotStarted == 0 {
		return nil
	}
	var names []string
	for _, u := range r.Users {
		if u.Error != "" && len(names) < 3 {
			names = append(names, u.Org+"/"+u.User)
		}
	}
	more := ""
	if r.Failed > len(names) {
		more = fmt.Sprintf(" and %d more", r.Failed-len(names))
	}
	if r.NotStarted > 0 {
		more += fmt.Sprintf("; %d not started", r.NotStarted)
	}
	return fmt.Errorf("%d of %d users failed (%s%s): %w", r.Failed, r.Total, strings.Join(names, ", "), more, ErrUsersFailed)
}

// input is one user's file found in the directory.
type input struct {
	org, user, path string
	zst             bool
	size            int64
	err             error // a problem found while listing (bad name, ambiguous)
}

// BuildDir builds the next version of every user in opts.Dir that belongs
// to opts.Shard, opts.Jobs at a time. A user whose input is bad, or whose
// build fails, is reported in its UserResult.Error and the others go on;
// the returned error is for the run as a whole (an unreadable directory, a
// store that cannot give the secret, ctx ending). Use DirResult.Err to
// learn whether every user built.
//
// progress, if not nil, is called after every user and periodically, from
// one goroutine at a time.
func BuildDir(ctx context.Context, store snapshot.Store, opts DirOptions, progress func(Progress)) (*DirResult, error) {
	start := time.Now()
	if err := opts.Shard.Validate(); err != nil {
		return nil, err
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 2 * runtime.GOMAXPROCS(0)
	}
	if opts.Workers <= 0 {
		opts.Workers = max(1, runtime.GOMAXPROCS(0)/opts.Jobs)
	}
	if opts.SortMemory <= 0 {
		opts.SortMemory = max(8<<20, (256<<20)/opts.Jobs)
	}
	if opts.MaxDecoderMemory == 0 {
		opts.MaxDecoderMemory = 128 << 20
	}
	if opts.ProgressInterval == 0 {
		opts.ProgressInterval = 250 * time.Millisecond
	}
	all, err := listInputs(opts.Dir)
	if err != nil {
		return nil, err
	}
	res := &DirResult{}
	var inputs []input
	for _, in := range all {
		if opts.Shard.Has(in.org, in.user) {
			inputs = append(inputs, in)
			res.InputBytes += in.size
		} else {
			res.OtherShards++
		}
	}
	res.Total = len(inputs)
	// Largest first: the long builds overlap the many short ones instead
	// of trailing alone at the end.
	slices.SortStableFunc(inputs, func(a, b input) int { return cmp.Compare(b.size, a.size) })

	if len(opts.Secret) == 0 && len(inputs) > 0 {
		if opts.Secret, err = snapshot.LoadOrCreateSecret(ctx, store); err != nil {
			return nil, err
		}
	}

	r := &runner{opts: opts, store: store, progress: progress, start: start, res: res}
	r.decoders.New = func() any {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(opts.MaxDecoderMemory))
		if err != nil {
			panic(err) // only invalid options fail, and these are constant
		}
		return d
	}
	stopTicker := r.tick()
	g := new(errgroup.Group)
	g.SetLimit(opts.Jobs)
	started := 0
	for _, in := range inputs {
		if ctx.Err() != nil {
			break
		}
		started++
		g.Go(func() error {
			r.finish(r.buildOne(ctx, in))
			return nil
		})
	}
	g.Wait() // the goroutines report failures in their results
	stopTicker()

	res.NotStarted = len(inputs) - started
	slices.SortFunc(res.Users, func(a, b *UserResult) int {
		return cmp.Or(strings.Compare(a.Org, b.Org), strings.Compare(a.User, b.User))
	})
	res.Seconds = time.Since(start).Seconds()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("batch build stopped after %d of %d users: %w", len(res.Users), res.Total, err)
	}
	return res, nil
}

type runner struct {
	opts     DirOptions
	store    snapshot.Store
	progress func(Progress)
	start    time.Time
	decoders sync.Pool

	bytesDone atomic.Int64

	mu  sync.Mutex // guards res and serialises progress calls
	res *DirResult
}

func (r *runner) buildOne(ctx context.Context, in input) *UserResult {
	res := &UserResult{Org: in.org, User: in.user, File: in.path}
	start := time.Now()
	var read int64 // file bytes counted into progress so far
	err := in.err
	if err == nil {
		uopts := UserOptions{
			Org: in.org, User: in.user, Secret: r.opts.Secret, TempDir: r.opts.TempDir,
			SortMemory: r.opts.SortMemory, Workers: r.opts.Workers, MaxAttempts: r.opts.MaxAttempts,
		}
		err = buildUser(ctx, r.store, uopts, func(attempt int) (io.ReadCloser, error) {
			return r.open(in, attempt == 1, &read)
		}, res)
	}
	// Count the whole file as done, however far it was read.
	r.bytesDone.Add(in.size - read)
	res.Seconds = time.Since(start).Seconds()
	if err != nil {
		res.Error = fmt.Sprintf("%s: %v", in.path, err)
	}
	return res
}

// open opens an input file, decompressing .zst. The first attempt's file
// reads count towards progress.
func (r *runner) open(in input, count bool, read *int64) (io.ReadCloser, error) {
	f, err := os.Open(in.path)
	if err != nil {
		return nil, err
	}
	var src io.Reader = f
	if count {
		src = &progressReader{r: f, done: &r.bytesDone, read: read}
	}
	if !in.zst {
		return f2rc{src, f.Close}, nil
	}
	d := r.decoders.Get().(*zstd.Decoder)
	if err := d.Reset(src); err != nil {
		r.decoders.Put(d)
		f.Close()
		return nil, fmt.Errorf("zstd: %w", err)
	}
	return f2rc{d, func() error {
		d.Reset(nil) // drop the reference to f
		r.decoders.Put(d)
		return f.Close()
	}}, nil
}

// f2rc is a reader with its own close.
type f2rc struct {
	io.Reader
	close func() error
}

func (f f2rc) Close() error { return f.close() }

type progressReader struct {
	r    io.Reader
	done *atomic.Int64
	read *int64
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done.Add(int64(n))
	*p.read += int64(n)
	return n, err
}

func (r *runner) finish(u *UserResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := r.res
	res.Users = append(res.Users, u)
	res.Puts += u.Puts
	switch {
	case u.Error != "":
		res.Failed++
	case u.Created:
		res.Created++
	default:
		res.Unchanged++
	}
	r.report(u)
}

// report calls the progress callback; r.mu is held.
func (r *runner) report(u *UserResult) {
	if r.progress == nil {
		return
	}
	p := Progress{
		UsersDone: len(r.res.Users), UsersFailed: r.res.Failed, UsersTotal: r.res.Total,
		BytesDone: r.bytesDone.Load(), BytesTotal: r.res.InputBytes,
		Elapsed: time.Since(r.start), User: u,
	}
	if s := p.Elapsed.Seconds(); s > 0 {
		p.BytesPerSec = float64(p.BytesDone) / s
	}
	if p.BytesPerSec > 0 && p.BytesDone > 0 {
		p.ETA = time.Duration(float64(p.BytesTotal-p.BytesDone) / p.BytesPerSec * float64(time.Second))
	}
	r.progress(p)
}

// tick reports progress periodically until the returned stop is called.
func (r *runner) tick() (stop func()) {
	if r.progress == nil || r.opts.ProgressInterval < 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.opts.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.mu.Lock()
				r.report(nil)
				r.mu.Unlock()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// listInputs finds Dir/<org>/<user>.ndjson[.zst], sorted by path. Names
// that are not valid org or user names, and a user with both an .ndjson
// and an .ndjson.zst file, become inputs that fail; hidden entries and
// other files are ignored.
func listInputs(dir string) ([]input, error) {
	orgs, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("input directory: %w", err)
	}
	var out []input
	for _, o := range orgs {
		if !o.IsDir() || strings.HasPrefix(o.Name(), ".") {
			continue
		}
		org := o.Name()
		files, err := os.ReadDir(filepath.Join(dir, org))
		if err != nil {
			return nil, fmt.Errorf("input directory: %w", err)
		}
		seen := map[string]int{} // user → index in out
		for _, f := range files {
			name := f.Name()
			if f.IsDir() || strings.HasPrefix(name, ".") {
				continue
			}
			var user string
			var zst bool
			switch {
			case strings.HasSuffix(name, SuffixZstd):
				user, zst = strings.TrimSuffix(name, SuffixZstd), true
			case strings.HasSuffix(name, SuffixNDJSON):
				user = strings.TrimSuffix(name, SuffixNDJSON)
			default:
				continue
			}
			in := input{org: org, user: user, path: filepath.Join(dir, org, name), zst: zst}
			if fi, err := f.Info(); err != nil {
				in.err = err
			} else {
				in.size = fi.Size()
			}
			if in.err == nil {
				in.err = snapshot.ValidateName("org", org)
			}
			if in.err == nil {
				in.err = snapshot.ValidateName("user", user)
			}
			if i, ok := seen[user]; ok {
				prev := &out[i]
				prev.err = fmt.Errorf("both %s and %s exist: remove one: %w", filepath.Base(prev.path), name, snapshot.ErrInvalid)
				continue
			}
			seen[user] = len(out)
			out = append(out, in)
		}
	}
	return out, nil
}
