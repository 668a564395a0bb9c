package server

import (
	"errors"

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
// same patch id again returns the stored answer.
func (s *Server) postPatch(ctx *fasthttp.RequestCtx, req *request) error {
	limit := s.opts.MaxPatchBytes
	if p := req.Policy.MaxPatchBytes; p > 0 && p < limit {
		limit = p
	}
	body, err := s.readBody(ctx, limit)
	if err != nil {
		return err
	}
	lim := diff.Limits{MaxOps: req.Policy.MaxPatchOps, MaxBytes: limit}
	p, err := diff.DecodePatch(body, lim)
	if err != nil {
		return badRequest("%v", err)
	}
	secret, err := s.secret(req.Ctx)
	if err != nil {
		return err
	}
	opts := diff.DefaultApplyOptions()
	opts.Org, opts.User, opts.Secret = req.Org, req.User, secret
	opts.Policy, opts.Limits = req.Policy.ConflictPolicy, lim
	res, err := diff.Apply(req.Ctx, s.store, opts, p)
	var rej *diff.RejectedError
	switch {
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
	case err != nil && errors.Is(err, snapshot.ErrInvalid):
		head, herr := snapshot.Head(req.Ctx, s.store, req.Org, req.User)
		if herr == nil && p.Base > head {
			return notFound("base version %d is unknown: the newest version is %d", p.Base, head)
		}
		return badRequest("%v", err)
	case err != nil:
		return err
	}
	s.committed(req.Org, req.User, res.Version)
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
