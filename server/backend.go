package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/valyala/fasthttp"
	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Admin patches: the app's backend writes to users' data sets O(change),
// replayed by the same code as a device's patches (diff.Apply with Admin
// set), answered with the same receipts and idempotent per (id, user)
// through the same stored answers, in a namespace of their own.
//
// Without a base, a patch applies to the head as the system of record
// (diff.ApplyOptions.AtHead: nothing can conflict); with one it is merged
// three-way like a device's and the backend wins every conflict. Both are
// held to the org's patch limits, as a device is.

// adminUser validates the {user} path parameter.
func adminUser(req *request) (string, error) {
	user := req.Param("user")
	if err := snapshot.ValidateName("user", user); err != nil {
		return "", badRequest("%v", err)
	}
	return user, nil
}

// adminApplyOptions are the replay options of the backend's patches to one
// user of org under the org's policy (req.Policy, set by adminPolicy).
func (s *Server) adminApplyOptions(ctx context.Context, req *request, org, user string) (diff.ApplyOptions, error) {
	secret, err := s.secret(ctx)
	if err != nil {
		return diff.ApplyOptions{}, err
	}
	opts := diff.DefaultApplyOptions()
	opts.Org, opts.User, opts.Secret = org, user, secret
	opts.Limits = req.Policy.Limits()
	opts.Admin = true
	return opts, nil
}

// adminPolicy loads org's policy into req.Policy, for the limits admin
// patches are held to and the 413 answer that names them.
func (s *Server) adminPolicy(req *request, org string) error {
	p, err := s.orgPolicy(req.Ctx, org, false)
	if err != nil {
		return err
	}
	req.Policy = p
	return nil
}

// postAdminPatch handles POST /v1/admin/orgs/{org}/users/{user}/patches:
// a patch in the format of POST /v1/patches, replayed as the backend's
// write (see the top of this file), answered like a device's.
func (s *Server) postAdminPatch(ctx *fasthttp.RequestCtx, req *request) error {
	org, err := adminOrg(req)
	if err != nil {
		return err
	}
	user, err := adminUser(req)
	if err != nil {
		return err
	}
	if err := s.adminPolicy(req, org); err != nil {
		return err
	}
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
	opts, err := s.adminApplyOptions(req.Ctx, req, org, user)
	if err != nil {
		return err
	}
	opts.AtHead = !hasBase(body)
	res, err := diff.Apply(req.Ctx, s.store, opts, p)
	if err != nil {
		return s.patchFailed(ctx, req, org, user, p, err)
	}
	s.adminPatched(req, org, user, p.ID, res)
	writeJSON(ctx, fasthttp.StatusOK, patchResponse(res))
	return nil
}

// hasBase reports whether a patch body gives a base (null counts as none).
// The body decoded as a patch already, so it is a JSON object.
func hasBase(body []byte) bool {
	var probe struct {
		Base json.RawMessage `json:"base"`
	}
	_ = json.Unmarshal(body, &probe)
	return len(probe.Base) > 0 && !bytes.Equal(probe.Base, []byte("null"))
}

func patchResponse(res *diff.Result) *wire.PatchResponse {
	return &wire.PatchResponse{Version: res.Version, Created: res.Created, Duplicate: res.Duplicate,
		Receipts: res.Receipts, Conflicts: res.Conflicts}
}

// adminPatched notes a version an admin patch made and counts it.
func (s *Server) adminPatched(req *request, org, user, id string, res *diff.Result) {
	s.patched(org, user, res.Created && !res.Duplicate, res.Version)
	outcome := "unchanged"
	switch {
	case res.Duplicate:
		outcome = "duplicate"
	case res.Created:
		outcome = "applied"
	}
	s.backend.adminPatches.WithLabelValues(outcome).Inc()
	s.log.Debug("admin patch", "request_id", req.ID, "org", org, "user", user, "patch", id,
		"version", res.Version, "outcome", outcome)
}

// fanoutBodyLimit is the largest fan-out body: a patch, and the most users
// with the longest names.
func (s *Server) fanoutBodyLimit() int64 {
	return s.patchBodyLimit() + int64(s.opts.Backend.MaxFanoutUsers)*(128+8) + 1024
}

// decodeFanout reads and checks a fan-out body: an id and ops that make a
// valid patch (canonicalised), 1..MaxFanoutUsers valid, distinct users.
func (s *Server) decodeFanout(body []byte) (*diff.Patch, []string, error) {
	if err := snapshot.ValidateJSONText(body); err != nil {
		return nil, nil, badRequest("decode fan-out: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var fr wire.FanoutRequest
	if err := dec.Decode(&fr); err != nil {
		return nil, nil, badRequest("decode fan-out: %v (a fan-out is {\"id\", \"users\", \"ops\"} and takes no base: it applies at each user's head)", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, badRequest("decode fan-out: trailing data after the object")
	}
	if n := len(fr.Users); n == 0 || n > s.opts.Backend.MaxFanoutUsers {
		return nil, nil, badRequest("a fan-out names 1..%d users, got %d", s.opts.Backend.MaxFanoutUsers, n)
	}
	seen := make(map[string]bool, len(fr.Users))
	for _, u := range fr.Users {
		if err := snapshot.ValidateName("user", u); err != nil {
			return nil, nil, badRequest("%v", err)
		}
		if seen[u] {
			return nil, nil, badRequest("user %q is listed twice", u)
		}
		seen[u] = true
	}
	p := &diff.Patch{ID: fr.ID, Ops: fr.Ops}
	if err := p.Validate(decodeLimits(s.patchBodyLimit())); err != nil {
		return nil, nil, err
	}
	return p, fr.Users, nil
}

// postFanout handles POST /v1/admin/orgs/{org}/patches: the same ops
// applied to each listed user at its head (AtHead), at most
// FanoutConcurrency users at once, each idempotent per (id, user). The
// answer is NDJSON, one wire.FanoutResult per user in the order they
// finish, streamed as they do. Everything about the request is checked
// before the first user is touched: a bad body or a patch over the org's
// limits changes nothing.
func (s *Server) postFanout(ctx *fasthttp.RequestCtx, req *request) error {
	org, err := adminOrg(req)
	if err != nil {
		return err
	}
	if err := s.adminPolicy(req, org); err != nil {
		return err
	}
	body, err := s.readBody(ctx, s.fanoutBodyLimit())
	if err != nil {
		return err
	}
	p, users, err := s.decodeFanout(body)
	if err != nil {
		if errors.Is(err, diff.ErrTooLarge) {
			return s.patchTooLarge(ctx, req, err)
		}
		return badRequestIfInvalid(err)
	}
	if err := p.CheckLimits(req.Policy.Limits()); err != nil {
		return s.patchTooLarge(ctx, req, err)
	}
	if _, err := s.secret(req.Ctx); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go s.runFanout(req, org, p, users, pw)
	ctx.SetContentType(wire.ContentTypeNDJSON)
	s.setBodyStream(ctx, req, pr, -1)
	return nil
}

func badRequestIfInvalid(err error) error {
	var he *httpError
	if !errors.As(err, &he) && errors.Is(err, snapshot.ErrInvalid) {
		return badRequest("%v", err)
	}
	return err
}

// runFanout replays p for every user and writes a result line per user to
// w as each finishes. A write that fails (the client left) stops the users
// not yet started; those running finish (a patch is never cut short on
// purpose), and a retry of the fan-out picks up where it stopped.
func (s *Server) runFanout(req *request, org string, p *diff.Patch, users []string, w *io.PipeWriter) {
	ctx, cancel := context.WithCancel(req.Ctx)
	defer cancel()
	var mu sync.Mutex
	write := func(r wire.FanoutResult) {
		line, _ := json.Marshal(r)
		mu.Lock()
		defer mu.Unlock()
		if _, err := w.Write(append(line, '\n')); err != nil {
			cancel()
		}
	}
	g := new(errgroup.Group)
	g.SetLimit(s.opts.Backend.FanoutConcurrency)
	for _, u := range users {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			write(s.fanoutUser(ctx, req, org, u, p))
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		w.CloseWithError(err)
		return
	}
	w.Close()
}

// fanoutUser replays the fan-out's patch for one user.
func (s *Server) fanoutUser(ctx context.Context, req *request, org, user string, p *diff.Patch) wire.FanoutResult {
	opts, err := s.adminApplyOptions(ctx, req, org, user)
	if err == nil {
		opts.AtHead = true
		var res *diff.Result
		if res, err = diff.Apply(ctx, s.store, opts, p); err == nil {
			s.adminPatched(req, org, user, p.ID, res)
			return wire.FanoutResult{User: user, PatchResponse: patchResponse(res)}
		}
	}
	s.backend.adminPatches.WithLabelValues("failed").Inc()
	he := fanoutError(err)
	if he.Status >= 500 {
		s.log.Warn("fan-out patch failed", "request_id", req.ID, "org", org, "user", user, "patch", p.ID, "err", err)
	}
	return wire.FanoutResult{User: user, Error: &wire.ErrorDetail{Code: he.Code, Message: he.Message}}
}

// fanoutError is the error line of one user of a fan-out.
func fanoutError(err error) *httpError {
	switch {
	case errors.Is(err, diff.ErrPatchIDReused):
		return conflict("%v", err)
	case errors.Is(err, diff.ErrContended):
		return errorf(fasthttp.StatusServiceUnavailable, wire.CodeUnavailable, "%v; nothing was applied to this user, send the fan-out again", err)
	}
	he := classify(err)
	if he.Status >= 500 {
		he = &httpError{Status: he.Status, Code: he.Code, Message: fmt.Sprintf("%s; nothing was applied to this user, send the fan-out again", he.Message), Err: err}
	}
	return he
}
