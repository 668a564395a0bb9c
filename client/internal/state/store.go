package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/deltasync/deltasync/snapshot"
)

// Errors. ErrCorrupt and ErrInvalid are snapshot's, so either sentinel
// matches.
var (
	// ErrLocked reports that another process holds the state directory.
	ErrLocked = errors.New("client state is in use by another process")
	// ErrCorrupt reports state that cannot be read or does not check out.
	ErrCorrupt = snapshot.ErrCorrupt
	// ErrInvalid reports a request that would break the state's rules.
	ErrInvalid = snapshot.ErrInvalid
)

// File names inside the state directory.
const (
	EditsFile = "state.db" // the edit queue, conflicts, settings and counters
	DataFile  = "data.db"  // the synced version: chunks and record index
)

// Format is the state format this package writes. Format 1 (everything,
// records and raw chunks included, in state.db) is migrated on Open.
const Format = 2

// Options configure Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the directory before failing with ErrLocked (bbolt would wait
	// forever on zero; Open uses 200 ms then).
	LockTimeout time.Duration
	// ReadOnly opens both files read-only (shared lock) and migrates
	// nothing: a state of an older format fails with
	// snapshot.ErrUnsupportedVersion. Check uses it.
	ReadOnly bool
	// Mark, if set, is a byte string a full sync looks for in every value
	// it indexes: Installed.Marked lists the keys of the values that
	// contain it (the client's blob references), so no one need read every
	// record again after the install.
	Mark []byte
}

// Store is the local state of one client: two bbolt files in one
// directory (see the package doc). It is safe for concurrent use.
type Store struct {
	dir    string
	edits  *bolt.DB
	opts   Options
	chunks *chunkCodec
	gens   atomic.Uint32

	// data is the synced version's file; next a full download's (nil when
	// none). dataMu guards the switch from one file to the other: reads
	// hold it shared, a full sync's install takes it for the swap.
	dataMu sync.RWMutex
	data   *dataFile
	next   *dataFile

	// beforeWrite, when set (by tests), is called before each write
	// transaction of a data file and before the rename of a full
	// download's file; an error it returns is that write's, and the write
	// does not happen: a test stops an install between any two commits, as
	// a crash would.
	beforeWrite func() error
	// duringWrite, when set (by tests), is called inside each write
	// transaction of data.db, holding its lock.
	duringWrite func()
	// Sizes of an install's steps (tests make them small): the largest
	// batch (flushChunks, flushBytes), the most index writes of a delta in
	// place (inPlaceMax), chunks dropped per transaction (cleanupBatch).
	batchChunks, batchBytes, inPlaceMax, cleanupBatch int
	// pageChunks: the most chunks a page of a chunk list holds.
	pageChunks int

	// commits counts the write transactions committed, per file kind.
	commits struct{ edits, data atomic.Uint64 }

	// synced is the live version's chunk list as last read or installed.
	synced slotCache
}

// Commits counts the write transactions this Store committed so far: to
// state.db (edits) and to the data files (data). Each is two fsyncs, the
// cost that dominates a small install on a phone's storage; tests and
// benchmarks hold the install path to a budget of them.
type Commits struct{ Edits, Data uint64 }

// Commits returns the write transactions committed so far.
func (s *Store) Commits() Commits {
	return Commits{Edits: s.commits.edits.Load(), Data: s.commits.data.Load()}
}

// Open opens (creating if needed) the state in dir, migrating a state of
// format 1 in place. Only one process may hold a directory: if another
// does, Open fails after opts.LockTimeout with an error matching ErrLocked;
// a file that is not a valid database fails with an error matching
// ErrCorrupt that names it.
func Open(dir string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 200 * time.Millisecond
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create client state directory: %w", err)
		}
	}
	s := &Store{dir: dir, opts: opts, chunks: newChunkCodec(), batchChunks: flushChunks, batchBytes: flushBytes,
		inPlaceMax: inPlaceMax, cleanupBatch: cleanupBatch, pageChunks: pageChunks}
	var err error
	// state.db first: holding it is holding the directory.
	if s.edits, err = openBolt(filepath.Join(dir, EditsFile), opts, false); err != nil {
		return nil, err
	}
	format, err := s.editsFormat(opts.ReadOnly)
	if err == nil && format == 1 {
		err = s.migrate(opts)
	}
	if err == nil {
		s.data, err = s.openData(DataFile)
	}
	if err == nil {
		err = s.recoverNext()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// openBolt opens one file and translates its failures into sentinels.
// bbolt panics on some kinds of damage (a meta page that checks out
// pointing at garbage), so the open is guarded.
func openBolt(path string, opts Options, data bool) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("client state %s is damaged (%v): %w", path, r, ErrCorrupt)
		}
	}()
	bo := &bolt.Options{Timeout: opts.LockTimeout, ReadOnly: opts.ReadOnly, FreelistType: bolt.FreelistMapType}
	if opts.ReadOnly {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			return nil, fmt.Errorf("client state %s: %w", path, serr)
		}
	}
	db, err = bolt.Open(path, 0o600, bo)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, &lockedError{dir: filepath.Dir(path)}
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
		return nil, fmt.Errorf("client state %s is not a valid database (%v): %w", path, err, ErrCorrupt)
	default:
		return nil, fmt.Errorf("open client state %s: %w", path, err)
	}
}

// editsFormat creates state.db's buckets and returns its format: Format
// for a new state, 1 for one to migrate.
func (s *Store) editsFormat(readOnly bool) (uint64, error) {
	var format uint64
	read := func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		var f []byte
		if meta != nil {
			f = meta.Get(metaFormat)
		}
		switch {
		case f == nil && meta != nil && !readOnly:
			format = Format
			return meta.Put(metaFormat, u64(Format))
		case len(f) != 8:
			return fmt.Errorf("state format field: %w", ErrCorrupt)
		}
		format = binary.BigEndian.Uint64(f)
		if format != 1 && format != Format {
			return fmt.Errorf("client state format %d, this build reads %d: %w", format, Format, snapshot.ErrUnsupportedVersion)
		}
		if format == 1 && readOnly {
			return fmt.Errorf("client state format 1 must be opened once to be migrated: %w", snapshot.ErrUnsupportedVersion)
		}
		return nil
	}
	var err error
	if readOnly {
		err = s.edits.View(read)
	} else {
		err = s.edits.Update(func(tx *bolt.Tx) error {
			for _, name := range editBuckets {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return fmt.Errorf("create bucket %s: %w", name, err)
				}
			}
			return read(tx)
		})
	}
	if err != nil {
		return 0, fmt.Errorf("client state %s: %w", filepath.Join(s.dir, EditsFile), err)
	}
	return format, nil
}

// Files lists the files of a state directory, state.db last: holding it
// is holding the directory, and a directory without it has no state.
var Files = []string{migrateTemp, NextFile, DataFile, EditsFile}

// Remove deletes the state files of dir (a Store must not hold them),
// syncs the directory, and removes the directory if nothing else is in it
// (the app may keep files of its own there).
func Remove(dir string) error {
	for _, name := range Files {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove client state: %w", err)
		}
	}
	if err := syncDir(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove client state: %w", err)
	}
	os.Remove(dir) // fails unless empty, as it should
	return nil
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

// Close releases the directory. It may be called more than once.
func (s *Store) Close() error {
	// The handles stay: bbolt closes once and then answers every call
	// with ErrDatabaseNotOpen (IsClosed).
	var errs []error
	s.dataMu.RLock()
	for _, f := range []*dataFile{s.data, s.next} {
		if f != nil {
			errs = append(errs, f.db.Close())
		}
	}
	s.dataMu.RUnlock()
	if s.edits != nil {
		errs = append(errs, s.edits.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close client state: %w", err)
	}
	return nil
}

// SetEditsNoSync turns off (or back on) the fsync of state.db's commits:
// only for tests that queue many edits and are not about durability.
func (s *Store) SetEditsNoSync(on bool) { s.edits.NoSync = on }

// IsClosed reports an error of a store already closed.
func IsClosed(err error) bool { return errors.Is(err, bolterrors.ErrDatabaseNotOpen) }

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func getU64(b *bolt.Bucket, key []byte) uint64 {
	v := b.Get(key)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// lockedError names the directory another process holds; it matches
// ErrLocked.
type lockedError struct{ dir string }

func (e *lockedError) Error() string {
	return fmt.Sprintf("client state in %s is in use by another process", e.dir)
}

func (e *lockedError) Is(target error) bool { return target == ErrLocked }
