package server

import "github.com/valyala/fasthttp"

// routes registers every endpoint. Each group of handlers lives in its own
// file; add a group here with one call.
func (s *Server) routes() {
	// Operations: no token.
	s.handle(fasthttp.MethodGet, "/healthz", "healthz", authNone, s.healthz)
	s.handle(fasthttp.MethodGet, "/readyz", "readyz", authNone, s.readyz)
	s.handle(fasthttp.MethodGet, "/metrics", "metrics", authNone, s.metricsHandler())

	// Admin: org settings.
	s.handle(fasthttp.MethodGet, "/v1/admin/orgs/{org}", "admin_org_get", authAdmin, s.getOrgSettings)
	s.handle(fasthttp.MethodPut, "/v1/admin/orgs/{org}", "admin_org_put", authAdmin, s.putOrgSettings)
}
