// Package server is the deltasync HTTP service that mobile clients sync
// with, built on fasthttp. It is stateless apart from short-lived caches:
// every replica works on the shared snapshot.Store, so any number of them
// can run behind a load balancer.
//
// # Frame
//
// New builds a Server from Options (see DefaultOptions and
// Options.RegisterFlags, which reads flags and DELTASYNC_* environment
// variables). Serve / ListenAndServe run it; Shutdown stops accepting
// connections and lets in-flight requests finish. Handler exposes the
// request handler for in-memory tests with fasthttputil.NewInmemoryListener.
//
// Every request passes through one dispatcher: it assigns a request id
// (honouring a sanitised X-Request-ID), routes by method and path pattern,
// checks the bearer token against the route's auth level, runs the handler,
// turns a returned error into a JSON wire.ErrorBody with the right status,
// and records Prometheus metrics and a structured access log line.
//
// # Auth
//
// Tokens are JWTs issued by the app's own backend, verified with an HS256
// secret and/or RS256 / ES256 public keys; they must carry an expiry. A
// user token carries "org" and "user" and opens only that user's data set;
// an admin token carries "admin": true and alone opens /v1/admin. MintToken
// signs HS256 tokens for the `deltasync token` command.
//
// # Org settings
//
// Offline sync is switched on per org. The settings (wire.Policy plus the
// time of the last change) live as JSON at snapshot.OrgSettingsKey(org),
// written with compare-and-swap so concurrent admins on any replicas never
// lose each other's changes, and cached per replica for Options.SettingsTTL.
// An org without settings has offline mode off and the client-wins policy;
// its users get 403 offline_mode_disabled on sync routes.
//
// The policy a client gets (with every sync and status) carries the patch
// limits in force: each the lower of the server's own (Options.MaxPatchOps,
// MaxPatchBytes, MaxRecordBytes) and the org's, so a client splits its queue
// to fit before sending anything. A patch over one is answered 413 too_large
// with that policy (wire.LimitErrorBody) and nothing applied; a patch of one
// edit is bounded only by the record limit (patchBodyLimit). The org's
// max_offline_seconds and max_pending_bytes are for the device (see
// wire.Policy): uploads are not refused for them.
//
// # Adding endpoints
//
// A handler is a handlerFunc: func(*fasthttp.RequestCtx, *request) error.
// Register it in routes.go with s.handle(method, pattern, name, auth, h);
// the pattern may hold "{param}" segments read with req.Param. On an
// authUser route, req.Org, req.User and req.Policy are set and the org's
// offline mode is known to be on. Read bodies with s.readBody (in memory,
// limits and zstd handled) or s.bodyReader (streamed); answer with writeJSON
// or s.setBodyStream; return errors (snapshot sentinels map to statuses,
// or build one with badRequest, notFound, conflict, ...). Do store I/O with
// req.Ctx, which survives the start of a graceful shutdown; long polls
// should also select on s.stoppingCh() to answer at once when it begins.
package server
