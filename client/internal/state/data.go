package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/snapshot"
)

// Buckets and keys of data.db.
var (
	dataMeta   = []byte("meta")
	dataChunks = []byte("chunks") // seq (big-endian uint64) -> zstd frame of the raw chunk
	slotNames  = [2][]byte{[]byte("slot.a"), []byte("slot.b")}

	dmFormat   = []byte("format")
	dmCurrent  = []byte("current")   // 0 or 1: the live slot; absent at version 0
	dmChunkSeq = []byte("chunk_seq") // last assigned chunk seq
	dmDownload = []byte("download")  // Marker JSON: the download in progress
	dmNeedFull = []byte("need_full") // set: the next pull must be a full sync
	dmMigrated = []byte("migrated")  // format-1 version this file was migrated from (until state.db is rewritten)

	skVersion  = []byte("version")  // big-endian uint64
	skManifest = []byte("manifest") // marshalManifest
	skSeqs     = []byte("seqs")     // uvarint chunk seq per manifest chunk
	skState    = []byte("state")    // one of the slot states
	sbIndex    = []byte("index")    // record key -> location (appendLoc)
	sbRecv     = []byte("recv")     // staging: batch number (big-endian uint32) -> recvEntry per chunk stored
)

// Slot states. The live slot is the version readers see; a staging slot is
// being filled by a download; an old slot is a replaced version whose
// chunks and index are being dropped.
const (
	slotLive    = 'L'
	slotStaging = 'S'
	slotOld     = 'O'
)

// dataFormat is data.db's own format number: 2 keeps a slot's chunk list
// in pages (pages.go); 1, one value for the whole list, is migrated when
// the file is opened for writing (and read as it is otherwise).
const dataFormat = 2

// dataBuckets are the top-level buckets of a data file.
var dataBuckets = [][]byte{dataMeta, dataChunks, slotNames[0], slotNames[1]}

// initData creates a data file's buckets and checks its format,
// migrating format 1. A file that has them is only read: a commit is two
// fsyncs of the biggest file, which every start of the app would pay.
func initData(db *bolt.DB) error {
	ready, old := false, false
	err := db.View(func(tx *bolt.Tx) error {
		for _, name := range dataBuckets {
			if tx.Bucket(name) == nil {
				return nil
			}
		}
		ready = true
		f := tx.Bucket(dataMeta).Get(dmFormat)
		old = bytes.Equal(f, u64(1))
		if old {
			return nil
		}
		return checkDataFormat(f)
	})
	if err != nil || ready && !old {
		return err
	}
	if old {
		return db.Update(migrateData1)
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range dataBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(dataMeta)
		if f := meta.Get(dmFormat); f != nil {
			return checkDataFormat(f)
		}
		return meta.Put(dmFormat, u64(dataFormat))
	})
}

// checkDataFormat accepts this build's format, and format 1 (read-only
// use reads it as it is).
func checkDataFormat(f []byte) error {
	if len(f) != 8 || binary.BigEndian.Uint64(f) != dataFormat && binary.BigEndian.Uint64(f) != 1 {
		return fmt.Errorf("data format %x, this build reads %d: %w", f, dataFormat, snapshot.ErrUnsupportedVersion)
	}
	return nil
}

// liveSlot returns the live slot's bucket, or nil at version 0.
func liveSlot(tx *bolt.Tx) *bolt.Bucket {
	cur := tx.Bucket(dataMeta).Get(dmCurrent)
	if len(cur) != 1 || cur[0] > 1 {
		return nil
	}
	return tx.Bucket(slotNames[cur[0]])
}

// otherSlot returns the slot that is not live, and its number.
func otherSlot(tx *bolt.Tx) (*bolt.Bucket, byte) {
	cur := tx.Bucket(dataMeta).Get(dmCurrent)
	n := byte(0)
	if len(cur) == 1 && cur[0] == 0 {
		n = 1
	}
	return tx.Bucket(slotNames[n]), n
}

func slotState(b *bolt.Bucket) byte {
	if v := b.Get(skState); len(v) == 1 {
		return v[0]
	}
	return 0
}

// dataView reads the synced version inside one read transaction.
type dataView struct {
	s       *Store
	gen     uint32
	chunks  *bolt.Bucket
	index   *bolt.Bucket // nil at version 0
	version uint64

	// A scan reads each chunk once: it decodes into a buffer of its own
	// (records are copied out) instead of the cache, which it would only
	// fill with chunks no one reads again, and with garbage.
	scanning  bool
	scratch   []byte
	inScratch chunkKey
}

// chunk returns the raw chunk seq of the view's file.
func (v *dataView) chunk(seq uint64) ([]byte, error) {
	if !v.scanning {
		return v.s.loadChunk(v.chunks, v.gen, seq)
	}
	key := chunkKey{v.gen, seq}
	if v.inScratch == key && v.scratch != nil {
		return v.scratch, nil
	}
	if raw := v.s.chunks.cached(key); raw != nil {
		return raw, nil
	}
	stored := v.chunks.Get(u64(seq))
	if stored == nil {
		return nil, fmt.Errorf("stored chunk %d is missing: %w", seq, ErrCorrupt)
	}
	raw, err := v.s.chunks.decodeUncached(seq, stored, v.scratch)
	if err != nil {
		return nil, err
	}
	v.scratch, v.inScratch = raw, key
	return raw, nil
}

func (s *Store) viewData(fn func(v *dataView) error) error {
	return s.viewTx(func(f *dataFile, tx *bolt.Tx) error {
		v := &dataView{s: s, gen: f.gen, chunks: tx.Bucket(dataChunks)}
		if slot := liveSlot(tx); slot != nil {
			v.version = getU64(slot, skVersion)
			v.index = slot.Bucket(sbIndex)
			if v.index == nil {
				return fmt.Errorf("live version %d has no index: %w", v.version, ErrCorrupt)
			}
		}
		return fn(v)
	})
}

// get returns a copy of the synced value of key.
func (v *dataView) get(key []byte) ([]byte, bool, error) {
	if v.index == nil {
		return nil, false, nil
	}
	loc := v.index.Get(key)
	if loc == nil {
		return nil, false, nil
	}
	val, err := v.read(key, loc)
	if err != nil {
		return nil, false, err
	}
	return val, true, nil
}

// read decodes the record at loc, which must be key's, and returns a copy
// of its value.
func (v *dataView) read(key, loc []byte) ([]byte, error) {
	var one [1]uint64
	off, seqs, err := parseLocInto(loc, one[:])
	if err != nil {
		return nil, fmt.Errorf("record %q: %w", key, err)
	}
	raw, err := v.chunk(seqs[0])
	if err != nil {
		return nil, fmt.Errorf("record %q: %w", key, err)
	}
	if off > len(raw) {
		return nil, fmt.Errorf("record %q at %d of a chunk of %d bytes: %w", key, off, len(raw), ErrCorrupt)
	}
	buf := raw[off:]
	owned := len(seqs) > 1
	if owned {
		// A record bigger than a chunk: join its pieces, in a buffer of
		// its size (which is then the copy returned).
		buf = append(make([]byte, 0, max(recordLen(buf), len(buf))), buf...)
		for _, seq := range seqs[1:] {
			piece, err := v.chunk(seq)
			if err != nil {
				return nil, fmt.Errorf("record %q: %w", key, err)
			}
			buf = append(buf, piece...)
		}
	}
	k, val, n, err := snapshot.DecodeRecord(buf)
	if err == nil && (n == 0 || !bytes.Equal(k, key)) {
		err = fmt.Errorf("index points at %q: %w", k, ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("record %q: %w", key, err)
	}
	if owned {
		return val, nil
	}
	return bytes.Clone(val), nil
}

// Version returns the synced version (0: none).
func (s *Store) Version() (uint64, error) {
	var v uint64
	err := s.viewTx(func(_ *dataFile, tx *bolt.Tx) error {
		if slot := liveSlot(tx); slot != nil {
			v = getU64(slot, skVersion)
		}
		return nil
	})
	return v, err
}

// Manifest returns the synced version and its manifest (0 and nil at
// version 0). The manifest is shared with the store (a one-record delta
// of 64 MB would otherwise copy 8,000 chunk entries): the caller must not
// modify it. A manifest that cannot be read returns an error matching
// ErrCorrupt.
func (s *Store) Manifest() (uint64, *snapshot.Manifest, error) {
	var v uint64
	var m *snapshot.Manifest
	var merr error
	err := s.viewTx(func(f *dataFile, tx *bolt.Tx) error {
		if slot := liveSlot(tx); slot != nil {
			v = getU64(slot, skVersion)
			m, _, merr = s.readLive(slot, f.gen, v)
		}
		return nil
	})
	if err != nil || v == 0 {
		return 0, nil, err
	}
	err = merr
	if err == nil && m.Version != v {
		err = fmt.Errorf("manifest of version %d stored for version %d: %w", m.Version, v, ErrCorrupt)
	}
	if err != nil {
		return v, nil, fmt.Errorf("local manifest: %w", err)
	}
	return v, m, nil
}

// NeedFull reports whether the next pull must be a full sync: the local
// version cannot serve as the base of a delta (damage is repaired by
// refetching, never by guessing).
func (s *Store) NeedFull() (bool, error) {
	var on bool
	err := s.viewTx(func(_ *dataFile, tx *bolt.Tx) error {
		on = tx.Bucket(dataMeta).Get(dmNeedFull) != nil
		return nil
	})
	return on, err
}

// SetNeedFull makes the next pull a full sync.
func (s *Store) SetNeedFull() error {
	return s.updateData(func(tx *bolt.Tx) error {
		return tx.Bucket(dataMeta).Put(dmNeedFull, []byte{1})
	})
}

// seqList decodes a slot's chunk sequence numbers.
func seqList(b []byte, want int) ([]uint64, error) {
	out := make([]uint64, 0, want)
	for len(b) > 0 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("chunk list: %w", ErrCorrupt)
		}
		out = append(out, v)
		b = b[n:]
	}
	if len(out) != want {
		return nil, fmt.Errorf("chunk list of %d entries for %d chunks: %w", len(out), want, ErrCorrupt)
	}
	return out, nil
}

// VersionChunks reads chunks of the synced version m (as Manifest
// returned it) by index, each checked against its SHA-256. A chunk that is
// missing or damaged fails with an error matching ErrCorrupt.
func (s *Store) VersionChunks(m *snapshot.Manifest) snapshot.ChunkGetter {
	return versionChunks{s, m}
}

type versionChunks struct {
	s *Store
	m *snapshot.Manifest
}

func (g versionChunks) Chunks(ctx context.Context, idx []int, fn func(i int, raw []byte) error) error {
	return g.s.viewTx(func(f *dataFile, tx *bolt.Tx) error {
		slot := liveSlot(tx)
		if slot == nil || getU64(slot, skVersion) != g.m.Version {
			return fmt.Errorf("version %d is no longer the local version: %w", g.m.Version, ErrCorrupt)
		}
		seqs, err := g.s.liveSeqs(slot, f.gen, g.m.Version, len(g.m.Chunks))
		if err != nil {
			return err
		}
		b := tx.Bucket(dataChunks)
		for _, i := range idx {
			if err := ctx.Err(); err != nil {
				return err
			}
			if i < 0 || i >= len(seqs) {
				return fmt.Errorf("chunk %d of %d: %w", i, len(seqs), ErrInvalid)
			}
			raw, err := g.s.loadChunk(b, f.gen, seqs[i])
			if err == nil && sha256.Sum256(raw) != g.m.Chunks[i].Sum {
				err = fmt.Errorf("stored chunk %d fails its SHA-256: %w", seqs[i], ErrCorrupt)
			}
			if err != nil {
				return &snapshot.ChunkError{Op: "read local", ID: g.m.Chunks[i].ID, Err: err}
			}
			if err := fn(i, raw); err != nil {
				return err
			}
		}
		return nil
	})
}
