package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// NextFile is where a full sync is downloaded: a data file of its own,
// renamed over DataFile when it is installed. So the version it replaces
// is dropped by deleting a file, not page by page (which would read, and
// keep resident, every page of it, and leave the file as large as both
// versions together), and a device holds one copy of its data again as
// soon as the install is done.
const NextFile = "data.next.db"

// dataAllocSize is how much a data file grows by at a time.
const dataAllocSize = 4 << 20

// dataFile is one open data file. gen names it in the chunk cache: chunk
// seqs are numbered per file.
type dataFile struct {
	db  *bolt.DB
	gen uint32
}

// openData opens (creating) a data file.
func (s *Store) openData(name string) (*dataFile, error) {
	db, err := openBolt(filepath.Join(s.dir, name), s.opts, true)
	if err != nil {
		return nil, err
	}
	// bbolt grows a file by 16 MiB at a time past 16 MiB: slack a phone
	// pays for in storage until the data grows into it. Smaller steps cost
	// a truncate and an fsync each (64 of them for 256 MiB).
	db.AllocSize = dataAllocSize
	f := &dataFile{db: db, gen: s.gens.Add(1)}
	if !s.opts.ReadOnly {
		if err := initData(f.db); err != nil {
			db.Close()
			return nil, fmt.Errorf("client state %s: %w", filepath.Join(s.dir, name), err)
		}
	}
	return f, nil
}

// viewTx runs fn in a read transaction of the synced version's file.
func (s *Store) viewTx(fn func(f *dataFile, tx *bolt.Tx) error) error {
	s.dataMu.RLock()
	defer s.dataMu.RUnlock()
	f := s.data
	return f.db.View(func(tx *bolt.Tx) error { return fn(f, tx) })
}

// updateData runs fn in a write transaction of the synced version's file.
func (s *Store) updateData(fn func(tx *bolt.Tx) error) error {
	s.dataMu.RLock()
	defer s.dataMu.RUnlock()
	return s.update(s.data, fn)
}

// update runs fn in a write transaction of f (with the test hooks).
func (s *Store) update(f *dataFile, fn func(tx *bolt.Tx) error) error {
	if s.beforeWrite != nil {
		if err := s.beforeWrite(); err != nil {
			return err
		}
	}
	if s.duringWrite != nil {
		return f.db.Update(func(tx *bolt.Tx) error {
			s.duringWrite()
			return fn(tx)
		})
	}
	return f.db.Update(fn)
}

// recoverNext looks at a full download's file found at Open: a download
// in progress is kept (the next pull resumes it), an install finished but
// for the rename is completed, anything else is removed.
func (s *Store) recoverNext() error {
	path := filepath.Join(s.dir, NextFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	f, err := s.openData(NextFile)
	if err != nil {
		if s.opts.ReadOnly {
			return err
		}
		// Damaged: it only costs a refetch.
		return os.Remove(path)
	}
	var downloading, installed bool
	err = f.db.View(func(tx *bolt.Tx) error {
		downloading = tx.Bucket(dataMeta).Get(dmDownload) != nil
		installed = liveSlot(tx) != nil
		return nil
	})
	switch {
	case err == nil && installed && !downloading && s.opts.ReadOnly:
		// What the next open will show: check that.
		old := s.data
		s.data = f
		return old.db.Close()
	case err == nil && installed && !downloading:
		s.next = f
		return s.promote()
	case err == nil && (downloading || s.opts.ReadOnly):
		s.next = f
		return nil
	}
	f.db.Close()
	return errors.Join(err, os.Remove(path))
}

// promote makes the full download's file, installed, the data file:
// renamed over it (bbolt keeps the open handle and its lock), then used by
// every read that starts afterwards; the old file's handle closes once the
// reads on it are done.
func (s *Store) promote() error {
	if s.beforeWrite != nil {
		if err := s.beforeWrite(); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(s.dir, NextFile), filepath.Join(s.dir, DataFile)); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	s.dataMu.Lock()
	old := s.data
	s.data, s.next = s.next, nil
	s.dataMu.Unlock()
	if old != nil {
		return old.db.Close()
	}
	return nil
}

// dropNext closes and removes a full download's file.
func (s *Store) dropNext() error {
	s.dataMu.Lock()
	f := s.next
	s.next = nil
	s.dataMu.Unlock()
	if f == nil {
		return nil
	}
	err := f.db.Close()
	if rerr := os.Remove(filepath.Join(s.dir, NextFile)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// newNext creates an empty file for a full download.
func (s *Store) newNext() (*dataFile, error) {
	if err := s.dropNext(); err != nil {
		return nil, err
	}
	if err := os.Remove(filepath.Join(s.dir, NextFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := s.openData(NextFile)
	if err != nil {
		return nil, err
	}
	s.dataMu.Lock()
	s.next = f
	s.dataMu.Unlock()
	return f, nil
}
