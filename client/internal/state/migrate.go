package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/snapshot"
)

// Format 1 kept everything in state.db: besides the buckets state.db
// still has, "records" (key -> canonical value of the synced version) and
// "chunks" (chunk ID -> raw chunk, the cache deltas were computed
// against), with the version, its manifest and the download marker in
// meta.
var (
	v1Records   = []byte("records")
	v1MetaDrop  = [][]byte{[]byte("version"), []byte("manifest"), []byte("download"), []byte("sweep_chunks"), []byte("need_full")}
	v1Version   = []byte("version")
	v1Manifest  = []byte("manifest")
	v1NeedFull  = []byte("need_full")
	migrateTemp = EditsFile + ".migrate"
)

// migrate turns a format-1 state into this format, in place:
//
//  1. data.db is built from the records (the truth format 1 showed): cut
//     with the version's chunker parameters they give the server's chunks
//     back, checked against the stored manifest's SHA-256s, and deltas go
//     on from the same version. If they do not (a damaged chunk cache is
//     no reason to lose the records), the records are kept in chunks of
//     their own and the next pull is a full sync;
//  2. state.db is rewritten without the records and the chunk cache (a
//     bbolt file never shrinks: deleting them would leave the space
//     allocated) and renamed over the old one.
//
// A crash at any point leaves either the old state.db (and migration runs
// again; a data.db it finished is recognised and kept) or the new one.
// The download in progress, if any, is dropped: its chunks were in the
// old cache.
func (s *Store) migrate(opts Options) error {
	path := filepath.Join(s.dir, EditsFile)
	v, manifest, needFull, err := s.readV1()
	if err != nil {
		return fmt.Errorf("migrate client state %s: %w", path, err)
	}
	if err := s.migrateData(opts, v, manifest, needFull); err != nil {
		return fmt.Errorf("migrate client state %s: %w", path, err)
	}
	if err := s.rewriteEdits(opts); err != nil {
		return fmt.Errorf("migrate client state %s: %w", path, err)
	}
	return nil
}

func (s *Store) readV1() (v uint64, manifest *snapshot.Manifest, needFull bool, err error) {
	err = s.edits.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		v = getU64(meta, v1Version)
		needFull = meta.Get(v1NeedFull) != nil
		if v == 0 {
			return nil
		}
		if tx.Bucket(v1Records) == nil {
			return fmt.Errorf("format 1 at version %d without records: %w", v, ErrCorrupt)
		}
		m, err := snapshot.UnmarshalManifest(bytes.Clone(meta.Get(v1Manifest)))
		if err == nil && m.Version == v {
			manifest = m
		}
		return nil
	})
	return v, manifest, needFull, err
}

// migrateData builds data.db at version v from the format-1 records,
// unless an earlier, interrupted migration already did.
func (s *Store) migrateData(opts Options, v uint64, server *snapshot.Manifest, needFull bool) error {
	dataPath := filepath.Join(s.dir, DataFile)
	if s.migratedBefore(opts, v) {
		return nil
	}
	if err := os.Remove(dataPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var err error
	if s.data, err = s.openData(DataFile); err != nil {
		return err
	}
	// (Installing the records replaces s.data by the file it made.)
	defer func() { s.data.db.Close(); s.data = nil }()
	if v > 0 {
		if err := s.migrateRecords(v, server, needFull); err != nil {
			return err
		}
	}
	return s.updateData(func(tx *bolt.Tx) error {
		return tx.Bucket(dataMeta).Put(dmMigrated, u64(v))
	})
}

// migratedBefore reports whether data.db holds a finished migration of
// version v.
func (s *Store) migratedBefore(opts Options, v uint64) bool {
	db, err := openBolt(filepath.Join(s.dir, DataFile), opts, true)
	if err != nil {
		return false
	}
	defer db.Close()
	done := false
	db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(dataMeta)
		if meta == nil || meta.Get(dmMigrated) == nil || getU64(meta, dmMigrated) != v {
			return nil
		}
		slot := liveSlot(tx)
		done = v == 0 && slot == nil || slot != nil && getU64(slot, skVersion) == v
		return nil
	})
	return done
}

// migrateRecords installs the format-1 records as version v.
func (s *Store) migrateRecords(v uint64, server *snapshot.Manifest, needFull bool) error {
	params := snapshot.DefaultChunkerParams()
	if server != nil {
		params = server.Chunker
	}
	recs := func(yield func(string, []byte) error) error {
		return s.edits.View(func(tx *bolt.Tx) error {
			return tx.Bucket(v1Records).ForEach(func(k, val []byte) error {
				if len(val) > snapshot.MaxValueLen {
					return fmt.Errorf("record %q of %d bytes: %w", k, len(val), ErrCorrupt)
				}
				return yield(string(k), val)
			})
		})
	}
	m, err := s.InstallRecords(context.Background(), v, params, recs, server)
	if err != nil {
		return err
	}
	if needFull || m != server {
		return s.SetNeedFull()
	}
	return nil
}

// rewriteEdits copies state.db without the format-1 data into a new file,
// marks it of this format and renames it over the old one; then reopens it.
func (s *Store) rewriteEdits(opts Options) error {
	path := filepath.Join(s.dir, EditsFile)
	tmp := filepath.Join(s.dir, migrateTemp)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return err
	}
	err = s.edits.View(func(src *bolt.Tx) error {
		return dst.Update(func(tx *bolt.Tx) error { return copyEdits(src, tx) })
	})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := s.edits.Close(); err != nil {
		return err
	}
	s.edits = nil
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.edits, err = openBolt(path, opts, false)
	return err
}

// copyEdits copies the buckets state.db keeps, less the format-1 meta
// keys, and sets the format.
func copyEdits(src, dst *bolt.Tx) error {
	drop := map[string]bool{}
	for _, k := range v1MetaDrop {
		drop[string(k)] = true
	}
	for _, name := range editBuckets {
		to, err := dst.CreateBucketIfNotExists(name)
		if err != nil {
			return err
		}
		from := src.Bucket(name)
		if from == nil {
			continue
		}
		to.FillPercent = 1
		err = from.ForEach(func(k, v []byte) error {
			if bytes.Equal(name, bucketMeta) && drop[string(k)] || v == nil {
				return nil
			}
			return to.Put(k, v)
		})
		if err != nil {
			return err
		}
	}
	return dst.Bucket(bucketMeta).Put(metaFormat, u64(Format))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
