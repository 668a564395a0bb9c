package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/wire"
)

// state.MetaRebase is set when the server rejected a patch under the
// org's reject policy: pushing stops until Rebase or DiscardEdits.

// errBaseUnknown reports a patch whose base the server does not know: the
// caller pulls (a full sync) and pushes again.
var errBaseUnknown = errors.New("the server does not know the patch's base version")

// Patch bodies larger than this are sent zstd-compressed.
const compressPatchOver = 1 << 10

var (
	patchEncOnce sync.Once
	patchEnc     *zstd.Encoder
)

func patchEncoder() *zstd.Encoder {
	patchEncOnce.Do(func() {
		patchEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true))
	})
	return patchEnc
}

// push sends patches until the queue is empty. The caller holds netMu.
func (c *Client) push(ctx context.Context, res *SyncResult) error {
	if blocked, err := c.store.Meta(state.MetaRebase); err != nil {
		return fmt.Errorf("push: %w", err)
	} else if blocked != nil {
		return fmt.Errorf("push: %w", ErrRebaseNeeded)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("push: %w", err)
		}
		p, edits, err := c.beginPatch()
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		if p == nil {
			return nil
		}
		c.beginSync()
		// Blobs: sendPatch after the blobs the patch references (blobs.go).
		if err := c.sendWithBlobs(ctx, p, edits, res); err != nil {
			return err
		}
	}
}

// sendPatch sends one patch and records the answer. On a temporary failure
// the patch stays in flight: the next push resends the same id.
func (c *Client) sendPatch(ctx context.Context, p *inflightPatch, edits []*edit, res *SyncResult) error {
	patch := diff.Patch{ID: p.ID, Base: p.Base, Ops: make([]diff.Op, len(edits)), Seen: p.Seen}
	for i, e := range edits {
		patch.Ops[i] = e.PatchOp()
	}
	// The canonical body: exactly the size formPatch measured.
	body, err := diff.EncodePatch(&patch)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	hdr := http.Header{"Content-Type": {"application/json"}}
	if len(body) > compressPatchOver {
		body = patchEncoder().EncodeAll(body, nil)
		hdr.Set("Content-Encoding", "zstd")
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.requestTimeout())
	defer cancel()
	res.EditsSent += len(edits)
	resp, err := c.request(rctx, "push", http.MethodPost, "/v1/patches", nil, body, hdr)
	if err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			// Our own timeout: the answer may be lost, the id is kept.
			return &netError{op: "push", err: fmt.Errorf("no answer within %v", c.opts.requestTimeout())}
		}
		return c.patchRefused(p, edits, err, res)
	}
	defer resp.Body.Close()
	cr := &countingReader{r: io.LimitReader(resp.Body, maxJSONAnswer)}
	var pr struct {
		Version  uint64         `json:"version"`
		Receipts []diff.Receipt `json:"receipts"`
	}
	derr := json.NewDecoder(cr).Decode(&pr)
	c.addBytes(cr.take(), 0)
	if derr != nil {
		if cr.err != nil {
			return &netError{op: "push", err: fmt.Errorf("answer interrupted: %w", cr.err)}
		}
		return &serverError{op: "push", err: fmt.Errorf("answer: %v", derr)}
	}
	if err := checkAnswer(p, edits, pr.Version, pr.Receipts); err != nil {
		return &serverError{op: "push", err: err}
	}
	res.Patches++
	return c.recordAnswer(p, edits, pr.Version, pr.Receipts, res)
}

// checkAnswer refuses an answer that cannot be the server's answer to
// patch p: a receipt for an edit the patch does not hold (an index out of
// range, another key or op), two receipts for one edit or none, or edits taking
// effect in a version older than the patch's base. Believing it would take
// edits out of the queue that the server never applied (a caching proxy's
// answer to another request, a server bug); refused, the patch stays in
// flight and is sent again under its id.
func checkAnswer(p *inflightPatch, edits []*edit, version uint64, rs []diff.Receipt) error {
	seen := make([]bool, len(edits))
	took := false
	for _, r := range rs {
		if r.Index < 0 || r.Index >= len(edits) {
			return fmt.Errorf("patch %s of %d edits answered with a receipt for edit %d", p.ID, len(edits), r.Index)
		}
		e := edits[r.Index]
		if (r.Key != "" && r.Key != e.Key) || (r.Op != "" && r.Op != e.Op) {
			return fmt.Errorf("patch %s answered with a receipt for %s %q as its edit %d, which is %s %q",
				p.ID, r.Op, r.Key, r.Index, e.Op, e.Key)
		}
		if seen[r.Index] {
			return fmt.Errorf("patch %s answered with two receipts for its edit %d", p.ID, r.Index)
		}
		seen[r.Index] = true
		took = took || r.Status == diff.StatusApplied || r.Status == diff.StatusMerged ||
			(r.Status == diff.StatusConflict && r.Won)
	}
	for i, ok := range seen {
		if !ok {
			// The server answers every op; an answer cut short would
			// send the rest again under a new id.
			return fmt.Errorf("patch %s answered without a receipt for its edit %d of %d", p.ID, i, len(edits))
		}
	}
	if took && version < max(p.Base, 1) {
		return fmt.Errorf("patch %s based on version %d answered as applied in version %d", p.ID, p.Base, version)
	}
	return nil
}

// recordAnswer records the receipts of a checked answer (completePatchX):
// applied, merged and resolved edits leave the queue.
func (c *Client) recordAnswer(p *inflightPatch, edits []*edit, version uint64, rs []diff.Receipt, res *SyncResult) error {
	var applied []uint64
	gone := map[uint64]bool{}
	var conflicts []Conflict
	diff.ShareConflictSides(rs)
	for _, r := range rs {
		e := edits[r.Index]
		switch r.Status {
		case diff.StatusApplied, diff.StatusMerged:
			applied = append(applied, e.Seq)
			res.EditsApplied++
		case diff.StatusConflict:
			applied = append(applied, e.Seq)
			if !r.Won {
				gone[e.Seq] = true
			}
			conflicts = append(conflicts, conflictOf(r, e))
			res.EditsConflict++
		case diff.StatusRejected:
			applied = append(applied, e.Seq)
			gone[e.Seq] = true
			conflicts = append(conflicts, conflictOf(r, e))
			res.EditsRejected++
		}
	}
	if len(applied) == 0 {
		// No edit settled (statuses this client does not know): the
		// patch stays in flight under its id, which the server may have
		// applied. Under a new id its edits would apply a second time.
		return &serverError{op: "push", err: fmt.Errorf("the server answered patch %s without a receipt this client understands for any of its %d edits", p.ID, len(edits))}
	}
	if err := c.completePatchX(p.ID, version, applied, gone, conflicts); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if version > 0 {
		c.raiseServerHead(version)
	}
	return nil
}

// conflictOf turns a receipt into the conflict kept for the app.
func conflictOf(r diff.Receipt, e *edit) Conflict {
	cf := Conflict{
		Key: e.Key, Op: e.Op, Policy: r.Policy, Status: r.Status, Won: r.Won,
		Fields: strings.Join(r.Fields, ","), Reason: r.Reason,
	}
	switch {
	case r.ClientDeleted:
	case len(r.ClientValue) > 0:
		cf.ClientValue = []byte(r.ClientValue)
	case e.Op == OpPut:
		cf.ClientValue = []byte(e.Value)
	case e.Op == OpMerge:
		cf.ClientValue = []byte(e.Patch)
	}
	if !r.ServerDeleted && len(r.ServerValue) > 0 {
		cf.ServerValue = []byte(r.ServerValue)
	}
	return cf
}

// patchRefused handles an error answer to a patch. Answers meaning "this
// patch will never apply" end it (no edit is ever dropped silently);
// everything else leaves it in flight for a resend under the same id.
func (c *Client) patchRefused(p *inflightPatch, edits []*edit, err error, res *SyncResult) error {
	var hb *httpErrorWithBody
	if !errors.As(err, &hb) {
		return err
	}
	he := hb.HTTPError
	switch {
	case he.Status == http.StatusConflict:
		var rb struct {
			Receipts []diff.Receipt `json:"receipts"`
		}
		if json.Unmarshal(hb.body, &rb) == nil && len(rb.Receipts) > 0 {
			return c.patchRejected(p, edits, hb, res)
		}
		if he.Code != wire.CodeConflict && he.Code != wire.CodeBlobMissing {
			// Not the server's own answer (something between): the
			// patch may have been applied; it stays in flight.
			return &serverError{op: "push", err: he}
		}
		// The id is taken by a different patch (cannot happen with random
		// ids and a persisted patch, unless state was copied between
		// devices), or a blob is missing: nothing of ours was applied,
		// send under a new id.
		if err := c.completePatchX(p.ID, 0, nil, nil, nil); err != nil {
			return fmt.Errorf("push: %w", err)
		}
		return &serverError{op: "push", err: he}
	case he.Status == http.StatusNotFound:
		// The base version is unknown: the server's data was reset or our
		// version retired. Nothing was applied; resync from scratch, then
		// send the edits under a new id on the new base.
		if err := c.store.SetNeedFull(); err != nil {
			return fmt.Errorf("push: %w", err)
		}
		if err := c.completePatchX(p.ID, 0, nil, nil, nil); err != nil {
			return fmt.Errorf("push: %w", err)
		}
		return fmt.Errorf("push: %w: %v", errBaseUnknown, he)
	case he.Status == http.StatusRequestEntityTooLarge:
		// Over a limit: the server applied nothing; form patches that fit
		// (a new id is safe). Never a reason to give up on an edit.
		return c.patchTooLarge(p, edits, hb)
	case he.Status == http.StatusBadRequest,
		he.Status == http.StatusUnsupportedMediaType, he.Status == http.StatusUnprocessableEntity:
		// The server will never take these edits as they are: keep them as
		// rejected conflicts, with the server's reason, and move on.
		var seqs []uint64
		gone := map[uint64]bool{}
		var cs []Conflict
		for _, e := range edits {
			seqs = append(seqs, e.Seq)
			gone[e.Seq] = true
			cs = append(cs, conflictOf(diff.Receipt{Status: diff.StatusRejected, Reason: he.Error()}, e))
		}
		res.EditsRejected += len(edits)
		if err := c.completePatchX(p.ID, 0, seqs, gone, cs); err != nil {
			return fmt.Errorf("push: %w", err)
		}
		return nil
	case he.Status == http.StatusMethodNotAllowed:
		// A server without the patch endpoint (older, or mid-deploy): a
		// server problem; the patch stays in flight.
		return &serverError{op: "push", err: he}
	}
	return err
}

// patchRejected handles 409: under the org's reject policy the whole patch
// was refused because some of its edits conflict with server changes. The
// server applied nothing. The conflicts are recorded (with both values
// when the server sent them, marked Pending), the edits stay queued, the
// patch is no longer in flight, and pushing stops until the app calls
// Rebase (send the edits again over the server's current data, so they
// win) or DiscardEdits (take the server's values). Rebasing automatically
// would defeat the policy, whose point is that a person decides.
func (c *Client) patchRejected(p *inflightPatch, edits []*edit, hb *httpErrorWithBody, res *SyncResult) error {
	var body struct {
		Receipts  []diff.Receipt `json:"receipts"`
		Conflicts []diff.Receipt `json:"conflicts"`
	}
	_ = json.Unmarshal(hb.body, &body) // the receipts are a bonus; the 409 is the answer
	rs := body.Conflicts
	if len(rs) == 0 {
		rs = body.Receipts
	}
	diff.ShareConflictSides(rs)
	var cs []Conflict
	for _, r := range rs {
		if r.Status != diff.StatusConflict || r.Index < 0 || r.Index >= len(edits) {
			continue
		}
		cf := conflictOf(r, edits[r.Index])
		cf.Won, cf.Pending = false, true
		cs = append(cs, cf)
	}
	if len(cs) == 0 {
		cs = append(cs, Conflict{Status: diff.StatusConflict, Pending: true, Policy: "reject",
			Reason: hb.HTTPError.Error()})
	}
	res.EditsConflict += len(cs)
	if err := c.store.SetMeta(state.MetaRebase, []byte{1}); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if err := c.completePatchX(p.ID, 0, nil, nil, cs); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	return fmt.Errorf("push: %w: %v", ErrRebaseNeeded, hb.HTTPError)
}

// RebaseNeeded reports whether pushing is stopped because the server
// rejected conflicting edits (see Rebase).
func (c *Client) RebaseNeeded() bool {
	return c.meta(state.MetaRebase) != nil
}

// Rebase resumes pushing after the server rejected conflicting edits under
// the org's reject policy: it pulls the server's newest version, then sends
// the pending edits as a new patch based on it, so they apply over the
// server's changes (the app has shown the conflicts and the user chose to
// keep their edits; DiscardEdits drops the ones to give up instead).
func (c *Client) Rebase(ctx context.Context) (*SyncResult, error) {
	return c.foregroundRun(ctx, "rebase", func(ctx context.Context, res *SyncResult) error {
		// Wake the background loop afterwards: pushing was paused. (It
		// needs the network lock, so it runs once this rebase is done.)
		defer c.kickLoop()
		if err := c.syncLocked(ctx, false, true, 0, res); err != nil {
			return err
		}
		if err := c.store.SetMeta(state.MetaRebase, nil); err != nil {
			return err
		}
		return c.syncLocked(ctx, true, true, 0, res)
	})
}

// DiscardEdits drops the pending edits of key that are not part of a patch
// in flight, and returns how many it dropped. It is how an app gives up
// local edits after a conflict, or edits that cannot be sent under the
// organization's limits (Blocked); they are not sent.
func (c *Client) DiscardEdits(key string) (int, error) {
	var n int
	var size int64
	err := c.store.UpdateEdits(func(tx *state.EditsTx) error {
		inflight := map[uint64]bool{}
		p, err := tx.Inflight()
		if err != nil {
			return err
		}
		if p != nil {
			for _, s := range p.Seqs {
				inflight[s] = true
			}
		}
		var seqs []uint64
		n, size, seqs, err = tx.DiscardQueued(key, func(seq uint64) bool { return inflight[seq] })
		if err != nil {
			return err
		}
		server, err := loadServerBlocks(tx)
		if err != nil {
			return err
		}
		for _, seq := range seqs {
			delete(server, seq)
		}
		return saveServerBlocks(tx, server)
	})
	if err != nil {
		return 0, fmt.Errorf("discard edits of %q: %w", key, err)
	}
	c.st.mu.Lock()
	c.st.pendingEdits -= n
	c.st.pendingBytes -= size
	c.st.mu.Unlock()
	c.emitStatus()
	if n > 0 {
		c.notifyEdited(key)
	}
	// A blocked record's edits may be gone: the others can go out now.
	if err := c.refreshBlocked(); err != nil {
		return n, err
	}
	c.kickLoop()
	return n, nil
}

// raiseServerHead records a server version we learned of, never lowering it.
func (c *Client) raiseServerHead(v uint64) {
	if c.Status().ServerHead < v {
		c.setServerHead(v)
	}
}
