package mobile

import "github.com/deltasync/deltasync/client"

// States of Status.State.
const (
	StateSyncing = client.StateSyncing
	StateSynced  = client.StateSynced
	StateOffline = client.StateOffline
	StateError   = client.StateError
)

// Reasons of Status.Reason (offline and error states).
const (
	ReasonNone         = client.ReasonNone
	ReasonNoConnection = client.ReasonNoConnection
	ReasonOfflineMode  = client.ReasonOfflineMode
	ReasonAuth         = client.ReasonAuth
	ReasonPolicy       = client.ReasonPolicy
	ReasonServer       = client.ReasonServer
	ReasonBlocked      = client.ReasonBlocked
	ReasonStorage      = client.ReasonStorage
)

// Sources of Change.Source.
const (
	ChangeServer = client.ChangeServer // a new version from the server
	ChangeLocal  = client.ChangeLocal  // an edit on this device, or one that left the view
)

// Status is what a status bar shows.
type Status struct {
	State   string // StateSyncing, StateSynced, StateOffline or StateError
	Reason  string // for offline and error: a Reason constant
	Message string // human-readable detail ("…; retrying in 8 s")

	LocalVersion int64 // version of the records on this device
	ServerHead   int64 // newest version the server announced (0: unknown)

	PendingEdits int64 // edits not yet applied by the server
	PendingBytes int64
	BlockedEdits int64 // pending edits that cannot be sent (see Blocked)
	Conflicts    int64 // conflicts not yet acknowledged

	BytesDownSinceOnline int64 // traffic (bodies) since the last outage ended
	BytesUpSinceOnline   int64
	BytesDownTotal       int64
	BytesUpTotal         int64

	LastSyncedUnix  int64 // when a sync last completed (0: never)
	LastContactUnix int64 // when the server last answered with success
	NextRetryUnix   int64 // when background sync retries after a failure (0: none)

	ProgressBytesDone   int64 // a running download, of the totals announced
	ProgressBytesTotal  int64
	ProgressChunksDone  int64
	ProgressChunksTotal int64

	PendingBlobs     int64 // blobs attached here and not yet uploaded (see Attach)
	PendingBlobBytes int64
}

func statusOf(s client.Status) *Status {
	return &Status{
		State: s.State, Reason: s.Reason, Message: s.Message,
		LocalVersion: int64(s.LocalVersion), ServerHead: int64(s.ServerHead),
		PendingEdits: int64(s.PendingEdits), PendingBytes: s.PendingBytes,
		BlockedEdits: int64(s.BlockedEdits), Conflicts: int64(s.Conflicts),
		BytesDownSinceOnline: s.BytesDownSinceOnline, BytesUpSinceOnline: s.BytesUpSinceOnline,
		BytesDownTotal: s.BytesDownTotal, BytesUpTotal: s.BytesUpTotal,
		LastSyncedUnix: s.LastSyncedUnix, LastContactUnix: s.LastContactUnix, NextRetryUnix: s.NextRetryUnix,
		ProgressBytesDone: s.ProgressBytesDone, ProgressBytesTotal: s.ProgressBytesTotal,
		ProgressChunksDone: int64(s.ProgressChunksDone), ProgressChunksTotal: int64(s.ProgressChunksTotal),
		PendingBlobs: int64(s.PendingBlobs), PendingBlobBytes: s.PendingBlobBytes,
	}
}

// Status returns the current status.
func (m *Client) Status() *Status { return statusOf(m.c.Status()) }

// StatusListener is implemented by the app to follow the status.
type StatusListener interface {
	// OnStatus is called with each new status, one call at a time, in
	// order, on a Go thread.
	OnStatus(s *Status)
}

// AddStatusListener registers l and returns its id for
// RemoveStatusListener.
func (m *Client) AddStatusListener(l StatusListener) int64 {
	if l == nil {
		return 0
	}
	return int64(m.c.OnStatus(func(s client.Status) { l.OnStatus(statusOf(s)) }))
}

// RemoveStatusListener unregisters a status listener; once it returns,
// the listener is not called again.
func (m *Client) RemoveStatusListener(id int64) { m.c.RemoveStatusListener(int(id)) }

// SyncResult tells what one Sync, Pull, Push or Rebase did.
type SyncResult struct {
	Version        int64 // local version afterwards
	ServerHead     int64
	UpToDate       bool // the pull found nothing new
	Full           bool // the pull replaced every record
	Resumed        bool // the pull resumed an interrupted download
	BytesDown      int64
	BytesUp        int64
	ChunksFetched  int64
	ChunksReused   int64
	RecordsChanged int64
	EditsSent      int64
	EditsApplied   int64
	EditsConflict  int64
	EditsRejected  int64
	EditsBlocked   int64
	Patches        int64
	Pending        int64  // edits still waiting
	State          string // Status().State afterwards
}

func syncResultOf(r *client.SyncResult) *SyncResult {
	return &SyncResult{
		Version: int64(r.Version), ServerHead: int64(r.ServerHead),
		UpToDate: r.UpToDate, Full: r.Full, Resumed: r.Resumed,
		BytesDown: r.BytesDown, BytesUp: r.BytesUp,
		ChunksFetched: int64(r.ChunksFetched), ChunksReused: int64(r.ChunksReused), RecordsChanged: int64(r.RecordsChanged),
		EditsSent: int64(r.EditsSent), EditsApplied: int64(r.EditsApplied), EditsConflict: int64(r.EditsConflict),
		EditsRejected: int64(r.EditsRejected), EditsBlocked: int64(r.EditsBlocked), Patches: int64(r.Patches),
		Pending: int64(r.Pending), State: r.State,
	}
}

// Change tells which keys of the merged view changed, so a UI refreshes
// only those lists and rows.
type Change struct {
	Source  string // ChangeServer or ChangeLocal
	Version int64  // the local version after the change
	// Full: a full sync (the first one, or a repair), or a delta too large
	// to list; reload everything.
	Full bool
	// Total is the number of keys changed; KeyCount is less when the
	// change is too large to list its keys (see the collections).
	Total int64

	keys  []string
	colls []client.CollectionCount
}

// KeyCount returns how many keys are listed (0 for a large change).
func (c *Change) KeyCount() int64 { return int64(len(c.keys)) }

// Key returns the i-th changed key, in key order ("" out of range).
func (c *Change) Key(i int64) string {
	if i < 0 || i >= int64(len(c.keys)) {
		return ""
	}
	return c.keys[i]
}

// CollectionCount returns how many collections the change touched (a
// collection is the key up to its first '/'; "" for keys without one).
func (c *Change) CollectionCount() int64 { return int64(len(c.colls)) }

// CollectionName returns the i-th collection, in name order.
func (c *Change) CollectionName(i int64) string {
	if i < 0 || i >= int64(len(c.colls)) {
		return ""
	}
	return c.colls[i].Name
}

// CollectionChanges returns how many keys of the i-th collection changed.
func (c *Change) CollectionChanges(i int64) int64 {
	if i < 0 || i >= int64(len(c.colls)) {
		return 0
	}
	return int64(c.colls[i].Count)
}

// ChangeListener is implemented by the app to refresh what changed.
type ChangeListener interface {
	// OnChange is called for each installed version and each local edit,
	// one call at a time, in order, on a Go thread.
	OnChange(c *Change)
}

// AddChangeListener registers l and returns its id for
// RemoveChangeListener.
func (m *Client) AddChangeListener(l ChangeListener) int64 {
	if l == nil {
		return 0
	}
	return int64(m.c.OnChange(func(ch client.Change) {
		l.OnChange(&Change{Source: ch.Source, Version: int64(ch.Version), Full: ch.Full,
			Total: int64(ch.Total), keys: ch.Keys, colls: ch.Collections})
	}))
}

// RemoveChangeListener unregisters a change listener.
func (m *Client) RemoveChangeListener(id int64) { m.c.RemoveChangeListener(int(id)) }
