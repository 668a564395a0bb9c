package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"

	"github.com/deltasync/deltasync/client/internal/state"
)

// SyncResult tells what one Pull, Push or Sync did. Plain fields, so it
// binds with gomobile (returned by pointer).
type SyncResult struct {
	Version    uint64 `json:"version"`     // local version afterwards
	ServerHead uint64 `json:"server_head"` // newest version the server announced
	UpToDate   bool   `json:"up_to_date"`  // the pull found nothing new
	Full       bool   `json:"full"`        // the pull was a full sync (replaced every record)
	Resumed    bool   `json:"resumed"`     // the pull resumed an interrupted download

	BytesDown int64 `json:"bytes_down"` // traffic of this call (bodies)
	BytesUp   int64 `json:"bytes_up"`

	ChunksFetched  int `json:"chunks_fetched"`  // chunks received over the network
	ChunksReused   int `json:"chunks_reused"`   // chunks of the new version already held locally
	RecordsChanged int `json:"records_changed"` // records put or deleted by a delta (0 for a full sync)

	EditsSent     int `json:"edits_sent"`     // edits carried by the patches sent
	EditsApplied  int `json:"edits_applied"`  // applied or merged by the server
	EditsConflict int `json:"edits_conflict"` // applied with a conflict (see Conflicts)
	EditsRejected int `json:"edits_rejected"` // rejected by the server (kept in Conflicts, Status "rejected")
	Patches       int `json:"patches"`        // patches answered
	EditsBlocked  int `json:"edits_blocked"`  // pending edits that cannot be sent under the org's limits (see Blocked)

	Pending int    `json:"pending"` // edits still waiting to be sent
	State   string `json:"state"`   // Status().State afterwards
}

// Pull brings the local records to the server's newest version: it
// downloads the delta pack from the local version, verifies it and installs
// it atomically. Pending edits stay queued and laid over the new version.
// An interrupted download resumes at the next Pull.
func (c *Client) Pull(ctx context.Context) (*SyncResult, error) {
	return c.runSync(ctx, false, true)
}

// Push sends the pending edits as patches, oldest first, until the queue
// is empty. A patch's id is persisted before it is sent, so after a lost
// answer the next Push resends the same id and the server applies it once.
func (c *Client) Push(ctx context.Context) (*SyncResult, error) {
	return c.runSync(ctx, true, false)
}

// Sync pushes the pending edits, then pulls.
func (c *Client) Sync(ctx context.Context) (*SyncResult, error) {
	return c.runSync(ctx, true, true)
}

// runSync runs one push and/or pull with the status reporting it: syncing
// while it runs, synced after, or the error state that explains a failure.
func (c *Client) runSync(ctx context.Context, push, pull bool) (*SyncResult, error) {
	return c.foregroundRun(ctx, "sync", func(ctx context.Context, res *SyncResult) error {
		return c.syncLocked(ctx, push, pull, 0, res)
	})
}

// foregroundRun runs one sync step the app asked for (holding the network
// lock, as a foreground request) with the status reporting it.
func (c *Client) foregroundRun(ctx context.Context, op string, run func(context.Context, *SyncResult) error) (*SyncResult, error) {
	c.netMu.Lock()
	defer c.netMu.Unlock()
	res := &SyncResult{}
	ctx, done, err := c.foreground(ctx)
	if err != nil {
		c.finishResult(res, err)
		return res, fmt.Errorf("%s: %w", op, err)
	}
	defer done()
	err = run(ctx, res)
	c.outcome(err, 0)
	c.finishResult(res, err)
	return res, err
}

// LastSyncResult returns the result of the last Pull, Push, Sync or Rebase
// call that reached the server (nil if none), as the CLI's status shows it.
func (c *Client) LastSyncResult() (*SyncResult, error) {
	raw, err := c.store.Meta(state.MetaLastResult)
	if err != nil || raw == nil {
		return nil, err
	}
	var r SyncResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("last sync result: %v: %w", err, ErrCorrupt)
	}
	return &r, nil
}

// syncLocked is one push-then-pull; the caller holds netMu. The state is
// set to syncing first unless this is a long poll (waitSeconds > 0, which
// turns syncing only when something arrives).
func (c *Client) syncLocked(ctx context.Context, push, pull bool, waitSeconds int, res *SyncResult) error {
	before := c.Status()
	res.BytesDown, res.BytesUp = -before.BytesDownTotal, -before.BytesUpTotal
	defer func() {
		after := c.Status()
		res.BytesDown += after.BytesDownTotal
		res.BytesUp += after.BytesUpTotal
	}()
	if waitSeconds == 0 {
		c.beginSync()
	}
	if push {
		err := c.push(ctx, res)
		if errors.Is(err, errBaseUnknown) {
			// Resync, then send the edits on the new base.
			if err = c.pull(ctx, 0, res); err == nil {
				err = c.push(ctx, res)
			}
		}
		if err != nil {
			return err
		}
	}
	if pull {
		if err := c.pull(ctx, waitSeconds, res); err != nil {
			return err
		}
		// Blobs: the synced records' small blobs, by the org's policy.
		if err := c.fetchEagerBlobs(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) finishResult(res *SyncResult, err error) {
	st := c.Status()
	if res.Version == 0 || err != nil {
		res.Version = st.LocalVersion
	}
	if res.ServerHead == 0 {
		res.ServerHead = st.ServerHead
	}
	res.Pending, res.State, res.EditsBlocked = st.PendingEdits, st.State, st.BlockedEdits
	var raw []byte
	if res.BytesDown > 0 || res.BytesUp > 0 {
		raw, _ = json.Marshal(res) // plain fields: cannot fail
	}
	if raw == nil {
		_ = c.flushCounters() // as setState: kept dirty if it fails
		return
	}
	// The counters (the outcome's state, the last contact) and the result
	// in one commit. The result is only informational: a failed write
	// loses nothing that matters, and the counters stay to be written.
	var wrote bool
	werr := c.store.UpdateEdits(func(tx *state.EditsTx) error {
		var err error
		if wrote, err = c.putCounters(tx); err != nil {
			return err
		}
		return tx.SetMeta(state.MetaLastResult, raw)
	})
	if werr != nil && wrote {
		c.restoreDirty()
	}
}

// beginSync marks the start of an attempt the app should see (not a quiet
// long poll). The state does not change yet: it turns syncing when the
// server answers (contact), or goes straight to the outcome. So an attempt
// that cannot reach the server is one change at most (synced → offline),
// and retries while it stays out of reach are none: no flicker.
func (c *Client) beginSync() {
	c.st.mu.Lock()
	c.st.attempting = true
	c.st.mu.Unlock()
}

// ensureSyncing sets the state to syncing unless it already is: data is
// moving.
func (c *Client) ensureSyncing() {
	c.st.mu.Lock()
	already := c.st.state == StateSyncing
	c.st.mu.Unlock()
	if !already {
		c.setState(StateSyncing, ReasonNone, "")
	}
}

// reportOutcome sets the state after a sync attempt. failures is how many
// attempts in a row failed with a temporary server error, including this
// one: until it reaches Options.ServerRetries the state stays syncing (the
// loop retries), after that it is error/server.
func (c *Client) reportOutcome(err error, failures int) {
	c.outcome(err, failures)
	_ = c.flushCounters() // as setState: kept dirty if it fails
}

// outcome is reportOutcome without the write: the caller persists the
// changed counters.
func (c *Client) outcome(err error, failures int) {
	switch {
	case err == nil:
		c.touchSynced()
		c.changeState(StateSynced, ReasonNone, c.policyNotice())
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// Stopped, not failed: leave the state to whoever stopped us.
	case errors.Is(err, ErrOfflineMode):
		c.changeState(StateOffline, ReasonOfflineMode, "offline mode is on")
	case errors.Is(err, ErrNoServer):
		c.changeState(StateError, ReasonServer, "no server configured")
	case errors.Is(err, ErrAuth):
		c.changeState(StateError, ReasonAuth, tokenMessage(err))
	case errors.Is(err, ErrRebaseNeeded):
		c.changeState(StateError, ReasonPolicy, rebaseMessage(c.ConflictCount()))
	case errors.Is(err, ErrPolicy):
		c.changeState(StateError, ReasonPolicy, policyMessage(err))
	case storageFailed(err):
		c.changeState(StateError, ReasonStorage, "this device's storage failed: "+err.Error())
	case errors.Is(err, ErrNoConnection):
		c.changeState(StateOffline, ReasonNoConnection, "cannot reach the server: "+err.Error())
	case errors.Is(err, ErrServer) && failures > 0 && failures < c.opts.ServerRetries:
		c.changeState(StateSyncing, ReasonNone, fmt.Sprintf("retrying after a server error (attempt %d): %v", failures, err))
	default:
		c.changeState(StateError, ReasonServer, err.Error())
	}
}

// storageFailed reports an error of this device's storage: full (the
// state files could not grow), read-only or failing.
func storageFailed(err error) bool {
	for _, e := range []error{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EIO} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func policyMessage(err error) string {
	var he *HTTPError
	if errors.As(err, &he) && he.Message != "" {
		return he.Message
	}
	return err.Error()
}

func rebaseMessage(conflicts int) string {
	return fmt.Sprintf("your organization rejects edits that conflict with changes on the server: "+
		"%d conflict(s) to review; pending edits wait until you rebase them onto the server's data or discard them", conflicts)
}

// policyNotice explains an org limit this device is over, for the message
// of a synced state ("" when within limits).
func (c *Client) policyNotice() string {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return c.st.policyViolationLocked(c.st.clock())
}

// foreground prepares a sync the app asked for (not the loop's): it fails
// at once in offline mode or without a connection, and otherwise returns a
// context that turning offline mode on, or NotifyConnectivity(false),
// cancels. The caller holds netMu and calls done when finished.
func (c *Client) foreground(ctx context.Context) (context.Context, func(), error) {
	if c.OfflineMode() {
		return nil, nil, ErrOfflineMode
	}
	if !c.networkAllowed() {
		return nil, nil, &netError{op: "sync", err: errors.New("no network connection (NotifyConnectivity)")}
	}
	ctx, cancel := context.WithCancel(ctx)
	c.loop.mu.Lock()
	c.loop.fgCancel = cancel
	c.loop.mu.Unlock()
	return ctx, func() {
		c.loop.mu.Lock()
		c.loop.fgCancel = nil
		c.loop.mu.Unlock()
		cancel()
	}, nil
}
