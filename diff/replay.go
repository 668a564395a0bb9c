package diff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// Conflict policies, the org setting that picks how Apply resolves a
// conflict (wire.Policy* are these).
const (
	PolicyClientWins = "client-wins" // the offline edit wins; the server value is kept in the receipt
	PolicyServerWins = "server-wins" // the server value stays; the client value is kept in the receipt
	PolicyReject     = "reject"      // the whole patch is refused with the list of conflicts
)

// ApplyOptions configure Apply.
type ApplyOptions struct {
	Org, User string
	Secret    []byte // deployment chunk-ID secret
	Policy    string // PolicyClientWins if empty
	Limits    Limits // zero fields take DefaultLimits
	// Chunker is used for the first version of an empty data set only:
	// every later version keeps its parent's chunker, so that ApplyEdits
	// can reuse the parent's boundaries. Zero means the default.
	Chunker  snapshot.ChunkerParams
	PackSize int // 0 means the snapshot default
	Now      func() time.Time
	// MaxAttempts bounds the replays after losing the race for a version
	// number to another writer (default 100; with the jittered backoff that
	// is seconds of contention, after which ErrContended asks to retry later).
	MaxAttempts int
	// MaxScan bounds how many versions a retry of a patch that may have
	// been committed without its answer reads to find it (default 1000).
	MaxScan int

	// Admin replays the patch as the app's backend, the system of record:
	// its change set is KindAdminPatch, its id lives apart from device
	// patch ids (the same stored-answer mechanism, another namespace), and
	// its edits win every conflict (the policy is client-wins whatever
	// Policy says: the backend is the client here).
	Admin bool
	// AtHead applies the ops to the head as it is when the patch is
	// replayed (on every replay after a lost race, the new head): Base is
	// ignored, and since the base is the head nothing conflicts. Admin
	// patches without a base use it.
	AtHead bool
	// Check, if set, is asked once which ops to refuse before a patch is
	// replayed (never for a retry answered from storage): it returns a
	// reason per refused op index, and those ops become rejected receipts
	// while the others apply. An error from it ends Apply with that error
	// and nothing written (the org's validation hook: see server).
	Check func(ctx context.Context, p *Patch) (refused map[int]string, err error)
}

// DefaultApplyOptions returns the client-wins policy and default limits;
// the caller sets Org, User and Secret.
func DefaultApplyOptions() ApplyOptions {
	return ApplyOptions{Policy: PolicyClientWins, Limits: DefaultLimits(), Now: time.Now, MaxAttempts: 100, MaxScan: 1000}
}

func (o *ApplyOptions) fill() error {
	if err := snapshot.ValidateName("org", o.Org); err != nil {
		return err
	}
	if err := snapshot.ValidateName("user", o.User); err != nil {
		return err
	}
	if len(o.Secret) == 0 {
		return fmt.Errorf("apply patch: no chunk secret: %w", snapshot.ErrInvalid)
	}
	if o.Admin {
		o.Policy = PolicyClientWins
	}
	switch o.Policy {
	case "":
		o.Policy = PolicyClientWins
	case PolicyClientWins, PolicyServerWins, PolicyReject:
	default:
		return fmt.Errorf("unknown conflict policy %q: %w", o.Policy, snapshot.ErrInvalid)
	}
	o.Limits = o.Limits.fill()
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 100
	}
	if o.MaxScan <= 0 {
		o.MaxScan = 1000
	}
	return nil
}

// Result is the answer to a patch.
type Result struct {
	// Version is the version the patch produced, or the head it was
	// replayed on if it changed nothing.
	Version uint64 `json:"version"`
	// Created reports whether Version is new.
	Created bool `json:"created"`
	// Receipts has one entry per op, in op order.
	Receipts []Receipt `json:"receipts"`
	// Conflicts are the receipts with status conflict.
	Conflicts []Receipt `json:"conflicts"`
	// Duplicate reports an answer replayed from storage: the patch id was
	// applied before and nothing changed now.
	Duplicate bool `json:"duplicate,omitempty"`
}

func newResult(version uint64, created bool, receipts []Receipt) *Result {
	r := &Result{Version: version, Created: created, Receipts: receipts, Conflicts: []Receipt{}}
	for _, rc := range receipts {
		if rc.Status == StatusConflict {
			r.Conflicts = append(r.Conflicts, rc)
		}
	}
	return r
}

// RejectedError is returned when the policy is reject and the patch
// conflicts with server changes. Nothing was applied or stored, so the
// client may rebase and send the patch again, even under the same id. It
// matches ErrConflict.
type RejectedError struct {
	Head     uint64    // the version the patch was replayed on
	Receipts []Receipt // one per op; conflicts carry both values
}

func (e *RejectedError) Error() string {
	c := e.Conflicts()
	if len(c) == 0 {
		return "patch rejected"
	}
	return fmt.Sprintf("patch rejected at version %d: %d conflicting ops (first: op %d on %q)", e.Head, len(c), c[0].Index, c[0].Key)
}

func (e *RejectedError) Unwrap() error { return ErrConflict }

// Conflicts returns the receipts with status conflict.
func (e *RejectedError) Conflicts() []Receipt {
	var out []Receipt
	for _, r := range e.Receipts {
		if r.Status == StatusConflict {
			out = append(out, r)
		}
	}
	return out
}

// answer is what is stored under snapshot.PatchKey for a patch id.
type answer struct {
	ID       string    `json:"id"`
	Hash     string    `json:"hash"` // of the canonical patch body
	Version  uint64    `json:"version"`
	Created  bool      `json:"created"`
	Receipts []Receipt `json:"receipts"`
}

// maxAnswer bounds a stored answer (decompressed): receipts may carry
// whole values on both sides of a conflict.
const maxAnswer = 1 << 30

// Apply replays patch p, made against version p.Base, on the head of the
// user's data set and commits the result as a new version (none if the
// patch changes nothing). See the package documentation for the rules.
//
// Replaying an id that was applied before returns the stored answer with
// Duplicate set; the same id with a different body is an error matching
// ErrPatchIDReused and snapshot.ErrInvalid. An invalid patch, or a base
// newer than the head, yields an error matching snapshot.ErrInvalid and
// writes nothing. Under PolicyReject a conflicting patch yields a
// *RejectedError (matching ErrConflict) and writes nothing. Losing the race
// for a version number to another writer re-reads the head and replays
// again, so concurrent patches never lose each other's edits.
//
// p itself is not modified.
func Apply(ctx context.Context, s snapshot.Store, opts ApplyOptions, p *Patch) (*Result, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("apply patch: no patch: %w", snapshot.ErrInvalid)
	}
	q := *p
	q.Ops = slices.Clone(p.Ops)
	if err := q.validateShape(); err != nil {
		return nil, err
	}
	hash, err := patchHash(&q)
	if err != nil {
		return nil, err
	}
	r := &replayer{s: newPackMemo(s), opts: opts, p: &q, hash: hash, idHash: idHash(opts.idNamespace() + q.ID)}
	if lerr := q.CheckLimits(opts.Limits); lerr != nil {
		// The limits may have become stricter since this patch was
		// applied (its answer lost): a retry still gets that answer.
		if res, err := r.previous(ctx); res != nil || err != nil {
			return res, err
		}
		return nil, lerr
	}
	return r.run(ctx)
}

type replayer struct {
	s      snapshot.Store
	opts   ApplyOptions
	p      *Patch
	hash   string
	idHash string

	// The two manifests worth keeping: the base, and the last one read.
	base, last *snapshot.Manifest
	// refused are the ops opts.Check refused, with its reasons.
	refused map[int]string
}

// idNamespace prefixes an admin patch's id before it is hashed into its
// answer's key, so the backend's ids and a device's never meet (ids are
// printable ASCII: no id holds a NUL).
func (o *ApplyOptions) idNamespace() string {
	if o.Admin {
		return "admin\x00"
	}
	return ""
}

// kind is the change set kind of the versions this replay commits.
func (o *ApplyOptions) kind() string {
	if o.Admin {
		return KindAdminPatch
	}
	return KindPatch
}

func (r *replayer) answerKey() string { return snapshot.PatchKey(r.opts.Org, r.opts.User, r.idHash) }

// intentKey marks a patch id that reached the point of committing a
// version. Only a patch with this mark can have been committed without its
// answer being stored (a crash, a lost write), so only then does a retry
// search the versions for it: the common path reads one small object
// instead of every version since the base.
func (r *replayer) intentKey() string {
	return snapshot.PatchKey(r.opts.Org, r.opts.User, r.idHash+".intent")
}

func (r *replayer) run(ctx context.Context) (*Result, error) {
	if res, err := r.storedAnswer(ctx); res != nil || err != nil {
		return res, err
	}
	head, err := snapshot.Head(ctx, r.s, r.opts.Org, r.opts.User)
	if err != nil {
		return nil, err
	}
	if r.p.Base > head && !r.opts.AtHead {
		return nil, fmt.Errorf("patch %q: base %d is newer than head %d: %w", r.p.ID, r.p.Base, head, snapshot.ErrInvalid)
	}
	// The intent is read after the head: a concurrent writer of the same id
	// whose intent is not seen here has not committed yet, so its version
	// will be newer than head and is found by the scan after a lost race.
	_, err = r.s.Stat(ctx, r.intentKey())
	intent := err == nil
	switch {
	case intent:
		lo := max(r.p.Base+1, head-min(head, uint64(r.opts.MaxScan))+1)
		if res, err := r.scan(ctx, head, lo); res != nil || err != nil {
			return res, err
		}
	case !errors.Is(err, snapshot.ErrNotExist):
		return nil, &snapshot.ObjectError{Op: "read patch intent", Key: r.intentKey(), Err: err}
	}
	if r.p.Base > 0 && !r.opts.AtHead {
		if r.base, err = snapshot.ReadManifest(ctx, r.s, r.opts.Org, r.opts.User, r.p.Base); err != nil {
			return nil, fmt.Errorf("patch %q: base version %d: %w", r.p.ID, r.p.Base, err)
		}
	}
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	return r.replay(ctx, head, intent)
}

// check asks opts.Check which ops to refuse, once per Apply.
func (r *replayer) check(ctx context.Context) error {
	if r.opts.Check == nil {
		return nil
	}
	refused, err := r.opts.Check(ctx, r.p)
	if err != nil {
		return fmt.Errorf("patch %q: %w", r.p.ID, err)
	}
	for i := range refused {
		if i < 0 || i >= len(r.p.Ops) {
			return fmt.Errorf("patch %q: the check refused op %d of %d", r.p.ID, i, len(r.p.Ops))
		}
	}
	r.refused = refused
	return nil
}

// replay plans the patch on head and commits it as the next version,
// again on the new head whenever another writer claimed that version
// first (snapshot.RetryLostRace), up to MaxAttempts times.
func (r *replayer) replay(ctx context.Context, head uint64, intent bool) (*Result, error) {
	var (
		res *Result
		end error // what ends the replay, other than a lost race
	)
	attempts, err := snapshot.RetryLostRace(ctx, r.opts.MaxAttempts, func(attempt int) error {
		if attempt > 1 {
			newHead, found, err := r.afterLostRace(ctx, head)
			if found != nil || err != nil {
				res, end = found, err
				return nil
			}
			head = newHead
		}
		var lost error
		res, lost, end = r.try(ctx, head, &intent)
		return lost
	})
	switch {
	case errors.Is(err, snapshot.ErrExist):
		return nil, fmt.Errorf("patch %q: lost the race for a new version %d times (%v): %w", r.p.ID, attempts, err, ErrContended)
	case err != nil:
		return nil, err // ctx ended while waiting to try again
	}
	return res, end
}

// try plans the patch on head and commits it as head+1, marking the patch
// id with its intent first. lost is the commit's error when another writer
// claimed head+1 first; anything else (an answer, or any other failure)
// ends the replay with res and err.
func (r *replayer) try(ctx context.Context, head uint64, intent *bool) (res *Result, lost, err error) {
	headM, err := r.manifest(ctx, head)
	if err != nil {
		return nil, nil, err
	}
	if r.opts.AtHead {
		r.base = headM // what the ops apply to: the head as it is
	}
	pl, err := r.plan(ctx, headM)
	if err != nil {
		return nil, nil, err
	}
	if pl.conflicts > 0 && r.opts.Policy == PolicyReject {
		return nil, nil, &RejectedError{Head: head, Receipts: pl.receipts}
	}
	if len(pl.edits) == 0 {
		res := newResult(head, false, pl.receipts)
		return res, nil, r.storeAnswer(ctx, res)
	}
	// The intent is written while the new version's pack is: both must be
	// durable before the claim, neither needs the other (a patch's six
	// writes were one after the other, each with its fsyncs).
	var intentDone chan error
	if !*intent {
		intentDone = make(chan error, 1)
		go func() { intentDone <- r.putIntent(ctx) }()
	}
	waitIntent := func() error {
		if intentDone == nil {
			return nil
		}
		err := <-intentDone
		intentDone = nil
		if err == nil {
			*intent = true
		}
		return err
	}
	res, err = r.commit(ctx, headM, pl, waitIntent)
	ierr := waitIntent() // joined on every path (a no-op once commit waited)
	switch {
	case res != nil:
		return res, nil, err // committed; err is storing the answer's
	case errors.Is(err, snapshot.ErrExist):
		return nil, err, nil
	case err != nil:
		return nil, nil, err
	}
	return nil, nil, ierr
}

// afterLostRace reads the new head after a lost race. Another request with
// this patch id may have won: found is its answer if a version committed
// since head (the one the lost attempt built on) carries the id.
func (r *replayer) afterLostRace(ctx context.Context, head uint64) (newHead uint64, found *Result, err error) {
	newHead, err = snapshot.Head(ctx, r.s, r.opts.Org, r.opts.User)
	if err != nil {
		return 0, nil, err
	}
	found, err = r.scan(ctx, newHead, head+1)
	return newHead, found, err
}

// manifest returns version v (nil for 0), reusing the base or the last one
// read.
func (r *replayer) manifest(ctx context.Context, v uint64) (*snapshot.Manifest, error) {
	switch {
	case v == 0:
		return nil, nil
	case r.base != nil && r.base.Version == v:
		return r.base, nil
	case r.last != nil && r.last.Version == v:
		return r.last, nil
	}
	m, err := snapshot.ReadManifest(ctx, r.s, r.opts.Org, r.opts.User, v)
	if err != nil {
		return nil, err
	}
	r.last = m
	return m, nil
}

// previous returns the result of this patch id if it was applied before:
// its stored answer or, where its intent says it may have been committed
// without one, the version that holds it. Nil if it was not.
func (r *replayer) previous(ctx context.Context) (*Result, error) {
	if res, err := r.storedAnswer(ctx); res != nil || err != nil {
		return res, err
	}
	if _, err := r.s.Stat(ctx, r.intentKey()); errors.Is(err, snapshot.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, &snapshot.ObjectError{Op: "read patch intent", Key: r.intentKey(), Err: err}
	}
	head, err := snapshot.Head(ctx, r.s, r.opts.Org, r.opts.User)
	if err != nil || head <= r.p.Base {
		return nil, err
	}
	return r.scan(ctx, head, max(r.p.Base+1, head-min(head, uint64(r.opts.MaxScan))+1))
}

// storedAnswer returns the stored answer to the patch id, nil if there is
// none.
func (r *replayer) storedAnswer(ctx context.Context) (*Result, error) {
	key := r.answerKey()
	data, err := snapshot.GetBytes(ctx, r.s, key, maxAnswer)
	if errors.Is(err, snapshot.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &snapshot.ObjectError{Op: "read patch answer", Key: key, Err: err}
	}
	body, err := snapshot.Decompress(nil, data)
	if err != nil {
		return nil, &snapshot.ObjectError{Op: "read patch answer", Key: key, Err: fmt.Errorf("%v: %w", err, snapshot.ErrCorrupt)}
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil || a.ID != r.p.ID {
		return nil, &snapshot.ObjectError{Op: "read patch answer", Key: key, Err: fmt.Errorf("undecodable or names another id: %w", snapshot.ErrCorrupt)}
	}
	if a.Hash != r.hash {
		return nil, r.reused()
	}
	res := newResult(a.Version, a.Created, a.Receipts)
	res.Duplicate = true
	return res, nil
}

func (r *replayer) reused() error {
	return fmt.Errorf("patch %q: %w: %w", r.p.ID, ErrPatchIDReused, snapshot.ErrInvalid)
}

// storeAnswer records the answer for retries. It runs after the version is
// committed; the change set holds the receipts too, so a crash in between
// is recovered by scan.
func (r *replayer) storeAnswer(ctx context.Context, res *Result) error {
	body, err := json.Marshal(answer{ID: r.p.ID, Hash: r.hash, Version: res.Version, Created: res.Created, Receipts: res.Receipts})
	if err != nil {
		return fmt.Errorf("encode patch answer: %w", err)
	}
	data := snapshot.Compress(nil, body)
	key := r.answerKey()
	_, err = r.s.PutIfAbsent(ctx, key, bytes.NewReader(data), int64(len(data)))
	if err != nil && !errors.Is(err, snapshot.ErrExist) { // a concurrent retry of the same id stored it first
		what := "changed nothing"
		if res.Created {
			what = fmt.Sprintf("was applied as version %d", res.Version)
		}
		return &snapshot.ObjectError{Op: fmt.Sprintf("store answer (the patch %s)", what), Key: key, Err: err}
	}
	return nil
}

func (r *replayer) putIntent(ctx context.Context) error {
	body, _ := json.Marshal(struct {
		ID   string `json:"id"`
		Hash string `json:"hash"`
	}{r.p.ID, r.hash})
	key := r.intentKey()
	_, err := r.s.PutIfAbsent(ctx, key, bytes.NewReader(body), int64(len(body)))
	if err != nil && !errors.Is(err, snapshot.ErrExist) {
		return &snapshot.ObjectError{Op: "write patch intent", Key: key, Err: err}
	}
	return nil
}

// scan looks for a version in hi down to lo that this patch id produced,
// and returns its answer (storing it if it was lost).
func (r *replayer) scan(ctx context.Context, hi, lo uint64) (*Result, error) {
	for v := hi; v >= lo && v > 0; v-- {
		// The header names the change set; the chunk list is not needed.
		m, err := snapshot.ReadManifestHeader(ctx, r.s, r.opts.Org, r.opts.User, v)
		if errors.Is(err, snapshot.ErrNotExist) {
			continue // garbage collected
		}
		if err != nil {
			return nil, err
		}
		cs, err := ReadChangeSet(ctx, r.s, m)
		if errors.Is(err, snapshot.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if cs.Kind != r.opts.kind() || cs.Patch == nil || cs.Patch.ID != r.p.ID {
			continue
		}
		h, err := patchHash(cs.Patch)
		if err != nil {
			return nil, &snapshot.ObjectError{Op: "read change set", Key: m.Changes, Err: fmt.Errorf("stored patch: %v: %w", err, snapshot.ErrCorrupt)}
		}
		if h != r.hash {
			return nil, r.reused()
		}
		res := newResult(v, true, cs.Receipts)
		if err := r.storeAnswer(ctx, res); err != nil {
			return nil, err
		}
		res.Duplicate = true
		return res, nil
	}
	return nil, nil
}

// plan is the outcome of replaying the patch on one head.
type plan struct {
	receipts  []Receipt
	edits     []snapshot.Edit // sorted, one per key
	changes   []Change        // old = head value, new = result
	conflicts int
}

// plan replays the patch on headM: per touched key, the client's ops are
// folded onto the base value (what the client saw), and the result is
// merged three-way with the head value.
func (r *replayer) plan(ctx context.Context, headM *snapshot.Manifest) (*plan, error) {
	byKey := map[string][]int{}
	var keys []string
	for i, op := range r.p.Ops {
		if _, ok := byKey[op.Key]; !ok {
			keys = append(keys, op.Key)
		}
		byKey[op.Key] = append(byKey[op.Key], i)
	}
	slices.Sort(keys)

	headVals := map[string][]byte{}
	if headM != nil {
		var err error
		if headVals, err = lookup(ctx, snapshot.NewReader(r.s, headM, r.opts.Secret), headM, keys); err != nil {
			return nil, fmt.Errorf("read version %d: %w", headM.Version, err)
		}
	}
	// A key whose chunks the base shares with the head has the same value
	// in both: only the others are read from the base.
	baseVals := headVals
	if r.base != headM {
		var diverged []string
		same := map[string]bool{}
		for _, k := range keys {
			if sameGroup(r.base, headM, k) {
				same[k] = true
			} else {
				diverged = append(diverged, k)
			}
		}
		baseVals = map[string][]byte{}
		if r.base != nil && len(diverged) > 0 {
			var err error
			if baseVals, err = lookup(ctx, snapshot.NewReader(r.s, r.base, r.opts.Secret), r.base, diverged); err != nil {
				return nil, fmt.Errorf("read base version %d: %w", r.base.Version, err)
			}
		}
		for _, k := range keys {
			if v, ok := headVals[k]; ok && same[k] {
				baseVals[k] = v
			}
		}
	}

	pl := &plan{receipts: make([]Receipt, len(r.p.Ops))}
	for i, op := range r.p.Ops {
		pl.receipts[i] = Receipt{Index: i, Op: op.Op, Key: op.Key}
		if reason, ok := r.refused[i]; ok {
			pl.receipts[i].Status, pl.receipts[i].Reason = StatusRejected, reason
		}
	}
	for _, k := range keys {
		head := headVals[k]
		res, err := r.resolve(k, byKey[k], baseVals[k], head, pl.receipts)
		if err != nil {
			return nil, err
		}
		if sameValue(res, head) {
			continue
		}
		pl.edits = append(pl.edits, snapshot.Edit{Key: k, Value: res, Delete: res == nil})
		pl.changes = append(pl.changes, Change{Key: k, Old: head, New: res})
	}
	for i := range pl.receipts {
		if pl.receipts[i].Status == StatusConflict {
			pl.conflicts++
		}
	}
	if pl.conflicts > 0 && r.opts.Policy == PolicyReject {
		for i := range pl.receipts {
			if rc := &pl.receipts[i]; rc.Status != StatusConflict && rc.Status != StatusRejected {
				rc.Status, rc.Reason = StatusRejected, "patch rejected: other ops conflict with server changes"
			}
		}
	}
	return pl, nil
}

// resolve computes the new value of one key (nil: deleted) from its value
// at base and at head and the client's ops on it, filling their receipts.
func (r *replayer) resolve(key string, ops []int, base, head []byte, receipts []Receipt) ([]byte, error) {
	if h, ok := r.p.Seen[key]; ok && h == SeenHash(head) {
		// The client saw exactly the head's value (typically: its own
		// previous patch made it): nothing else changed the key, and the
		// ops fold onto that value.
		base = head
	}
	ours, live, err := r.fold(key, ops, base, receipts)
	if err != nil {
		return nil, err
	}
	if len(live) == 0 {
		return head, nil
	}
	if sameValue(base, head) {
		// Untouched by the server since base: the ops apply as they are.
		for _, i := range live {
			receipts[i].Status = StatusApplied
		}
		return ours, nil
	}
	out, conf, err := r.mergeValues(key, base, ours, head)
	if err != nil {
		return nil, err
	}
	if most := r.opts.Limits.MaxRecordBytes; int64(len(out)) > most {
		for _, i := range live {
			receipts[i].Status = StatusRejected
			receipts[i].Reason = fmt.Sprintf("merged with server changes the value has %d bytes, over the limit of %d bytes per record (%s)", len(out), most, LimitRecordBytes)
		}
		return head, nil
	}
	r.mergedReceipts(live, conf, ours, head, receipts)
	return out, nil
}

// sameValue reports whether two values of a key (nil: absent) are equal.
func sameValue(a, b []byte) bool { return bytes.Equal(a, b) && (a == nil) == (b == nil) }

func corruptValue(key string, err error) error {
	return fmt.Errorf("stored value of %q: %v: %w", key, err, snapshot.ErrCorrupt)
}

// fold applies the client's ops on one key, in order, to the value the
// client saw (base): ours is the client's value (nil: deleted). An op
// that cannot apply (a merge into a non-object, or past the record limit)
// gets a rejected receipt and is skipped; live are the ops that applied.
func (r *replayer) fold(key string, ops []int, base []byte, receipts []Receipt) (ours []byte, live []int, err error) {
	f := NewFold(base, r.opts.Limits.MaxRecordBytes)
	for _, i := range ops {
		if _, ok := r.refused[i]; ok {
			continue // refused by opts.Check: its receipt says why
		}
		reason, err := f.Apply(&r.p.Ops[i])
		if errors.Is(err, snapshot.ErrCorrupt) {
			return nil, nil, corruptValue(key, err)
		}
		if err != nil {
			return nil, nil, err
		}
		if reason != "" {
			receipts[i].Status, receipts[i].Reason = StatusRejected, reason
			continue
		}
		live = append(live, i)
	}
	ours, err = f.Value()
	return ours, live, err
}

// mergeValues merges the client's value (ours) and the server's (head)
// three-way against base, field by field; conf lists the conflicting
// fields (JSON Pointers, "" for the whole record), resolved by the policy.
func (r *replayer) mergeValues(key string, base, ours, head []byte) (out []byte, conf []string, err error) {
	bd, od, td, err := decodeDocs(base, ours, head)
	if err != nil {
		return nil, nil, corruptValue(key, err)
	}
	clientWins := r.opts.Policy != PolicyServerWins
	res := merge3(bd, od, td, "", clientWins, &conf)
	if ours == nil && base == nil && head != nil {
		// A delete of a key created since base: as a three-way merge the
		// client changed nothing, but deleting is an explicit intent, so it
		// is a conflict (delete against update), resolved by the policy.
		conf = []string{""}
		res = absent
		if !clientWins {
			res = td
		}
	}
	if res.ok {
		if out, err = snapshot.MarshalCanonical(res.v); err != nil {
			return nil, nil, err
		}
	}
	return out, conf, nil
}

// mergedReceipts fills the receipts of the ops on a key merged with the
// server's changes: merged, or a conflict; the key's last conflict
// receipt carries both sides' values (see Receipt).
func (r *replayer) mergedReceipts(live []int, conf []string, ours, head []byte, receipts []Receipt) {
	clientWins := r.opts.Policy != PolicyServerWins
	for _, i := range live {
		rc := &receipts[i]
		if len(conf) == 0 {
			rc.Status = StatusMerged
			continue
		}
		rc.Status = StatusConflict
		rc.Policy = r.opts.Policy
		rc.Won = clientWins && r.opts.Policy != PolicyReject
		rc.Fields = conf
	}
	if len(conf) > 0 {
		rc := &receipts[live[len(live)-1]]
		rc.ClientValue, rc.ClientDeleted = ours, ours == nil
		rc.ServerValue, rc.ServerDeleted = head, head == nil
	}
}

func decodeDocs(vals ...[]byte) (b, o, t doc, err error) {
	out := make([]doc, len(vals))
	for i, v := range vals {
		if v == nil {
			continue
		}
		d, err := snapshot.DecodeJSON(v)
		if err != nil {
			return b, o, t, err
		}
		out[i] = present(d)
	}
	return out[0], out[1], out[2], nil
}

// commit builds the planned edits on headM and, once beforeClaim returned
// nil, claims the next version; then it writes the head hint and the answer
// for retries at once. It returns a nil Result if the version was not
// claimed (err says why: snapshot.ErrExist when another writer claimed it
// first), else the Result and the error of storing its answer.
func (r *replayer) commit(ctx context.Context, headM *snapshot.Manifest, pl *plan, beforeClaim func() error) (*Result, error) {
	bo := snapshot.BuildOptions{
		Org: r.opts.Org, User: r.opts.User, Secret: r.opts.Secret,
		Chunker: r.opts.Chunker, PackSize: r.opts.PackSize, Now: r.opts.Now,
	}
	if headM != nil {
		bo.Chunker = headM.Chunker
	}
	br, err := snapshot.ApplyEdits(ctx, r.s, bo, headM, pl.edits)
	if err != nil {
		return nil, err
	}
	if br.Unchanged { // cannot happen: every edit changes its key
		return nil, fmt.Errorf("patch %q: edits of %d keys left version %d unchanged", r.p.ID, len(pl.edits), headM.Version)
	}
	if err := beforeClaim(); err != nil {
		return nil, err
	}
	cs := &ChangeSet{Kind: r.opts.kind(), Changes: pl.changes, Patch: r.p, Receipts: pl.receipts}
	if err := claimVersion(ctx, r.s, br.Manifest, headM, cs); err != nil {
		return nil, err
	}
	res := newResult(br.Manifest.Version, true, pl.receipts)
	hinted := make(chan struct{})
	go func() {
		defer close(hinted)
		snapshot.PutHeadHint(ctx, r.s, br.Manifest)
	}()
	err = r.storeAnswer(ctx, res)
	<-hinted
	return res, err
}
