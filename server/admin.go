package server

import (
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/batch"
	"github.com/deltasync/deltasync/snapshot"
)

// maxAdminJSONBytes bounds small admin JSON bodies.
const maxAdminJSONBytes = 64 << 10

// adminOrg validates the {org} path parameter.
func adminOrg(req *request) (string, error) {
	org := req.Param("org")
	if err := snapshot.ValidateName("org", org); err != nil {
		return "", badRequest("%v", err)
	}
	return org, nil
}

// putOrgSettings handles PUT /v1/admin/orgs/{org}: the fields in the body
// change, the others keep their stored value; it answers the stored result.
func (s *Server) putOrgSettings(ctx *fasthttp.RequestCtx, req *request) error {
	org, err := adminOrg(req)
	if err != nil {
		return err
	}
	body, err := s.readBody(ctx, maxAdminJSONBytes)
	if err != nil {
		return err
	}
	var u settingsUpdate
	if err := decodeJSON(body, &u); err != nil {
		return err
	}
	if err := s.checkHookTargets(u.hookUpdate); err != nil {
		return err
	}
	st, err := s.updateOrgSettings(req.Ctx, org, u)
	if err != nil {
		return err
	}
	if err := s.syncWebhookConsumer(req.Ctx, org, st); err != nil {
		return err
	}
	s.log.Info("org settings changed", "request_id", req.ID, "org", org,
		"offline_mode", st.OfflineMode, "conflict_policy", st.ConflictPolicy)
	writeJSON(ctx, fasthttp.StatusOK, settingsView(st))
	return nil
}

// getOrgSettings handles GET /v1/admin/orgs/{org}; an org without stored
// settings answers the defaults. It reads the store, not the cache, so an
// admin sees a change made through another replica at once.
func (s *Server) getOrgSettings(ctx *fasthttp.RequestCtx, req *request) error {
	org, err := adminOrg(req)
	if err != nil {
		return err
	}
	st, _, err := s.loadOrgSettings(req.Ctx, org)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, settingsView(st))
	return nil
}

// putDataset handles PUT /v1/admin/orgs/{org}/users/{user}/dataset: a whole
// data set as NDJSON (streamed, optionally zstd) becomes the user's next
// version, exactly as `deltasync build` would make it. A bad line answers
// 400 naming the line, and nothing is written.
func (s *Server) putDataset(ctx *fasthttp.RequestCtx, req *request) error {
	org, err := adminOrg(req)
	if err != nil {
		return err
	}
	user := req.Param("user")
	if err := snapshot.ValidateName("user", user); err != nil {
		return badRequest("%v", err)
	}
	body, err := s.bodyReader(ctx, req, s.opts.MaxDatasetBytes)
	if err != nil {
		return err
	}
	defer body.Close()
	secret, err := s.secret(req.Ctx)
	if err != nil {
		return err
	}
	res, err := batch.BuildUser(req.Ctx, s.store, batch.UserOptions{Org: org, User: user, Secret: secret}, body)
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return he
		}
		return err
	}
	s.committed(org, user, res.Version)
	s.log.Info("data set uploaded", "request_id", req.ID, "org", org, "user", user,
		"version", res.Version, "created", res.Created, "records", res.Records)
	writeJSON(ctx, fasthttp.StatusOK, res)
	return nil
}
