package mobile

import (
	"errors"
	"fmt"

	"github.com/deltasync/deltasync/client"
)

// Get returns the value (JSON) of key in the merged view (the synced
// version with this device's pending edits over it), or nil (null) if the
// key has no value.
func (m *Client) Get(key string) ([]byte, error) {
	if err := m.live(); err != nil {
		return nil, err
	}
	v, err := m.c.Get(key)
	if errors.Is(err, client.ErrNotFound) {
		return nil, nil
	}
	return v, err
}

// GetMany returns the records of several keys from one consistent
// snapshot, in the order asked; Found tells which have a value.
func (m *Client) GetMany(keys *KeyList) (*Records, error) {
	if err := m.live(); err != nil {
		return nil, err
	}
	var ks []string
	if keys != nil {
		ks = keys.keys
	}
	recs, err := m.c.GetMany(ks)
	if err != nil {
		return nil, err
	}
	return &Records{recs: recs}, nil
}

// Scan returns a page of at most limit records whose keys start with
// prefix, in key order, after the key startAfter ("" for the first page;
// then pass the page's Last). More reports whether records follow; a page
// stops early once its values pass 4 MiB.
func (m *Client) Scan(prefix, startAfter string, limit int64) (*Records, error) {
	if err := m.live(); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1<<30 {
		return nil, fmt.Errorf("scan %q: limit %d, want 1 to %d: %w", prefix, limit, 1<<30, client.ErrInvalid)
	}
	recs, more, err := m.c.ScanPage(prefix, startAfter, int(limit))
	if err != nil {
		return nil, err
	}
	r := &Records{recs: recs, More: more}
	if len(recs) > 0 {
		r.Last = recs[len(recs)-1].Key
	}
	return r, nil
}

// Count returns the number of keys starting with prefix in the merged
// view.
func (m *Client) Count(prefix string) (int64, error) {
	if err := m.live(); err != nil {
		return 0, err
	}
	n, err := m.c.Count(prefix)
	return int64(n), err
}

// Put queues a whole new value (any JSON) for key. It returns once the
// edit is durable; it never uses the network.
func (m *Client) Put(key string, valueJSON []byte) error {
	if err := m.live(); err != nil {
		return err
	}
	return m.c.Put(key, valueJSON)
}

// Merge queues an RFC 7386 JSON merge patch (a JSON object) for key.
func (m *Client) Merge(key string, patchJSON []byte) error {
	if err := m.live(); err != nil {
		return err
	}
	return m.c.Merge(key, patchJSON)
}

// Delete queues the removal of key.
func (m *Client) Delete(key string) error {
	if err := m.live(); err != nil {
		return err
	}
	return m.c.Delete(key)
}

// DiscardEdits drops the pending edits of key (not yet sent) and returns
// how many: how an app gives up edits after a conflict, or edits that
// cannot be sent (Blocked).
func (m *Client) DiscardEdits(key string) (int64, error) {
	if err := m.live(); err != nil {
		return 0, err
	}
	n, err := m.c.DiscardEdits(key)
	return int64(n), err
}

// RebaseNeeded reports whether pushing waits for Rebase or DiscardEdits
// (the org's reject policy refused conflicting edits).
func (m *Client) RebaseNeeded() bool { return m.live() == nil && m.c.RebaseNeeded() }

// Conflicts returns the conflicts and rejected edits the server reported
// that the app has not acknowledged, oldest first.
func (m *Client) Conflicts() (*Conflicts, error) {
	if err := m.live(); err != nil {
		return nil, err
	}
	cs, err := m.c.Conflicts()
	if err != nil {
		return nil, err
	}
	return &Conflicts{list: cs}, nil
}

// AckConflictsThrough removes the conflicts with ID <= id (all of them if
// id is negative).
func (m *Client) AckConflictsThrough(id int64) error {
	if err := m.live(); err != nil {
		return err
	}
	return m.c.AckConflictsThrough(id)
}

// Blocked returns the pending edits that cannot be sent under the
// organization's limits (kept until discarded or the limit is raised).
func (m *Client) Blocked() *BlockedEdits { return &BlockedEdits{list: m.c.Blocked()} }

// Policy returns the organization's offline policy as last received.
func (m *Client) Policy() *Policy {
	p := m.c.Policy()
	return &Policy{
		OfflineMode: p.OfflineMode, ConflictPolicy: p.ConflictPolicy,
		MaxOfflineSeconds: p.MaxOfflineSeconds, MaxPendingBytes: p.MaxPendingBytes,
		MaxPatchOps: int64(p.MaxPatchOps), MaxPatchBytes: p.MaxPatchBytes, MaxRecordBytes: p.MaxRecordBytes,
		MaxBlobBytes: p.MaxBlobBytes, EagerBlobBytes: p.EagerBlobBytes,
	}
}

// KeyList is a list of keys for GetMany.
type KeyList struct{ keys []string }

// NewKeyList returns an empty list.
func NewKeyList() *KeyList { return &KeyList{} }

// Add appends a key.
func (l *KeyList) Add(key string) { l.keys = append(l.keys, key) }

// Len returns the number of keys.
func (l *KeyList) Len() int64 { return int64(len(l.keys)) }

// Records is a list of records (Scan, GetMany). Getters return the zero
// value for an index out of range.
type Records struct {
	recs []client.Record
	// More reports, for Scan, that records follow this page.
	More bool
	// Last is, for Scan, the last key of the page: the next page's
	// startAfter ("" for an empty page).
	Last string
}

// Len returns the number of records.
func (r *Records) Len() int64 { return int64(len(r.recs)) }

func (r *Records) at(i int64) *client.Record {
	if i < 0 || i >= int64(len(r.recs)) {
		return nil
	}
	return &r.recs[i]
}

// Key returns the i-th key.
func (r *Records) Key(i int64) string {
	if rec := r.at(i); rec != nil {
		return rec.Key
	}
	return ""
}

// Value returns the i-th value (JSON), nil if the key has none (GetMany).
func (r *Records) Value(i int64) []byte {
	if rec := r.at(i); rec != nil {
		return rec.Value
	}
	return nil
}

// Found reports whether the i-th key has a value.
func (r *Records) Found(i int64) bool { return r.Value(i) != nil }

// Conflict is a conflict or rejected edit the server reported.
type Conflict struct {
	ID          int64  // increasing; see AckConflictsThrough
	PatchID     string // the patch that carried the edit
	Key         string
	Op          string // put, merge or delete
	Policy      string // how it was resolved
	ClientValue []byte // JSON this device wrote (nil for a delete)
	ServerValue []byte // JSON the server held (nil if absent)
	AtMillis    int64  // unix milliseconds
	Status      string // "conflict" or "rejected"
	Won         bool   // this device's edit took effect
	Fields      string // conflicting field paths, comma-separated
	Reason      string // why the server rejected the edit
	Pending     bool   // still queued: see Rebase and DiscardEdits
}

// Conflicts is a list of conflicts.
type Conflicts struct{ list []client.Conflict }

// Len returns the number of conflicts.
func (c *Conflicts) Len() int64 { return int64(len(c.list)) }

// At returns the i-th conflict (0 is the oldest), nil out of range.
func (c *Conflicts) At(i int64) *Conflict {
	if i < 0 || i >= int64(len(c.list)) {
		return nil
	}
	cf := c.list[i]
	return &Conflict{
		ID: cf.ID, PatchID: cf.PatchID, Key: cf.Key, Op: cf.Op, Policy: cf.Policy,
		ClientValue: cf.ClientValue, ServerValue: cf.ServerValue, AtMillis: cf.At,
		Status: cf.Status, Won: cf.Won, Fields: cf.Fields, Reason: cf.Reason, Pending: cf.Pending,
	}
}

// BlockedEdit is a pending edit that cannot be sent under the
// organization's limits.
type BlockedEdit struct {
	Key      string
	Op       string // put or merge
	Bytes    int64  // size of its value or merge patch
	Reason   string
	AtMillis int64 // unix milliseconds, when it was made
	Waiting  int64 // later edits of the key held back behind it
}

// BlockedEdits is a list of blocked edits.
type BlockedEdits struct{ list []client.BlockedEdit }

// Len returns the number of blocked edits.
func (b *BlockedEdits) Len() int64 { return int64(len(b.list)) }

// At returns the i-th blocked edit, nil out of range.
func (b *BlockedEdits) At(i int64) *BlockedEdit {
	if i < 0 || i >= int64(len(b.list)) {
		return nil
	}
	e := b.list[i]
	return &BlockedEdit{Key: e.Key, Op: e.Op, Bytes: e.Bytes, Reason: e.Reason, AtMillis: e.At, Waiting: int64(e.Waiting)}
}

// Policy is the organization's offline policy.
type Policy struct {
	OfflineMode       bool   // offline sync is enabled for the org
	ConflictPolicy    string // client-wins, server-wins or reject
	MaxOfflineSeconds int64  // 0: no limit
	MaxPendingBytes   int64  // 0: no limit
	MaxPatchOps       int64
	MaxPatchBytes     int64
	MaxRecordBytes    int64
	MaxBlobBytes      int64 // the largest blob Attach accepts
	EagerBlobBytes    int64 // blobs up to this size are downloaded at sync, bigger ones by Blob
}
