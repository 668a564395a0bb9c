package client

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/wire"
)

// ErrTooLarge reports an edit whose value is over the largest record the
// server accepts (the policy's MaxRecordBytes; 16 MiB before a policy
// arrived): it could never be sent, so Put and Merge refuse it at once and
// nothing changes. It also matches ErrInvalid.
var ErrTooLarge = diff.ErrTooLarge

// recordLimitError is an edit refused at edit time for its size.
type recordLimitError struct {
	what     string // "value", "merge patch", "merged value"
	got, max int64
	policy   bool // the limit came from the org's policy, not the default
}

func (e *recordLimitError) Error() string {
	from := "the default record limit; the server has not sent its own yet"
	if e.policy {
		from = "max_record_bytes of the organization's policy"
	}
	return fmt.Sprintf("%s of %d bytes is over the limit of %d bytes per record (%s): the server would never accept it",
		e.what, e.got, e.max, from)
}

func (e *recordLimitError) Is(target error) bool {
	return target == ErrTooLarge || target == ErrInvalid
}

// checkRecordSize refuses a value of n bytes over the record limit lim.
func (c *Client) checkRecordSize(what string, n int, lim diff.Limits) error {
	if int64(n) <= lim.MaxRecordBytes {
		return nil
	}
	return &recordLimitError{what: what, got: int64(n), max: lim.MaxRecordBytes, policy: c.Policy().MaxRecordBytes > 0}
}

// patchLimits are the limits patches are formed by: the policy's (the
// defaults where it has none), lowered while a bare 413 (an older server,
// a proxy) is being split down.
func (c *Client) patchLimits() diff.Limits {
	lim := c.Policy().Limits()
	c.loop.mu.Lock()
	ops, size := c.loop.patchOpsCap, c.loop.patchByteCap
	c.loop.mu.Unlock()
	if ops > 0 && ops < lim.MaxOps {
		lim.MaxOps = ops
	}
	if size > 0 && size < lim.MaxBytes {
		lim.MaxBytes = size
	}
	return lim
}

// capPatches halves patches after a bare 413 to one of ops edits and size
// bytes: it does not say which limit, so both shrink. Each 413 shrinks
// them further; a patch of one edit is always formed.
func (c *Client) capPatches(ops int, size int64) {
	c.loop.mu.Lock()
	defer c.loop.mu.Unlock()
	if c.loop.patchOpsCap == 0 || ops/2 < c.loop.patchOpsCap {
		c.loop.patchOpsCap = max(ops/2, 1)
	}
	if c.loop.patchByteCap == 0 || size/2 < c.loop.patchByteCap {
		c.loop.patchByteCap = max(size/2, 1)
	}
}

// uncapPatches ends the halving once a single edit was refused: that edit
// (now blocked) was the likely cause, and the others need not crawl in
// patches of one.
func (c *Client) uncapPatches() {
	c.loop.mu.Lock()
	c.loop.patchOpsCap, c.loop.patchByteCap = 0, 0
	c.loop.mu.Unlock()
}

// BlockedEdit is a pending edit that cannot be sent under the limits in
// force: its value is over the largest record the server accepts (the
// limit was lowered after the edit was made, or the server refused the
// edit alone as too large). It is never dropped: it stays queued and
// visible in the view, with the later edits of its key waiting behind it
// (they would apply to the wrong value without it), until the app
// discards the key's edits (DiscardEdits) or the limit is raised. The other
// keys' edits are sent as usual.
type BlockedEdit struct {
	Key     string
	Op      string // put or merge
	Bytes   int64  // its value or merge patch
	Reason  string
	At      int64 // unix milliseconds, when it was made
	Waiting int   // later edits of the key held back behind it
}

// state.MetaBlocked holds the edits a server refused alone as too large
// (JSON: seq → the server's reason). The policy's own limits are checked
// afresh every time; these are kept until the policy changes.

func loadServerBlocks(tx *state.EditsTx) (map[uint64]string, error) {
	raw := tx.Meta(state.MetaBlocked)
	if raw == nil {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("blocked edits: %v: %w", err, ErrCorrupt)
	}
	out := make(map[uint64]string, len(m))
	for k, v := range m {
		seq, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("blocked edits: seq %q: %w", k, ErrCorrupt)
		}
		out[seq] = v
	}
	return out, nil
}

func saveServerBlocks(tx *state.EditsTx, m map[uint64]string) error {
	if len(m) == 0 {
		return tx.SetMeta(state.MetaBlocked, nil)
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[strconv.FormatUint(k, 10)] = v
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return tx.SetMeta(state.MetaBlocked, raw)
}

// blockedSet is what of the queue cannot be sent: the blocking edit of each
// blocked key, in queue order, and how many pending edits wait.
type blockedSet struct {
	keys  map[string]int // key → index in list
	list  []BlockedEdit
	count int // blocking edits plus the edits waiting behind them
	txid  int // the bbolt transaction the set reflects (later ones win)
}

func (b *blockedSet) has(key string) bool {
	_, ok := b.keys[key]
	return ok
}

// scanBlocked walks the whole queue for the edits that cannot be sent under
// lim (or that a server refused alone).
func scanBlocked(tx *state.EditsTx, lim diff.Limits) (blockedSet, error) {
	bs := blockedSet{keys: map[string]int{}, txid: tx.ID()}
	server, err := loadServerBlocks(tx)
	if err != nil {
		return bs, err
	}
	err = tx.ForEachQueued(func(e *edit, _ int) error {
		if i, ok := bs.keys[e.Key]; ok {
			bs.list[i].Waiting++
			bs.count++
			return nil
		}
		if be, blocked := blockOf(e, lim, server); blocked {
			bs.keys[e.Key] = len(bs.list)
			bs.list = append(bs.list, be)
			bs.count++
		}
		return nil
	})
	return bs, err
}

// blockOf tells whether e cannot be sent, and why.
func blockOf(e *edit, lim diff.Limits, server map[uint64]string) (BlockedEdit, bool) {
	be := BlockedEdit{Key: e.Key, Op: e.Op, Bytes: int64(len(e.Value) + len(e.Patch)), At: e.At}
	if reason, ok := server[e.Seq]; ok {
		be.Reason = "the server refused it as too large: " + reason
		return be, true
	}
	if (e.Op == OpPut || e.Op == OpMerge) && be.Bytes > lim.MaxRecordBytes {
		what := "value"
		if e.Op == OpMerge {
			what = "merge patch"
		}
		be.Reason = fmt.Sprintf("its %s of %d bytes is over the limit of %d bytes per record (max_record_bytes of the organization's policy)",
			what, be.Bytes, lim.MaxRecordBytes)
		return be, true
	}
	return be, false
}

// setBlocked publishes a scan to the status, unless the status already
// reflects a later transaction (scans race with edits and other scans).
func (c *Client) setBlocked(bs blockedSet) {
	c.st.mu.Lock()
	if bs.txid >= c.st.blocked.txid {
		c.st.blocked = bs
	}
	c.st.mu.Unlock()
	c.emitStatus()
}

// refreshBlocked scans the queue again (after the policy changed, edits
// were discarded or a server refused one).
func (c *Client) refreshBlocked() error {
	lim := c.patchLimits()
	var bs blockedSet
	err := c.store.ViewEdits(func(tx *state.EditsTx) error {
		var err error
		bs, err = scanBlocked(tx, lim)
		return err
	})
	if err != nil {
		return fmt.Errorf("blocked edits: %w", err)
	}
	c.setBlocked(bs)
	return nil
}

// blockedMessageLocked explains the blocked edits for Status.Message.
func (s *statusState) blockedMessageLocked() string {
	b := s.blocked
	if b.count == 0 {
		return ""
	}
	first := b.list[0]
	msg := fmt.Sprintf("%d pending edit(s) cannot be sent: the %s of %q made on this device: %s",
		b.count, first.Op, first.Key, first.Reason)
	if len(b.list) > 1 {
		msg += fmt.Sprintf(" (and %d more record(s))", len(b.list)-1)
	}
	return msg + "; they stay on this device until you discard them or the limit is raised"
}

// Blocked returns the edits that cannot be sent under the limits in force,
// one per record, oldest first (see BlockedEdit). Status.BlockedEdits
// counts them with the edits waiting behind them.
func (c *Client) Blocked() []BlockedEdit {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return append([]BlockedEdit(nil), c.st.blocked.list...)
}

// BlockedCount is len(Blocked()), for gomobile callers.
func (c *Client) BlockedCount() int {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return len(c.st.blocked.list)
}

// BlockedAt returns the i-th blocked edit (0 is the oldest), for gomobile
// callers that cannot take a slice of structs.
func (c *Client) BlockedAt(i int) (*BlockedEdit, error) {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	if i < 0 || i >= len(c.st.blocked.list) {
		return nil, fmt.Errorf("blocked edit %d of %d: %w", i, len(c.st.blocked.list), ErrNotFound)
	}
	be := c.st.blocked.list[i]
	return &be, nil
}

// patchTooLarge handles a 413 answer to a patch; the server applied
// nothing. A newer server sends the policy in force: the next patches are
// formed by its limits. Otherwise (an older server, or limits that do not
// explain the refusal) a patch of several edits is split in halves, and a
// single edit refused alone is kept queued, blocked with the server's
// reason: no edit is ever dropped for a limit.
func (c *Client) patchTooLarge(p *inflightPatch, edits []*edit, hb *httpErrorWithBody) error {
	var lb wire.LimitErrorBody
	_ = json.Unmarshal(hb.body, &lb) // a bonus: the 413 alone is the answer
	learned := lb.Policy != nil && *lb.Policy != c.Policy()
	switch {
	case learned:
		if err := c.setPolicy(*lb.Policy); err != nil {
			return fmt.Errorf("push: %w", err)
		}
	case len(edits) > 1:
		c.capPatches(len(edits), bodySize(p, edits))
	default:
		reason := hb.HTTPError.Message
		if reason == "" {
			reason = hb.HTTPError.Error() // a proxy's page, not our JSON
		}
		if err := c.blockEdit(edits[0].Seq, reason); err != nil {
			return fmt.Errorf("push: %w", err)
		}
		c.uncapPatches()
	}
	if err := c.completePatchX(p.ID, 0, nil, nil, nil); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	return c.refreshBlocked()
}

// blockEdit records that the server refused edit seq alone as too large.
func (c *Client) blockEdit(seq uint64, reason string) error {
	return c.store.UpdateEdits(func(tx *state.EditsTx) error {
		m, err := loadServerBlocks(tx)
		if err != nil {
			return err
		}
		if m == nil {
			m = map[uint64]string{}
		}
		m[seq] = reason
		return saveServerBlocks(tx, m)
	})
}

// bodySize is the size of the canonical body of the patch p with edits.
func bodySize(p *inflightPatch, edits []*edit) int64 {
	s := diff.NewPatchSize(p.ID, p.Base)
	for _, e := range edits {
		s.AddOp(e.PatchOp())
	}
	for k, h := range p.Seen {
		s.AddSeen(k, h)
	}
	return s.Bytes()
}
