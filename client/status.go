package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deltasync/deltasync/client/internal/blobstore"
	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/wire"
)

// States of Status.State.
const (
	StateSyncing = "syncing"
	StateSynced  = "synced"
	StateOffline = "offline"
	StateError   = "error"
)

// Reasons of Status.Reason: why the client is offline or in error.
const (
	ReasonNone         = ""
	ReasonNoConnection = "no_connection"
	ReasonOfflineMode  = "offline_mode"
	ReasonAuth         = "auth"
	ReasonPolicy       = "policy"
	ReasonServer       = "server"
	// ReasonBlocked: pending edits cannot be sent under the organization's
	// limits (see Client.Blocked); they wait until discarded or the limit
	// is raised. Everything else is in sync.
	ReasonBlocked = "blocked"
	// ReasonStorage: this device's storage failed (full, read-only, I/O
	// error): the state could not be written. The user must free space;
	// the server is not at fault. Retried like an error someone must fix.
	ReasonStorage = "storage"
)

// Status is what a status bar or settings page shows. All fields are plain
// values so that it binds with gomobile.
type Status struct {
	State   string // StateSyncing, StateSynced, StateOffline or StateError
	Reason  string // for offline and error: one of the Reason constants
	Message string // human-readable detail

	LocalVersion uint64 // version of the synced records on this device
	ServerHead   uint64 // newest version the server announced (0: unknown)

	PendingEdits int   // edits not yet applied by the server
	PendingBytes int64 // their size as queued

	BytesDownSinceOnline int64 // traffic of the current (or last) online period
	BytesUpSinceOnline   int64
	BytesDownTotal       int64 // traffic over the life of this state directory
	BytesUpTotal         int64
	LastSyncedUnix       int64 // when a sync last completed (0: never)
	// LastContactUnix is when the server last answered a request with
	// success (0: never); the org's MaxOfflineSeconds counts from it.
	LastContactUnix int64
	// NextRetryUnix is when the background loop tries again after a
	// failure (0: no retry scheduled); Message says "retrying in N s".
	NextRetryUnix int64

	Conflicts int // conflicts not yet acknowledged
	// BlockedEdits counts pending edits that cannot be sent under the
	// organization's limits (see Client.Blocked), with the later edits of
	// their records waiting behind them. They are part of PendingEdits.
	BlockedEdits int

	// Progress of a running download, from the totals the manifest announces.
	ProgressBytesDone   int64
	ProgressBytesTotal  int64
	ProgressChunksDone  int
	ProgressChunksTotal int

	// PendingBlobs are blobs attached on this device and not yet uploaded,
	// PendingBlobBytes their size (see Client.Attach).
	PendingBlobs     int
	PendingBlobBytes int64
}

// counters are the persisted part of the status (meta "counters"): the
// traffic, and the last known state, which a new process reports until it
// has talked to the server.
type counters struct {
	DownSinceOnline int64  `json:"down_since_online"`
	UpSinceOnline   int64  `json:"up_since_online"`
	DownTotal       int64  `json:"down_total"`
	UpTotal         int64  `json:"up_total"`
	LastSyncedUnix  int64  `json:"last_synced_unix"`
	LastContactUnix int64  `json:"last_contact_unix,omitempty"`
	ServerHead      uint64 `json:"server_head"`
	// The last settled state (synced, error, or offline for want of a
	// connection); never syncing, which only a running process can be.
	State   string `json:"state,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

type listener struct {
	id int
	fn func(Status)
}

// statusState holds everything Status is computed from, plus the listeners.
type statusState struct {
	mu sync.Mutex

	state, reason, message string
	offline                bool
	policy                 wire.Policy
	localVersion           uint64
	pendingEdits           int
	pendingBytes           int64
	conflicts              int
	blocked                blockedSet
	progBytesDone          int64
	progBytesTotal         int64
	progChunksDone         int
	progChunksTotal        int
	c                      counters
	dirty                  bool      // c changed since last persisted
	retryAt                time.Time // the loop's next attempt after a failure (zero: none)
	attempting             bool      // an attempt began (beginSync); syncing once the server answers
	now                    func() time.Time

	blobs      *blobstore.Store // for the pending blob counts (blobs.go)
	listeners  []listener
	nextID     int
	last       Status
	haveLast   bool
	queue      []Status
	delivering bool
}

// loadStatus fills the status from the state at Open.
func (c *Client) loadStatus() error {
	s := &c.st
	v, err := c.store.Version()
	if err != nil {
		return err
	}
	s.localVersion = v
	return c.store.ViewEdits(func(tx *state.EditsTx) error {
		if v := tx.Meta(state.MetaOffline); len(v) == 1 && v[0] == 1 {
			s.offline = true
		}
		if v := tx.Meta(state.MetaPolicy); v != nil {
			if err := json.Unmarshal(v, &s.policy); err != nil {
				return fmt.Errorf("stored policy: %v: %w", err, ErrCorrupt)
			}
		}
		if v := tx.Meta(state.MetaCounters); v != nil {
			if err := json.Unmarshal(v, &s.c); err != nil {
				return fmt.Errorf("stored counters: %v: %w", err, ErrCorrupt)
			}
		}
		if err := tx.ForEachQueued(func(_ *edit, size int) error {
			s.pendingEdits++
			s.pendingBytes += int64(size)
			return nil
		}); err != nil {
			return err
		}
		s.conflicts = tx.ConflictCount()
		var err error
		if s.blocked, err = scanBlocked(tx, s.policy.Limits()); err != nil {
			return err
		}
		// Until this process talks to the server, the last known state.
		s.state, s.reason, s.message = s.c.State, s.c.Reason, s.c.Message
		if s.state == "" {
			s.state, s.reason, s.message = StateSyncing, ReasonNone, "not synced yet"
		}
		if s.offline {
			// As when the switch is turned on: underneath it, offline, so
			// turning it off ends an outage (a new online period).
			s.state, s.reason, s.message = StateOffline, ReasonOfflineMode, "offline mode is on"
		}
		return nil
	})
}

// Status returns the current status.
func (c *Client) Status() Status {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return c.st.snapshotLocked()
}

func (s *statusState) snapshotLocked() Status {
	st := Status{
		State:                s.state,
		Reason:               s.reason,
		Message:              s.message,
		LocalVersion:         s.localVersion,
		ServerHead:           s.c.ServerHead,
		PendingEdits:         s.pendingEdits,
		PendingBytes:         s.pendingBytes,
		BytesDownSinceOnline: s.c.DownSinceOnline,
		BytesUpSinceOnline:   s.c.UpSinceOnline,
		BytesDownTotal:       s.c.DownTotal,
		BytesUpTotal:         s.c.UpTotal,
		LastSyncedUnix:       s.c.LastSyncedUnix,
		LastContactUnix:      s.c.LastContactUnix,
		Conflicts:            s.conflicts,
		BlockedEdits:         s.blocked.count,
		ProgressBytesDone:    s.progBytesDone,
		ProgressBytesTotal:   s.progBytesTotal,
		ProgressChunksDone:   s.progChunksDone,
		ProgressChunksTotal:  s.progChunksTotal,
	}
	if s.blobs != nil {
		st.PendingBlobBytes, st.PendingBlobs = s.blobs.PendingBytes()
	}
	now := s.clock()
	if s.offline {
		// The switch wins over whatever the sync loop last reported: with
		// it on, there is no network use to report on.
		st.State, st.Reason, st.Message = StateOffline, ReasonOfflineMode, "offline mode is on"
	} else if !s.retryAt.IsZero() && (st.State == StateOffline || st.State == StateError) {
		st.NextRetryUnix = s.retryAt.Unix()
		wait := max(0, s.retryAt.Sub(now).Round(time.Second))
		st.Message += fmt.Sprintf("; retrying in %d s", int64(wait/time.Second))
	}
	if st.State == StateOffline {
		// Offline beyond what the org allows: say so, and why.
		if msg := s.policyViolationLocked(now); msg != "" {
			st.State, st.Reason, st.Message = StateError, ReasonPolicy, msg
		}
	}
	if st.State == StateSynced && s.blocked.count > 0 {
		// In sync but for edits that cannot be sent: the app must show
		// them (and let the user discard them), not a green tick.
		st.State, st.Reason, st.Message = StateError, ReasonBlocked, s.blockedMessageLocked()
	}
	return st
}

// clock is the status's notion of now (tests inject one).
func (s *statusState) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

// policyViolationLocked explains which limit of the org's offline policy
// this device is over ("" if none): more pending bytes than
// MaxPendingBytes, or (while known to be offline: a failed attempt, or
// offline mode) longer than MaxOfflineSeconds since the last successful
// contact with the server. A state that a new process loaded is not known
// to be offline until an attempt fails. These limits are the device's to
// show: edits are still accepted, kept and sent when the device connects,
// and the server does not refuse them (see wire.Policy).
func (s *statusState) policyViolationLocked(now time.Time) string {
	p := s.policy
	if p.MaxPendingBytes > 0 && s.pendingBytes > p.MaxPendingBytes {
		return fmt.Sprintf("%d bytes of edits wait to be sent, more than the %d your organization allows: connect to send them",
			s.pendingBytes, p.MaxPendingBytes)
	}
	contact := s.c.LastContactUnix
	if contact == 0 {
		contact = s.c.LastSyncedUnix // state from before contacts were recorded
	}
	online := s.state == StateSynced || s.state == StateSyncing
	if p.MaxOfflineSeconds > 0 && contact > 0 && (!online || s.offline) {
		if off := now.Unix() - contact; off > p.MaxOfflineSeconds {
			return fmt.Sprintf("offline for %s, longer than the %s your organization allows: connect to sync",
				time.Duration(off)*time.Second, time.Duration(p.MaxOfflineSeconds)*time.Second)
		}
	}
	return ""
}

// touchSynced records that a sync just succeeded; persisted with the next
// counter flush.
func (c *Client) touchSynced() {
	s := &c.st
	s.mu.Lock()
	s.c.LastSyncedUnix, s.dirty = s.clock().Unix(), true
	s.mu.Unlock()
}

// contact records an answer of the server; a successful one (ok) is the
// clock of MaxOfflineSeconds. Any answer ends an outage: offline becomes
// syncing, a new online period (once per outage; the attempt's outcome
// decides what follows). A successful answer to an attempt (beginSync)
// shows syncing; error states otherwise stay until the outcome replaces
// them, so a retry the server refuses again never flickers through
// syncing, and neither does a quiet long poll.
func (c *Client) contact(ok bool) {
	s := &c.st
	s.mu.Lock()
	if ok {
		s.c.LastContactUnix, s.dirty = s.clock().Unix(), true
	}
	lift := !s.offline && s.state != StateSyncing &&
		(s.state == StateOffline || ok && s.attempting)
	s.mu.Unlock()
	if lift {
		// Persisted with the attempt's outcome (changeState).
		c.changeState(StateSyncing, ReasonNone, "")
	}
}

// statusNow is the status's clock.
func (c *Client) statusNow() time.Time {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return c.st.clock()
}

// setRetry records when the background loop tries again after a failure
// (the zero time: no retry scheduled).
func (c *Client) setRetry(at time.Time) {
	s := &c.st
	s.mu.Lock()
	s.retryAt = at
	s.mu.Unlock()
	c.emitStatus()
}

// OnStatus registers fn to be called with the new status whenever it
// changes, and returns a handle for RemoveStatusListener. Calls happen
// outside the client's locks, one at a time, in the order of the changes;
// fn may call any method of the Client, but a slow fn delays later
// notifications (and the goroutine whose change triggered them).
func (c *Client) OnStatus(fn func(Status)) int {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	c.st.nextID++
	c.st.listeners = append(c.st.listeners, listener{c.st.nextID, fn})
	return c.st.nextID
}

// StatusListener is the gomobile form of an OnStatus callback.
type StatusListener interface {
	StatusChanged(s *Status)
}

// AddStatusListener is OnStatus for gomobile callers.
func (c *Client) AddStatusListener(l StatusListener) int {
	return c.OnStatus(func(s Status) { l.StatusChanged(&s) })
}

// RemoveStatusListener unregisters a listener; unknown ids are ignored.
// After it returns, the listener is not called again.
func (c *Client) RemoveStatusListener(id int) {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	for i, l := range c.st.listeners {
		if l.id == id {
			c.st.listeners = append(c.st.listeners[:i:i], c.st.listeners[i+1:]...)
			return
		}
	}
}

// emitStatus queues the current status for the listeners if it differs
// from the last one queued, and delivers the queue unless another goroutine
// already is (it will pick this one up). Delivery therefore never runs
// listeners concurrently or out of order, and a listener that changes the
// status does not deadlock.
func (c *Client) emitStatus() {
	s := &c.st
	s.mu.Lock()
	cur := s.snapshotLocked()
	if s.haveLast && cur == s.last {
		s.mu.Unlock()
		return
	}
	s.last, s.haveLast = cur, true
	s.queue = append(s.queue, cur)
	if s.delivering {
		s.mu.Unlock()
		return
	}
	s.delivering = true
	for len(s.queue) > 0 {
		st := s.queue[0]
		s.queue = s.queue[1:]
		ls := append([]listener(nil), s.listeners...)
		for _, l := range ls {
			if !s.hasListenerLocked(l.id) {
				continue // removed by an earlier listener
			}
			s.mu.Unlock()
			l.fn(st)
			s.mu.Lock()
		}
	}
	s.delivering = false
	s.mu.Unlock()
}

func (s *statusState) hasListenerLocked(id int) bool {
	for _, l := range s.listeners {
		if l.id == id {
			return true
		}
	}
	return false
}

// setState records what the sync loop is doing. Entering an online state
// (syncing or synced) from offline starts a new online period, which resets
// the since-online byte counters; entering synced stamps LastSyncedUnix;
// leaving syncing clears the download progress; an online state ends the
// wait for a retry. A settled state (not syncing, not offline mode's) is
// kept as the last known state for a new process. Changed counters are
// persisted; the error is from that write (the state is set regardless).
func (c *Client) setState(state, reason, message string) error {
	c.changeState(state, reason, message)
	return c.flushCounters()
}

// changeState is setState without the write: the changed counters are
// persisted by a commit that follows anyway (the attempt's outcome, with
// its result; see finishResult), so a pull costs state.db one commit, not
// one per status change. Until then a crash loses only the last contact
// and the byte counts since the last commit.
func (c *Client) changeState(state, reason, message string) {
	s := &c.st
	s.mu.Lock()
	online := state == StateSyncing || state == StateSynced
	if online && s.state == StateOffline {
		s.c.DownSinceOnline, s.c.UpSinceOnline = 0, 0
		s.dirty = true
	}
	if state == StateSynced && s.state != StateSynced {
		s.c.LastSyncedUnix = s.clock().Unix()
		s.dirty = true
	}
	if state != StateSyncing {
		s.progBytesDone, s.progBytesTotal, s.progChunksDone, s.progChunksTotal = 0, 0, 0, 0
	}
	if online {
		s.retryAt = time.Time{}
	}
	if state != StateSyncing {
		s.attempting = false // the attempt's outcome
	}
	if state != StateSyncing && reason != ReasonOfflineMode &&
		(s.c.State != state || s.c.Reason != reason || s.c.Message != message) {
		s.c.State, s.c.Reason, s.c.Message = state, reason, message
		s.dirty = true
	}
	s.state, s.reason, s.message = state, reason, message
	s.mu.Unlock()
	c.emitStatus()
}

// addBytes counts network traffic. Counters are persisted with the next
// settled state, completed patch or Close (not on every
// call: that would be an fsync per chunk), so a crash may lose the traffic
// counted since.
func (c *Client) addBytes(down, up int64) {
	s := &c.st
	s.mu.Lock()
	s.c.DownSinceOnline += down
	s.c.DownTotal += down
	s.c.UpSinceOnline += up
	s.c.UpTotal += up
	s.dirty = true
	s.mu.Unlock()
	c.emitStatus()
}

// setServerHead records the newest version the server announced.
func (c *Client) setServerHead(v uint64) {
	s := &c.st
	s.mu.Lock()
	if s.c.ServerHead != v {
		s.c.ServerHead, s.dirty = v, true
	}
	s.mu.Unlock()
	c.emitStatus()
}

// setProgress reports download progress against the manifest's totals.
func (c *Client) setProgress(bytesDone, bytesTotal int64, chunksDone, chunksTotal int) {
	s := &c.st
	s.mu.Lock()
	s.progBytesDone, s.progBytesTotal = bytesDone, bytesTotal
	s.progChunksDone, s.progChunksTotal = chunksDone, chunksTotal
	s.mu.Unlock()
	c.emitStatus()
}

// takeCounters returns the counters to persist if they changed, marking
// them clean; put them back with restoreDirty if the write fails.
func (c *Client) takeCounters() ([]byte, bool) {
	s := &c.st
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dirty {
		return nil, false
	}
	s.dirty = false
	b, _ := json.Marshal(s.c) // plain ints: cannot fail
	return b, true
}

func (c *Client) restoreDirty() {
	c.st.mu.Lock()
	c.st.dirty = true
	c.st.mu.Unlock()
}

// putCounters writes changed counters inside a caller's transaction.
func (c *Client) putCounters(tx *state.EditsTx) (wrote bool, err error) {
	b, ok := c.takeCounters()
	if !ok {
		return false, nil
	}
	if err := tx.SetMeta(state.MetaCounters, b); err != nil {
		c.restoreDirty()
		return false, err
	}
	return true, nil
}

// flushCounters persists changed counters in a transaction of their own;
// none when nothing changed (a commit is two fsyncs, and a pull changes
// the status several times).
func (c *Client) flushCounters() error {
	c.st.mu.Lock()
	dirty := c.st.dirty
	c.st.mu.Unlock()
	if !dirty {
		return nil
	}
	var wrote bool
	err := c.store.UpdateEdits(func(tx *state.EditsTx) error {
		var err error
		wrote, err = c.putCounters(tx)
		return err
	})
	if err != nil && wrote {
		c.restoreDirty()
	}
	return err
}

// ErrNotSynced reports offline mode asked for before a sync completed:
// there is no data yet to work with offline.
var ErrNotSynced = errors.New("offline mode needs a completed sync first: sync once while online, then switch offline mode on")

// SetOfflineMode turns offline mode on or off and persists the choice. While
// on, the client makes no network use and Status reports offline with reason
// offline_mode; edits keep queueing. Turning it off wakes the sync loop.
// Turning it on before a sync has completed fails with ErrNotSynced and
// changes nothing.
func (c *Client) SetOfflineMode(on bool) error {
	if on && !c.OfflineMode() && !c.everSynced() {
		return fmt.Errorf("set offline mode: %w", ErrNotSynced)
	}
	v := []byte{0}
	if on {
		v[0] = 1
	}
	if err := c.store.SetMeta(state.MetaOffline, v); err != nil {
		return fmt.Errorf("set offline mode: %w", err)
	}
	c.st.mu.Lock()
	c.st.offline = on
	if on {
		// Underneath the switch, too, we are offline: when it is turned
		// off the status goes offline → syncing, never back to a stale
		// synced.
		c.st.state, c.st.reason, c.st.message = StateOffline, ReasonOfflineMode, "offline mode is on"
		c.st.progBytesDone, c.st.progBytesTotal, c.st.progChunksDone, c.st.progChunksTotal = 0, 0, 0, 0
	}
	c.st.mu.Unlock()
	c.emitStatus()
	c.notifyWake()
	return nil
}

// everSynced reports whether a sync has ever completed in this state
// directory.
func (c *Client) everSynced() bool {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return c.st.c.LastSyncedUnix > 0 || c.st.localVersion > 0
}

// OfflineMode reports whether offline mode is on.
func (c *Client) OfflineMode() bool {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return c.st.offline
}

// Policy returns the organisation's offline policy as last received from the
// server (the zero Policy before the first sync).
func (c *Client) Policy() wire.Policy {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return c.st.policy
}

// setPolicy stores the policy the server sent. Edits a server refused
// alone as too large get another chance when the limits change; which
// edits cannot be sent is worked out again.
func (c *Client) setPolicy(p wire.Policy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	newLimits := c.Policy().Limits() != p.Limits()
	err = c.store.UpdateEdits(func(tx *state.EditsTx) error {
		if err := tx.SetMeta(state.MetaPolicy, b); err != nil {
			return err
		}
		if !newLimits {
			return nil
		}
		return saveServerBlocks(tx, nil)
	})
	if err != nil {
		return fmt.Errorf("store policy: %w", err)
	}
	c.st.mu.Lock()
	c.st.policy = p
	c.st.mu.Unlock()
	return c.refreshBlocked()
}
