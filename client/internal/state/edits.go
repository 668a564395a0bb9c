package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/diff"
)

// Buckets of state.db (the same as format 1 had, less records and chunks).
var (
	bucketMeta      = []byte("meta")      // settings and counters, see the Meta* keys
	bucketQueue     = []byte("queue")     // seq (big-endian uint64) -> Edit JSON, pending
	bucketSent      = []byte("sent")      // seq -> Edit JSON, applied by the server, not yet pulled
	bucketEditIndex = []byte("editindex") // key 0x00 seq -> nothing; edits of queue and sent by key
	bucketInflight  = []byte("inflight")  // "patch" -> Inflight JSON
	bucketConflicts = []byte("conflicts") // conflict id (big-endian uint64) -> conflict JSON
)

var editBuckets = [][]byte{bucketMeta, bucketQueue, bucketSent, bucketEditIndex, bucketInflight, bucketConflicts}

// Keys of state.db's meta bucket. Values are the client's to define, but
// for the uint64s this package keeps (format, edit seq, conflict id).
const (
	MetaServerURL  = "server_url"    // string
	MetaToken      = "token"         // string
	MetaOffline    = "offline"       // 1 byte: offline mode on
	MetaPolicy     = "policy"        // wire.Policy JSON
	MetaCounters   = "counters"      // counters JSON
	MetaLastResult = "last_result"   // SyncResult JSON
	MetaRebase     = "rebase_needed" // set: pushing waits for Rebase
	MetaBlocked    = "blocked_edits" // JSON seq -> reason: edits a server refused alone
	MetaWiped      = "wiped"         // set: a Wipe sealed the state; the next Open removes it
)

var (
	metaFormat     = []byte("format")      // state format, big-endian uint64
	metaEditSeq    = []byte("edit_seq")    // last assigned edit seq
	metaConflictID = []byte("conflict_id") // last assigned conflict id
	inflightKey    = []byte("patch")
)

// Edit operations.
const (
	OpPut    = diff.OpPut
	OpMerge  = diff.OpMerge
	OpDelete = diff.OpDelete
)

// Edit is one change made on this device, stored as JSON in the queue (and,
// once the server applied it, among the sent edits until the version
// holding it is installed).
type Edit struct {
	Seq   uint64          `json:"seq"`
	Op    string          `json:"op"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value,omitempty"` // put: canonical JSON
	Patch json.RawMessage `json:"patch,omitempty"` // merge: canonical JSON object
	At    int64           `json:"at"`              // unix milliseconds
	// Version is set only on sent edits: the server version that contains
	// the edit. Until a version at least this new is installed, the edit is
	// still laid over the synced records so the app never sees it vanish.
	Version uint64 `json:"version,omitempty"`
}

// PatchOp is the edit as a patch op, with the device's time of the edit
// (At), which the backend sees in the change feed.
func (e *Edit) PatchOp() diff.Op {
	return diff.Op{Op: e.Op, Key: e.Key, Value: e.Value, Patch: e.Patch, At: e.At}
}

func decodeEdit(raw []byte) (*Edit, error) {
	var e Edit
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("queued edit: %v: %w", err, ErrCorrupt)
	}
	return &e, nil
}

// Inflight is the patch being pushed. It is persisted before the first
// send, so every retry (also after a restart) sends the same id with the
// same edits against the same base, and the server applies it once.
type Inflight struct {
	ID      string   `json:"id"`
	Base    uint64   `json:"base"`    // local version when the patch was formed
	Seqs    []uint64 `json:"seqs"`    // queue seqs, ascending
	Created int64    `json:"created"` // unix milliseconds
	// Seen is diff.Patch.Seen, fixed with the id so that a resent patch
	// is byte for byte the same.
	Seen map[string]string `json:"seen,omitempty"`
}

// indexKey is key 0x00 seq. Keys never contain NUL, so index entries sort
// by key (bytewise, like the records) and then by seq.
func indexKey(key string, seq uint64) []byte {
	b := make([]byte, 0, len(key)+9)
	b = append(b, key...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, seq)
}

// splitIndexKey returns the record key and the seq bytes of an index entry.
func splitIndexKey(k []byte) (key, seq []byte) {
	i := bytes.IndexByte(k, 0)
	if i < 0 || len(k)-i-1 != 8 {
		return nil, nil
	}
	return k[:i], k[i+1:]
}

// EditsTx is a transaction on state.db: the queue, the sent edits, the
// patch in flight, conflicts and settings change together or not at all.
// It never waits for an install, which writes data.db.
type EditsTx struct {
	s  *Store
	tx *bolt.Tx
}

// ViewEdits runs fn in a read transaction of state.db.
func (s *Store) ViewEdits(fn func(tx *EditsTx) error) error {
	return s.edits.View(func(tx *bolt.Tx) error { return fn(&EditsTx{s, tx}) })
}

// UpdateEdits runs fn in a write transaction of state.db, durable (fsync'd)
// when it returns nil.
func (s *Store) UpdateEdits(fn func(tx *EditsTx) error) error {
	return s.edits.Update(func(tx *bolt.Tx) error { return fn(&EditsTx{s, tx}) })
}

// ID is the transaction's id: later write transactions have larger ones.
func (t *EditsTx) ID() int { return t.tx.ID() }

// Meta returns a copy of a meta value (nil if unset).
func (t *EditsTx) Meta(key string) []byte {
	return bytes.Clone(t.tx.Bucket(bucketMeta).Get([]byte(key)))
}

// SetMeta stores a meta value; nil deletes it.
func (t *EditsTx) SetMeta(key string, value []byte) error {
	if value == nil {
		return t.tx.Bucket(bucketMeta).Delete([]byte(key))
	}
	return t.tx.Bucket(bucketMeta).Put([]byte(key), value)
}

// Meta returns a copy of one meta value of state.db (nil if unset).
func (s *Store) Meta(key string) ([]byte, error) {
	var out []byte
	err := s.ViewEdits(func(tx *EditsTx) error { out = tx.Meta(key); return nil })
	return out, err
}

// SetMeta stores (or with nil deletes) one meta value durably.
func (s *Store) SetMeta(key string, value []byte) error {
	return s.UpdateEdits(func(tx *EditsTx) error { return tx.SetMeta(key, value) })
}

// Enqueue assigns e the next seq and appends it to the queue, indexed by
// key. It returns the stored size.
func (t *EditsTx) Enqueue(e *Edit) (int, error) {
	meta := t.tx.Bucket(bucketMeta)
	e.Seq = getU64(meta, metaEditSeq) + 1
	if err := meta.Put(metaEditSeq, u64(e.Seq)); err != nil {
		return 0, err
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return 0, err
	}
	if err := t.tx.Bucket(bucketQueue).Put(u64(e.Seq), raw); err != nil {
		return 0, err
	}
	return len(raw), t.tx.Bucket(bucketEditIndex).Put(indexKey(e.Key, e.Seq), []byte{})
}

// Queued returns the queued edit seq and its stored size; nil if it is
// not queued.
func (t *EditsTx) Queued(seq uint64) (*Edit, int, error) {
	raw := t.tx.Bucket(bucketQueue).Get(u64(seq))
	if raw == nil {
		return nil, 0, nil
	}
	e, err := decodeEdit(raw)
	return e, len(raw), err
}

// ForEachQueued calls fn with every queued edit (and its stored size) in
// queue order.
func (t *EditsTx) ForEachQueued(fn func(e *Edit, size int) error) error {
	return t.tx.Bucket(bucketQueue).ForEach(func(_, raw []byte) error {
		e, err := decodeEdit(raw)
		if err != nil {
			return err
		}
		return fn(e, len(raw))
	})
}

// QueueLen counts the queued edits (by walking: Bucket.Stats does not see
// a write transaction's own changes).
func (t *EditsTx) QueueLen() int {
	n := 0
	c := t.tx.Bucket(bucketQueue).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}

// ForEachSent calls fn with every sent edit in seq order.
func (t *EditsTx) ForEachSent(fn func(e *Edit) error) error {
	return t.tx.Bucket(bucketSent).ForEach(func(_, raw []byte) error {
		e, err := decodeEdit(raw)
		if err != nil {
			return err
		}
		return fn(e)
	})
}

// editsOf returns the edits of key (queued and sent, in seq order) with a
// seq below before.
func (t *EditsTx) editsOf(key string, before uint64) ([]*Edit, error) {
	var out []*Edit
	prefix := append([]byte(key), 0)
	cur := t.tx.Bucket(bucketEditIndex).Cursor()
	for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
		seq := k[len(prefix):]
		if len(seq) != 8 {
			return nil, fmt.Errorf("edit index entry %q: %w", k, ErrCorrupt)
		}
		if binary.BigEndian.Uint64(seq) >= before {
			break
		}
		e, err := t.indexedEdit(seq)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// indexedEdit finds the edit with the given seq in the queue or among the
// sent edits.
func (t *EditsTx) indexedEdit(seq []byte) (*Edit, error) {
	raw := t.tx.Bucket(bucketQueue).Get(seq)
	if raw == nil {
		raw = t.tx.Bucket(bucketSent).Get(seq)
	}
	if raw == nil {
		return nil, fmt.Errorf("edit index names missing edit %x: %w", seq, ErrCorrupt)
	}
	return decodeEdit(raw)
}

// Complete takes queued edit seq out of the queue: to the sent edits,
// marked with version, when sentVersion > 0 (it stays laid over the synced
// records until that version is installed), otherwise out of the view.
// It returns the edit and its stored size.
func (t *EditsTx) Complete(seq, sentVersion uint64) (*Edit, int, error) {
	q := t.tx.Bucket(bucketQueue)
	k := u64(seq)
	raw := q.Get(k)
	if raw == nil {
		return nil, 0, fmt.Errorf("edit %d is not queued: %w", seq, ErrCorrupt)
	}
	e, err := decodeEdit(raw)
	if err != nil {
		return nil, 0, err
	}
	size := len(raw)
	if err := q.Delete(k); err != nil {
		return nil, 0, err
	}
	if sentVersion == 0 {
		return e, size, t.tx.Bucket(bucketEditIndex).Delete(indexKey(e.Key, seq))
	}
	e.Version = sentVersion
	b, err := json.Marshal(e)
	if err != nil {
		return nil, 0, err
	}
	return e, size, t.tx.Bucket(bucketSent).Put(k, b)
}

// DiscardQueued drops the queued edits of key whose seq skip does not
// hold (the patch in flight), returning how many and their stored size.
func (t *EditsTx) DiscardQueued(key string, skip func(seq uint64) bool) (int, int64, []uint64, error) {
	q, idx := t.tx.Bucket(bucketQueue), t.tx.Bucket(bucketEditIndex)
	prefix := append([]byte(key), 0)
	var drop [][]byte
	var seqs []uint64
	var size int64
	cur := idx.Cursor()
	for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
		seq := k[len(prefix):]
		v := q.Get(seq)
		if v == nil || len(seq) != 8 || skip(binary.BigEndian.Uint64(seq)) {
			continue // sent (laid over until pulled) or in flight
		}
		size += int64(len(v))
		drop = append(drop, bytes.Clone(k))
		seqs = append(seqs, binary.BigEndian.Uint64(seq))
	}
	for _, k := range drop {
		if err := q.Delete(k[len(prefix):]); err != nil {
			return 0, 0, nil, err
		}
		if err := idx.Delete(k); err != nil {
			return 0, 0, nil, err
		}
	}
	return len(drop), size, seqs, nil
}

// DropSentThrough removes the sent edits that version v contains.
func (t *EditsTx) DropSentThrough(v uint64) error {
	sent, idx := t.tx.Bucket(bucketSent), t.tx.Bucket(bucketEditIndex)
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

// DropSentThrough removes, in a transaction of its own, the sent edits
// that version v contains. Reads already ignore them (a version that holds
// an edit shows it): this only tidies up after an install.
func (s *Store) DropSentThrough(v uint64) error {
	any := false
	err := s.ViewEdits(func(tx *EditsTx) error {
		k, _ := tx.tx.Bucket(bucketSent).Cursor().First()
		any = k != nil
		return nil
	})
	if err != nil || !any {
		return err
	}
	return s.UpdateEdits(func(tx *EditsTx) error { return tx.DropSentThrough(v) })
}

// Inflight returns the patch in flight (nil if none).
func (t *EditsTx) Inflight() (*Inflight, error) {
	raw := t.tx.Bucket(bucketInflight).Get(inflightKey)
	if raw == nil {
		return nil, nil
	}
	p := new(Inflight)
	if err := json.Unmarshal(raw, p); err != nil {
		return nil, fmt.Errorf("patch in flight: %v: %w", err, ErrCorrupt)
	}
	return p, nil
}

// SetInflight persists p as the patch in flight; nil clears it.
func (t *EditsTx) SetInflight(p *Inflight) error {
	b := t.tx.Bucket(bucketInflight)
	if p == nil {
		return b.Delete(inflightKey)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return b.Put(inflightKey, raw)
}

// AddConflict stores a conflict under the next id; encode returns its
// JSON given the id.
func (t *EditsTx) AddConflict(encode func(id uint64) ([]byte, error)) error {
	meta := t.tx.Bucket(bucketMeta)
	id := getU64(meta, metaConflictID) + 1
	if err := meta.Put(metaConflictID, u64(id)); err != nil {
		return err
	}
	raw, err := encode(id)
	if err != nil {
		return err
	}
	return t.tx.Bucket(bucketConflicts).Put(u64(id), raw)
}

// ForEachConflict calls fn with every stored conflict's JSON, oldest
// first, until fn returns false.
func (t *EditsTx) ForEachConflict(fn func(raw []byte) (bool, error)) error {
	cur := t.tx.Bucket(bucketConflicts).Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		if more, err := fn(v); err != nil || !more {
			return err
		}
	}
	return nil
}

// AckConflictsThrough removes the conflicts with an id up to id (all of
// them if id is negative) and returns how many are left.
func (t *EditsTx) AckConflictsThrough(id int64) (int, error) {
	b := t.tx.Bucket(bucketConflicts)
	cur := b.Cursor()
	for k, _ := cur.First(); k != nil; k, _ = cur.First() {
		if id >= 0 && binary.BigEndian.Uint64(k) > uint64(id) {
			break
		}
		if err := b.Delete(bytes.Clone(k)); err != nil {
			return 0, err
		}
	}
	return t.ConflictCount(), nil
}

// ConflictCount counts the stored conflicts (by walking: Bucket.Stats
// does not see a write transaction's own changes).
func (t *EditsTx) ConflictCount() int {
	n := 0
	c := t.tx.Bucket(bucketConflicts).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}
