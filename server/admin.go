package server

import (
	"github.com/valyala/fasthttp"

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
	st, err := s.updateOrgSettings(req.Ctx, org, u)
	if err != nil {
		return err
	}
	s.log.Info("org settings changed", "request_id", req.ID, "org", org,
		"offline_mode", st.OfflineMode, "conflict_policy", st.ConflictPolicy)
	writeJSON(ctx, fasthttp.StatusOK, st)
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
	writeJSON(ctx, fasthttp.StatusOK, st)
	return nil
}
