// Package fsstore is the local-directory snapshot.Store, the embedded
// default. Each key is a file below the store's directory.
//
// Writes follow restic's internal/backend/local: the data goes to a temp
// file in dir/.tmp, is length-checked, fsynced, closed and renamed into
// place, and the directory is fsynced so the rename survives a crash.
// Create-only writes use link(2), which fails atomically if the name exists;
// compare-and-swap holds a lock (an in-process mutex plus flock on
// dir/.lock, so separate processes sharing the directory are safe too)
// while it compares the ETag and renames.
//
// As on an S3 gateway over a file system, a key cannot be both an object
// and the parent of another ("a" and "a/b"); the layout in package snapshot
// never needs that.
//
// A writer killed mid-write leaves its temp file (dir/.tmp/put-*) behind.
// Such files are swept by age: older than TempMaxAge (by modification time,
// which every write to the file moves on), they are removed when a store is
// opened, by writers at most once per sweepInterval, and by gc through
// SweepTemp. A live writer's file is younger; one stalled for longer than
// TempMaxAge loses its file and its write fails, so nothing acknowledged is
// lost.
package fsstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

const (
	tmpDir    = ".tmp"
	tmpPrefix = "put-"
	lockFile  = ".lock"
)

// TempMaxAge is the age from which a temp file counts as abandoned by a
// killed writer. Writes take seconds; an hour leaves a wide margin.
const TempMaxAge = time.Hour

// sweepInterval is how often writers of one Store sweep abandoned temp files.
const sweepInterval = 10 * time.Minute

// Store is a snapshot.Store over a local directory. It is safe for
// concurrent use by goroutines and processes.
type Store struct {
	dir string
	// mu serialises replacing and removing objects within this process;
	// flock on dir/.lock does the same across processes (flock alone is
	// not enough: it is per open file, not per goroutine).
	mu sync.Mutex
	// lastSweep is when writers last swept abandoned temp files (unix ns).
	lastSweep atomic.Int64
	now       func() time.Time // time.Now; tests move it
}

var (
	_ snapshot.Store       = (*Store)(nil)
	_ snapshot.TempSweeper = (*Store)(nil)
)

// New opens the store in dir, creating dir if needed.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fsstore: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(abs, tmpDir), 0o755); err != nil {
		return nil, fmt.Errorf("fsstore: %w", err)
	}
	s := &Store{dir: abs, now: time.Now}
	s.maybeSweep()
	return s, nil
}

// SweepTemp removes the temp files (dir/.tmp/put-*) older than olderThan and
// returns how many it removed. gc calls it through snapshot.TempSweeper. A
// file that vanishes meanwhile (its writer finished) is not an error.
func (s *Store) SweepTemp(ctx context.Context, olderThan time.Duration) (int, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, tmpDir))
	if err != nil {
		return 0, fmt.Errorf("fsstore: sweep temp files: %w", err)
	}
	cutoff := s.now().Add(-olderThan)
	removed := 0
	for _, ent := range ents {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		if !strings.HasPrefix(ent.Name(), tmpPrefix) || !ent.Type().IsRegular() {
			continue
		}
		fi, err := ent.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			continue // gone already, or young: a writer may be using it
		}
		err = os.Remove(filepath.Join(s.dir, tmpDir, ent.Name()))
		switch {
		case err == nil:
			removed++
		case !errors.Is(err, fs.ErrNotExist):
			return removed, fmt.Errorf("fsstore: sweep temp files: %w", err)
		}
	}
	return removed, nil
}

// maybeSweep sweeps abandoned temp files if no writer of this Store did in
// the last sweepInterval. One ReadDir of a directory that holds only the
// files of writes in flight: cheap enough to do inline. Failures are left to
// the next sweep: a left-over temp file costs space, not correctness.
func (s *Store) maybeSweep() {
	now := s.now()
	last := s.lastSweep.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < sweepInterval {
		return
	}
	if !s.lastSweep.CompareAndSwap(last, now.UnixNano()) {
		return // another writer is sweeping
	}
	_, _ = s.SweepTemp(context.Background(), TempMaxAge)
}

// Dir returns the absolute directory of the store.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(key string) string { return filepath.Join(s.dir, filepath.FromSlash(key)) }

func objErr(op, key string, err error) error {
	return &snapshot.ObjectError{Op: op, Key: key, Err: err}
}

// notExist reports whether err means there is no object at a path. ENOTDIR
// shows up when a prefix of the key is a file.
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// translate maps file-system errors onto the snapshot sentinels.
func translate(op, key string, err error) error {
	if notExist(err) {
		return objErr(op, key, fmt.Errorf("%w: %w", snapshot.ErrNotExist, err))
	}
	return objErr(op, key, err)
}

func check(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validKey(key); err != nil {
		return objErr(op, key, err)
	}
	return nil
}

func (s *Store) info(key string, fi fs.FileInfo) snapshot.ObjectInfo {
	return snapshot.ObjectInfo{Key: key, Size: fi.Size(), ETag: etag(fi), ModTime: fi.ModTime()}
}

// Get implements snapshot.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
	f, fi, err := s.open(ctx, "get", key)
	if err != nil {
		return nil, snapshot.ObjectInfo{}, err
	}
	return f, s.info(key, fi), nil
}

func (s *Store) open(ctx context.Context, op, key string) (*os.File, fs.FileInfo, error) {
	if err := check(ctx, op, key); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, nil, translate(op, key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, objErr(op, key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, objErr(op, key, fmt.Errorf("not a regular file: %w", snapshot.ErrNotExist))
	}
	return f, fi, nil
}

type sectionReadCloser struct {
	*io.SectionReader
	io.Closer
}

// GetRange implements snapshot.Store.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || length < 0 {
		return nil, objErr("get range", key, fmt.Errorf("negative range %d+%d: %w", offset, length, snapshot.ErrInvalid))
	}
	f, fi, err := s.open(ctx, "get range", key)
	if err != nil {
		return nil, err
	}
	if size := fi.Size(); offset > size || length > size-offset {
		f.Close()
		return nil, objErr("get range", key,
			fmt.Errorf("range %d+%d past end of %d-byte object: %w", offset, length, size, snapshot.ErrInvalid))
	}
	return sectionReadCloser{io.NewSectionReader(f, offset, length), f}, nil
}

// Stat implements snapshot.Store.
func (s *Store) Stat(ctx context.Context, key string) (snapshot.ObjectInfo, error) {
	if err := check(ctx, "stat", key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	fi, err := os.Stat(s.path(key))
	if err != nil {
		return snapshot.ObjectInfo{}, translate("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return snapshot.ObjectInfo{}, objErr("stat", key, fmt.Errorf("not a regular file: %w", snapshot.ErrNotExist))
	}
	return s.info(key, fi), nil
}

// ctxReader stops a long copy when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// writeTemp copies exactly size bytes of r into a new, fsynced and closed
// temp file and returns its path. The caller removes it.
func (s *Store) writeTemp(ctx context.Context, op, key string, r io.Reader, size int64) (string, error) {
	if err := check(ctx, op, key); err != nil {
		return "", err
	}
	if size < 0 {
		return "", objErr(op, key, fmt.Errorf("negative size %d: %w", size, snapshot.ErrInvalid))
	}
	s.maybeSweep()
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), tmpPrefix+"*")
	if err != nil {
		return "", objErr(op, key, err)
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", objErr(op, key, err)
	}
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, size))
	if err != nil {
		return fail(err)
	}
	if n != size {
		return fail(fmt.Errorf("wrote %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF))
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", objErr(op, key, err)
	}
	return name, nil
}

// prepare writes the temp file and creates the object's parent directory.
func (s *Store) prepare(ctx context.Context, op, key string, r io.Reader, size int64) (tmp, final string, err error) {
	tmp, err = s.writeTemp(ctx, op, key, r, size)
	if err != nil {
		return "", "", err
	}
	final = s.path(key)
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		os.Remove(tmp)
		return "", "", objErr(op, key, err)
	}
	return tmp, final, nil
}

// Put implements snapshot.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	tmp, final, err := s.prepare(ctx, "put", key, r, size)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	// The rename takes the lock so that a concurrent PutIfMatch cannot
	// compare against an ETag this Put is about to replace.
	unlock, err := s.lock()
	if err != nil {
		os.Remove(tmp)
		return snapshot.ObjectInfo{}, objErr("put", key, err)
	}
	err = os.Rename(tmp, final)
	info, ierr := s.statLocked(key, final)
	unlock()
	if err != nil {
		os.Remove(tmp)
		return snapshot.ObjectInfo{}, objErr("put", key, err)
	}
	if ierr != nil {
		return snapshot.ObjectInfo{}, objErr("put", key, ierr)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return snapshot.ObjectInfo{}, objErr("put", key, err)
	}
	return info, nil
}

// statLocked stats the object while the caller still holds the lock, so the
// returned ETag is the one this write produced, not a later writer's.
func (s *Store) statLocked(key, final string) (snapshot.ObjectInfo, error) {
	fi, err := os.Stat(final)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	return s.info(key, fi), nil
}

// PutIfAbsent implements snapshot.Store. link(2) creates the name only if
// it does not exist, atomically, so no lock is needed.
func (s *Store) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	const op = "put if absent"
	tmp, final, err := s.prepare(ctx, op, key, r, size)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	// Stat the temp file before linking: once linked, another writer may
	// replace the object, and the winner must learn its own ETag. A hard
	// link shares the inode, size and mtime, hence the ETag.
	fi, err := os.Stat(tmp)
	if err != nil {
		os.Remove(tmp)
		return snapshot.ObjectInfo{}, objErr(op, key, err)
	}
	err = os.Link(tmp, final)
	os.Remove(tmp)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			if st, serr := os.Lstat(final); serr == nil && st.IsDir() {
				return snapshot.ObjectInfo{}, objErr(op, key, fmt.Errorf("key is a directory of other objects: %w", err))
			}
			return snapshot.ObjectInfo{}, objErr(op, key, snapshot.ErrExist)
		}
		return snapshot.ObjectInfo{}, objErr(op, key, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return snapshot.ObjectInfo{}, objErr(op, key, err)
	}
	return s.info(key, fi), nil
}

// PutIfMatch implements snapshot.Store.
func (s *Store) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etagWant string) (snapshot.ObjectInfo, error) {
	const op = "put if match"
	// Stage the data before taking the lock, to hold it only briefly.
	tmp, final, err := s.prepare(ctx, op, key, r, size)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	info, err := s.swap(op, key, tmp, final, etagWant)
	if err != nil {
		os.Remove(tmp)
		return snapshot.ObjectInfo{}, err
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return snapshot.ObjectInfo{}, objErr(op, key, err)
	}
	return info, nil
}

func (s *Store) swap(op, key, tmp, final, etagWant string) (snapshot.ObjectInfo, error) {
	unlock, err := s.lock()
	if err != nil {
		return snapshot.ObjectInfo{}, objErr(op, key, err)
	}
	defer unlock()
	fi, err := os.Stat(final)
	if err != nil {
		return snapshot.ObjectInfo{}, translate(op, key, err)
	}
	if !fi.Mode().IsRegular() {
		return snapshot.ObjectInfo{}, objErr(op, key, fmt.Errorf("not a regular file: %w", snapshot.ErrNotExist))
	}
	if cur := etag(fi); cur != etagWant {
		return snapshot.ObjectInfo{}, objErr(op, key, fmt.Errorf("etag is %q, not %q: %w", cur, etagWant, snapshot.ErrPrecondition))
	}
	if err := os.Rename(tmp, final); err != nil {
		return snapshot.ObjectInfo{}, objErr(op, key, err)
	}
	info, err := s.statLocked(key, final)
	if err != nil {
		return snapshot.ObjectInfo{}, objErr(op, key, err)
	}
	return info, nil
}

// Delete implements snapshot.Store. Empty parent directories are left in
// place: removing them would race with a concurrent write creating a
// sibling, and List skips them anyway.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := check(ctx, "delete", key); err != nil {
		return err
	}
	final := s.path(key)
	unlock, err := s.lock()
	if err != nil {
		return objErr("delete", key, err)
	}
	err = os.Remove(final)
	unlock()
	if err != nil {
		if notExist(err) {
			return nil
		}
		return objErr("delete", key, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return objErr("delete", key, err)
	}
	return nil
}

// List implements snapshot.Store. A directory walk visits "a/b" before
// "a-c" although "a-c" sorts first as a key, so List collects the matching
// keys and sorts them before calling fn.
func (s *Store) List(ctx context.Context, prefix string, fn func(snapshot.ObjectInfo) error) error {
	return s.ListAfter(ctx, prefix, "", fn)
}

// ListAfter implements snapshot.Store. It does not read the directories
// whose keys all sort before after, nor stat their files, so a reader of
// the change feed that lists after its cursor reads the newest hours only.
func (s *Store) ListAfter(ctx context.Context, prefix, after string, fn func(snapshot.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Walk only the deepest directory that the prefix names completely.
	root := s.dir
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		if validKey(prefix[:i]) != nil {
			return nil // no valid key can start with this prefix
		}
		root = s.path(prefix[:i])
	}
	var infos []snapshot.ObjectInfo
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if notExist(err) {
				return nil // the prefix directory is missing, or a delete raced the walk
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(s.dir, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if key == tmpDir || key == lockFile {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		// A directory that neither holds the prefix nor lies inside it
		// holds no key with the prefix: do not read it (the change feed
		// probes many prefixes of _feed/<hour>).
		if d.IsDir() && path != root && !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
			return filepath.SkipDir
		}
		if d.IsDir() && path != root && allBefore(key+"/", after) {
			return filepath.SkipDir
		}
		if d.IsDir() || !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) || key <= after {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if notExist(err) {
				return nil
			}
			return err
		}
		infos = append(infos, s.info(key, fi))
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// allBefore reports whether every key that starts with dir (a directory's
// key and a slash) sorts at or before after: after is past dir and does
// not itself start with it.
func allBefore(dir, after string) bool {
	return after > dir && !strings.HasPrefix(after, dir)
}

// lock takes the store's write lock: the in-process mutex, then the
// cross-process flock.
func (s *Store) lock() (unlock func(), err error) {
	s.mu.Lock()
	release, err := lockFileAt(filepath.Join(s.dir, lockFile))
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("lock store: %w", err)
	}
	return func() {
		release()
		s.mu.Unlock()
	}, nil
}

// validKey applies the key rules every backend shares.
func validKey(key string) error { return snapshot.ValidateObjectKey(key) }
