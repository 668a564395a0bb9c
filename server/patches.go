package server

import (
	"errors"
	"math"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// rejectedBody is the 409 answer of a patch refused under the reject
// policy: the usual error object plus the receipts, so the client can rebase.
type rejectedBody struct {
	Error     wire.ErrorDetail `json:"error"`
	Version   uint64           `json:"version"`
	Receipts  []diff.Receipt   `json:"receipts"`
	Conflicts []diff.Receipt   `json:"conflicts"`
}

// postPatch handles POST /v1/patches: the patch (JSON, optionally zstd) is
// replayed onto the head under the org's conflict policy and limits. The
// same patch id again returns the stored answer. A patch over a limit is
// answered 413 with the policy in force (wire.LimitErrorBody), so a client
// splits instead of giving up on its edits.
func (s *Server) postPatch(ctx *fasthttp.RequestCtx, req *request) error {
	release, err := s.replays.claim(ctx, req, 1, "patches being applied")
	if err != nil {
		return err
	}
	defer release()
	// Only the body's size is bounded before decoding: the limits in force
	// are Apply's, which first looks for a stored answer, so a retry of a
	// patch applied before the limits were lowered still gets its answer.
	body, err := s.readBody(ctx, s.patchBodyLimit())
	if err != nil {
		return s.patchTooLarge(ctx, req, err)
	}
	p, err := diff.DecodePatch(body, decodeLimits(s.patchBodyLimit()))
	if err != nil {
		if errors.Is(err, diff.ErrTooLarge) {
			return s.patchTooLarge(ctx, req, err)
		}
		return badRequest("%v", err)
	}
	if err := s.checkPatchBlobs(req, p); err != nil { // blobs_read.go
		return err
	}
	secret, err := s.secret(req.Ctx)
	if err != nil {
		return err
	}
	opts := diff.DefaultApplyOptions()
	opts.Org, opts.User, opts.Secret = req.Org, req.User, secret
	opts.Policy, opts.Limits = req.Policy.ConflictPolicy, req.Policy.Limits()
	st, err := s.orgSettings(req.Ctx, req.Org, false)
	if err != nil {
		return err
	}
	opts.Check = s.validationCheck(req, st.HookSettings)
	res, err := diff.Apply(req.Ctx, s.store, opts, p)
	if err != nil {
		return s.patchFailed(ctx, req, req.Org, req.User, p, err)
	}
	s.patched(req.Org, req.User, res.Created && !res.Duplicate, res.Version)
	if !res.Duplicate {
		s.metrics.patchesApplied.Inc()
		s.metrics.conflicts.Add(float64(len(res.Conflicts)))
	}
	s.log.Info("patch applied", "request_id", req.ID, "org", req.Org, "user", req.User, "patch", p.ID,
		"version", res.Version, "created", res.Created, "duplicate", res.Duplicate, "conflicts", len(res.Conflicts))
	writeJSON(ctx, fasthttp.StatusOK, wire.PatchResponse{
		Version: res.Version, Created: res.Created, Duplicate: res.Duplicate,
		Receipts: res.Receipts, Conflicts: res.Conflicts,
	})
	return nil
}

// patchFailed answers a patch of org/user that diff.Apply refused or
// could not apply: 413 with the policy over a limit, 409 with the
// receipts under the reject policy or for a reused id, 503 + Retry-After
// when contended, 404 for an unknown base, 400 for an invalid patch.
func (s *Server) patchFailed(ctx *fasthttp.RequestCtx, req *request, org, user string, p *diff.Patch, err error) error {
	var rej *diff.RejectedError
	switch {
	case errors.Is(err, diff.ErrTooLarge):
		return s.patchTooLarge(ctx, req, err)
	case errors.As(err, &rej):
		s.metrics.conflicts.Add(float64(len(rej.Conflicts())))
		writeJSON(ctx, fasthttp.StatusConflict, rejectedBody{
			Error:   wire.ErrorDetail{Code: wire.CodeConflict, Message: rej.Error() + ": the organization's policy rejects conflicting patches; pull, rebase and resend"},
			Version: rej.Head, Receipts: rej.Receipts, Conflicts: rej.Conflicts(),
		})
		return nil
	case errors.Is(err, diff.ErrPatchIDReused):
		return conflict("%v", err)
	case errors.Is(err, diff.ErrContended):
		ctx.Response.Header.Set("Retry-After", "1")
		return errorf(fasthttp.StatusServiceUnavailable, wire.CodeUnavailable, "%v; nothing was applied, send the same patch again", err)
	case errors.Is(err, errValidatorDown):
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(validationRetryAfterSec))
		return &httpError{Status: fasthttp.StatusServiceUnavailable, Code: wire.CodeUnavailable,
			Message: "the organization's validator is unavailable; nothing was applied, send the same patch again later", Err: err}
	case errors.Is(err, snapshot.ErrInvalid):
		head, herr := snapshot.Head(req.Ctx, s.store, org, user)
		if herr == nil && p.Base > head {
			return notFound("base version %d is unknown: the newest version is %d", p.Base, head)
		}
		return badRequest("%v", err)
	}
	return err
}

// patchBodyLimit is the largest body POST /v1/patches reads, whatever the
// org: the server's limit for a patch of several edits, or what one edit of
// the largest record needs, whichever is larger. Anything that refuses a
// patch body early (by Content-Length) must use this limit, not
// MaxPatchBytes, or a single big edit the server accepts as a record could
// never get through.
func (s *Server) patchBodyLimit() int64 { return s.opts.patchLimits().MaxBodyBytes() }

// decodeLimits bound nothing but the body (to body bytes): DecodePatch
// checks the shape, Apply the limits.
func decodeLimits(body int64) diff.Limits {
	return diff.Limits{MaxOps: math.MaxInt, MaxBytes: body, MaxRecordBytes: snapshot.MaxValueLen}
}

// patchTooLarge answers a patch over a limit (a *diff.LimitError, or a body
// readBody refused as too large) with 413 too_large and the policy in
// force; any other error is returned as it is.
func (s *Server) patchTooLarge(ctx *fasthttp.RequestCtx, req *request, err error) error {
	var le *diff.LimitError
	var he *httpError
	switch {
	case errors.As(err, &le):
	case errors.As(err, &he) && he.Status == fasthttp.StatusRequestEntityTooLarge:
		le = &diff.LimitError{Limit: diff.LimitPatchBytes, Index: -1}
	default:
		return err
	}
	pol := req.Policy
	msg := err.Error()
	if he != nil {
		msg = he.Message
	}
	writeJSON(ctx, fasthttp.StatusRequestEntityTooLarge, wire.LimitErrorBody{
		Error:  wire.ErrorDetail{Code: wire.CodeTooLarge, Message: msg + "; nothing was applied"},
		Limit:  le.Limit,
		Policy: &pol,
	})
	return nil
}
