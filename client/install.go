package client

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/snapshot"
)

// versionUpdate is a new synced version, fully downloaded and verified by
// the caller (pull), ready to replace the local one.
type versionUpdate struct {
	Version  uint64
	Manifest []byte // manifest bytes of Version, kept for the next delta
	// Full replaces every record (initial sync, or a rebuild after local
	// damage); otherwise Puts and Deletes apply on top of the local version.
	Full bool
	// Puts calls put once per new or changed record (canonical JSON value);
	// an error from put must be returned. Nil means no puts.
	Puts    func(put func(key string, value []byte) error) error
	Deletes []string
	// DropChunks are cached chunks the new version no longer references.
	DropChunks []snapshot.ChunkID

	// FromChunks, with Full, are the chunks of the new version in stream
	// order: the records are decoded from the chunk cache inside the
	// install transaction (each chunk checked against its Sum), so a full
	// sync never holds the whole data set in memory. RecordCount, if not
	// negative, is the number of records they must hold.
	FromChunks  []snapshot.ChunkRef
	RecordCount int64
	// SweepChunks drops every cached chunk that FromChunks (or, if nil,
	// the chunk list in Manifest) does not reference: leftovers of an
	// abandoned download.
	SweepChunks bool
	// ClearMeta are meta keys deleted in the same transaction (the
	// download marker, repair flags).
	ClearMeta [][]byte
}

// installVersion switches the local state to u.Version in one bbolt
// transaction: readers see either the old records or the new ones, never a
// mix, and a crash leaves the old version. Pending edits stay pending (laid
// over the new records); sent edits that u.Version already contains are
// dropped. A version older than the local one is refused unless Full.
func (c *Client) installVersion(u versionUpdate) error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if cur := getU64(meta, metaVersion); u.Version < cur && !u.Full {
			return fmt.Errorf("version %d is older than local version %d: %w", u.Version, cur, ErrInvalid)
		}
		if u.Full {
			if err := tx.DeleteBucket(bucketRecords); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(bucketRecords); err != nil {
				return err
			}
		}
		recs := tx.Bucket(bucketRecords)
		if u.Puts != nil {
			err := u.Puts(func(key string, value []byte) error {
				if err := snapshot.ValidateKey(key); err != nil {
					return err
				}
				if len(value) > snapshot.MaxValueLen {
					return fmt.Errorf("record %q: value of %d bytes exceeds %d: %w", key, len(value), snapshot.MaxValueLen, ErrInvalid)
				}
				return recs.Put([]byte(key), value)
			})
			if err != nil {
				return err
			}
		}
		if len(u.FromChunks) > 0 {
			if err := putFromChunks(tx, recs, u.FromChunks, u.RecordCount); err != nil {
				return err
			}
		}
		for _, key := range u.Deletes {
			if err := recs.Delete([]byte(key)); err != nil {
				return err
			}
		}
		if err := meta.Put(metaVersion, u64(u.Version)); err != nil {
			return err
		}
		if err := meta.Put(metaManifest, u.Manifest); err != nil {
			return err
		}
		if err := dropSent(tx, u.Version); err != nil {
			return err
		}
		chunks := tx.Bucket(bucketChunks)
		for _, id := range u.DropChunks {
			if err := chunks.Delete(id[:]); err != nil {
				return err
			}
		}
		if u.SweepChunks {
			if err := sweepChunks(chunks, u); err != nil {
				return err
			}
		}
		for _, k := range u.ClearMeta {
			if err := meta.Delete(k); err != nil {
				return err
			}
		}
		_, err := c.putCounters(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("install version %d: %w", u.Version, err)
	}
	c.st.mu.Lock()
	c.st.localVersion = u.Version
	c.st.mu.Unlock()
	c.emitStatus()
	return nil
}

// dropSent removes the sent edits that version v contains.
func dropSent(tx *bolt.Tx, v uint64) error {
	sent, idx := tx.Bucket(bucketSent), tx.Bucket(bucketEditIndex)
	var done [][]byte
	err := sent.ForEach(func(k, raw []byte) error {
		e, err := decodeEdit(raw)
		if err != nil {
			return err
		}
		if e.Version <= v {
			if err := idx.Delete(indexKey(e.Key, e.Seq)); err != nil {
				return err
			}
			done = append(done, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range done {
		if err := sent.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// localVersion returns the synced version and its manifest bytes (nil for
// version 0).
func (c *Client) localVersion() (uint64, []byte, error) {
	var v uint64
	var m []byte
	err := c.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		v = getU64(meta, metaVersion)
		if b := meta.Get(metaManifest); len(b) > 0 {
			m = bytes.Clone(b)
		}
		return nil
	})
	return v, m, err
}

// cachedChunk is one chunk for putChunks.
type cachedChunk struct {
	ID   snapshot.ChunkID
	Data []byte
}

// putChunks stores downloaded chunks durably in one transaction, so an
// interrupted download resumes without refetching them. The caller verifies
// each chunk against its id before storing it.
func (c *Client) putChunks(chunks []cachedChunk) error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		for _, ch := range chunks {
			if err := b.Put(bytes.Clone(ch.ID[:]), ch.Data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache chunks: %w", err)
	}
	return nil
}

// getChunk returns a copy of a cached chunk, or an error matching
// snapshot.ErrNotExist. The bytes are as stored: the caller verifies them
// (and on a mismatch drops them with deleteChunks and refetches).
func (c *Client) getChunk(id snapshot.ChunkID) ([]byte, error) {
	var out []byte
	err := c.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketChunks).Get(id[:])
		if v == nil {
			return &snapshot.ChunkError{Op: "read cached", ID: id, Err: snapshot.ErrNotExist}
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// hasChunks reports, for each id, whether the chunk is cached.
func (c *Client) hasChunks(ids []snapshot.ChunkID) ([]bool, error) {
	out := make([]bool, len(ids))
	err := c.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		for i, id := range ids {
			out[i] = b.Get(id[:]) != nil
		}
		return nil
	})
	return out, err
}

// deleteChunks drops cached chunks (unreferenced or failing verification).
func (c *Client) deleteChunks(ids []snapshot.ChunkID) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		for _, id := range ids {
			if err := b.Delete(id[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// putFromChunks decodes the records of a whole version from the chunk cache
// and puts them. Keys and values are copied: bbolt may remap its file while
// the transaction writes, which would invalidate slices into it.
func putFromChunks(tx *bolt.Tx, recs *bolt.Bucket, chunks []snapshot.ChunkRef, want int64) error {
	cb := tx.Bucket(bucketChunks)
	dec := &snapshot.RecordDecoder{}
	for i := range chunks {
		ref := &chunks[i]
		raw := cb.Get(ref.ID[:])
		if raw == nil || sha256.Sum256(raw) != ref.Sum {
			return &snapshot.ChunkError{Op: "read cached", ID: ref.ID, Err: snapshot.ErrCorrupt}
		}
		err := dec.Feed(bytes.Clone(raw), func(k, v []byte) error {
			if len(v) > snapshot.MaxValueLen {
				return fmt.Errorf("record %q: value of %d bytes exceeds %d: %w", k, len(v), snapshot.MaxValueLen, ErrCorrupt)
			}
			return recs.Put(bytes.Clone(k), bytes.Clone(v))
		})
		if err != nil {
			return err
		}
	}
	if err := dec.Close(); err != nil {
		return err
	}
	if want >= 0 && int64(dec.Count()) != want {
		return fmt.Errorf("%d records decoded, the manifest says %d: %w", dec.Count(), want, ErrCorrupt)
	}
	return nil
}

// sweepChunks deletes every cached chunk the new version does not use.
func sweepChunks(b *bolt.Bucket, u versionUpdate) error {
	refs := u.FromChunks
	if refs == nil {
		m, err := snapshot.UnmarshalManifest(u.Manifest)
		if err != nil {
			return fmt.Errorf("sweep chunk cache: %w", err)
		}
		refs = m.Chunks
	}
	keep := make(map[snapshot.ChunkID]bool, len(refs))
	for i := range refs {
		keep[refs[i].ID] = true
	}
	var drop [][]byte
	cur := b.Cursor()
	for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
		var id snapshot.ChunkID
		if len(k) != len(id) {
			drop = append(drop, bytes.Clone(k))
			continue
		}
		copy(id[:], k)
		if !keep[id] {
			drop = append(drop, bytes.Clone(k))
		}
	}
	for _, k := range drop {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
