// Package server is the deltasync HTTP service that mobile clients sync
// with, built on fasthttp. It is stateless apart from short-lived caches:
// every replica works on the shared snapshot.Store, so any number of them
// can run behind a load balancer.
//
// # Frame
//
// New builds a Server from Options (see DefaultOptions and Validate). The
// package reads no flags and no environment: `deltasync serve` (cmd) maps
// its flags and DELTASYNC_* variables onto Options. Serve / ListenAndServe run it; Shutdown stops accepting
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
// an admin token carries "admin": true and alone opens /v1/admin. An admin
// token with an "org" claim administers that org only: every route of
// another org, and the deployment-wide ones (the deployment's change feed),
// answer it 403; without "org" it is the deployment's admin. MintToken
// signs HS256 tokens for the `deltasync token` command.
//
// The JWT library checks only signatures; the claims are decoded exactly
// (claims.go): names are case-sensitive ("Admin" is refused, not read as
// "admin"), duplicate names are refused at any depth, exp, iat and nbf
// must be numbers, iat may not lie in the future, and exp - iat (or exp -
// now without iat) may not exceed Options.JWTMaxLifetime. Verified tokens
// are cached, and every use re-checks the time rules. A request with more
// than one Authorization header is refused, whichever of them is valid.
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
// # Floods, hung stores and oversize bodies
//
// Connections come through a listener (listener.go) that never gives up on
// running out of file descriptors (it backs off and retries, as net/http
// does), refuses connections over Options.MaxConns (503) or
// Options.MaxConnsPerIP (429) at once, and lingers on closing a connection
// whose refused body may still be on its way. A request's headers must
// arrive within Options.HeaderTimeout; its body then has ReadTimeout.
// Admission (admission.go: the route, the token, the body's announced
// length against the route's limit) runs before a byte of the body is
// read, and answers "Expect: 100-continue" with the final status of a
// refusal. Every store call has a deadline (the snapshot/deadline wrapper,
// Options.StoreTimeout and StoreMinRate); one that runs out answers 503
// with Retry-After. A request's context ends when its client closes the
// connection while the handler works (lifecycle in guards.go), so an
// abandoned long poll or patch stops; a patch that was committed anyway
// is found by its retry (same patch id), which gets the stored answer.
//
// # Long polls, the change hub and the feed watcher
//
// A device that is up to date holds a long poll (GET /v1/sync?from=V&wait=30s)
// and must cost the store nothing while it waits. Long polls wait in the
// replica's change hub (hub.go), keyed by org and user, which knows each
// user's head: read from the store once, when the hub first meets the
// user, and kept current from then on. A version committed through this
// replica (patch, upload) wakes the user's polls at once (noteHead
// publishes it). Versions committed elsewhere (other replicas, batch
// builds) are learned by one change-feed watcher per replica
// (watcher.go), started by the first long poll: every WatchOptions.Interval
// it lists the feed after a position a window behind its last round
// (Store.ListAfter: one request, whatever the number of devices), reads the
// manifest of each new version that someone here waits for, and wakes them
// (the sync they make then finds the manifest cached). Changes of org
// settings are announced in the feed too (announceSettings), so a long poll
// takes the settings from the cache and reads nothing at all. An optional
// Notifier (Options.Notifier; redisnotify is Redis pub/sub) carries commits
// between replicas in milliseconds; its notes are checked like feed
// entries, and the watcher keeps running as the safety net. Polls that
// meet a user for the first time share one head read per user, at most
// maxPollHeadReads at once, so a fleet reconnecting together queues
// instead of overloading the store. A client
// that left is noticed (lifecycle): its waiter leaves the hub at once. A
// user nobody waited for in Options.HubIdleGrace is forgotten.
//
// Read-your-writes across replicas without sticky sessions: a client names
// the newest version it knows exists (min=V, from a patch receipt); a
// replica whose cached head is older reads the head again.
//
// Store requests are counted by kind and outcome, with latency histograms,
// in /metrics (snapshot/storemetrics, right around the backend), beside the
// hub's waiters and wake-ups and the watcher's rounds.
//
// # The app's backend
//
// The backend (the app's system of record) writes through admin patches,
// to one user or fanned out to many (backend.go), replayed by diff.Apply
// like a device's patch, O(change) per user; their commits wake devices'
// long polls like any other (committed: the hub here, the notifier for the
// other replicas). It reads what happened from its org's change feed
// (orgfeed.go: diff.Events, with a long poll that waits in memory like a
// device's, orgfeedhub.go: woken by news of the org's entries from this
// replica's commits, the watcher and the notifier, once they are old
// enough to be read, so a waiting reader costs the store nothing, and
// readers woken together share one read of the feed) and
// registers named consumers whose acknowledged cursors gc respects
// (consumers.go). Optionally the server pushes the feed to the org's
// webhook (webhook.go) and asks the org's validation URL about each
// device patch before replaying it (validation.go); both are signed with
// the org's webhook secret (wire.Sign) and may not reach private addresses
// unless BackendOptions.HooksAllowPrivate. Webhook delivery and the
// consumer lag metrics run in the feed worker, on the one replica holding
// the deployment's lease (feedworker.go, lease.go).
//
// # Adding endpoints
//
// A handler is a handlerFunc: func(*fasthttp.RequestCtx, *request) error.
// Register it in routes.go with s.handle(method, pattern, name, auth, h);
// the pattern may hold "{param}" segments read with req.Param. A route that
// reads a body declares its limit in bodyLimitFor (admission.go), so that
// an oversize body is refused from its headers. On an
// authUser route, req.Org, req.User and req.Policy are set and the org's
// offline mode is known to be on. Read bodies with s.readBody (in memory,
// limits and zstd handled) or s.bodyReader (streamed; its zstd decoder
// takes memory from the server's budget, decodemem.go); answer with writeJSON
// or s.setBodyStream; return errors (snapshot sentinels map to statuses,
// or build one with badRequest, notFound, conflict, ...). Do store I/O with
// req.Ctx, which survives the start of a graceful shutdown; long polls
// should also select on s.stoppingCh() to answer at once when it begins.
//
// # Sync, gc and damaged data
//
// Manifests are cached per replica, but gc (a separate process) retires
// old versions at any time, so a cached version other than the head is used
// only after a Stat shows it still exists (liveManifest): a client at a
// retired version gets a full sync from every replica alike, a resume of
// one gets 404. A sync commits to 200 only once the first
// Options.SyncVerifyBytes of the pack's chunks are read and verified
// (windowGetter); a chunk that fails later ends the pack with a
// wire.AbortError frame instead of a cut stream: 404 when gc retired the
// version meanwhile (its manifest is gone too), 500 when the store lost or
// damaged an object a live version references. Old chunks are read only as
// dictionaries: if gc deleted them under a running delta, the new chunks
// go whole. Damage is logged at ERROR naming the object and counted in
// deltasync_corrupt_objects_total{kind} (noteCorrupt, also for every 5xx
// error answer).
package server
