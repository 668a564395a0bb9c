package server

import "github.com/valyala/fasthttp"

// routes registers every endpoint. Each group of handlers lives in its own
// file; add a group here with one call.
func (s *Server) routes() {
	// Operations: no token.
	s.handle(fasthttp.MethodGet, "/healthz", "healthz", authNone, s.healthz)
	s.handle(fasthttp.MethodGet, "/readyz", "readyz", authNone, s.readyz)
	s.handle(fasthttp.MethodGet, "/metrics", "metrics", authNone, s.metricsHandler())

	// Sync API: the user comes from the token.
	s.handle(fasthttp.MethodGet, "/v1/sync", "sync", authUser, s.sync)
	s.handle(fasthttp.MethodGet, "/v1/status", "status", authUser, s.status)
	s.handle(fasthttp.MethodGet, "/v1/chunks/{id}", "chunk", authUser, s.chunk)
	s.handle(fasthttp.MethodPost, "/v1/patches", "patches", authUser, s.postPatch)
	blobRoutes(s) // blobs.go: uploads (tus), downloads, the admin read

	// Admin: data sets and the change feed.
	s.handle(fasthttp.MethodPut, "/v1/admin/orgs/{org}/users/{user}/dataset", "admin_dataset_put", authAdmin, s.putDataset)
	s.handle(fasthttp.MethodGet, "/v1/admin/changes", "admin_changes", authAdmin, s.changes)

	// Admin: the backend's writes (backend.go).
	s.handle(fasthttp.MethodPost, "/v1/admin/orgs/{org}/users/{user}/patches", "admin_user_patch", authAdmin, s.postAdminPatch)
	s.handle(fasthttp.MethodPost, "/v1/admin/orgs/{org}/patches", "admin_fanout", authAdmin, s.postFanout)

	// Admin: the org's change feed (orgfeed.go).
	s.handle(fasthttp.MethodGet, "/v1/admin/orgs/{org}/changes", "admin_org_changes", authAdmin, s.orgChanges)
	s.handle(fasthttp.MethodGet, "/v1/admin/orgs/{org}/consumers", "admin_consumers", authAdmin, s.listConsumers)
	s.handle(fasthttp.MethodGet, "/v1/admin/orgs/{org}/consumers/{name}", "admin_consumer_get", authAdmin, s.getConsumer)
	s.handle(fasthttp.MethodPut, "/v1/admin/orgs/{org}/consumers/{name}", "admin_consumer_put", authAdmin, s.putConsumer)
	s.handle(fasthttp.MethodDelete, "/v1/admin/orgs/{org}/consumers/{name}", "admin_consumer_delete", authAdmin, s.deleteConsumer)

	// Admin: org settings.
	s.handle(fasthttp.MethodGet, "/v1/admin/orgs/{org}", "admin_org_get", authAdmin, s.getOrgSettings)
	s.handle(fasthttp.MethodPut, "/v1/admin/orgs/{org}", "admin_org_put", authAdmin, s.putOrgSettings)
}
