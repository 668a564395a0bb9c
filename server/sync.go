package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// secret returns the chunk-ID secret: configured, or the one kept in the
// store (loaded once; retried on the next request if the store was down).
// Requests that need it while it loads share that load, and its failure:
// with a hung store they fail together after one store deadline instead of
// asking the store one after the other.
func (s *Server) secret(ctx context.Context) ([]byte, error) {
	s.secretMu.Lock()
	if s.chunkSecret == nil && len(s.opts.ChunkSecret) > 0 {
		s.chunkSecret = s.opts.ChunkSecret
	}
	if s.chunkSecret != nil {
		defer s.secretMu.Unlock()
		return s.chunkSecret, nil
	}
	load := s.secretLoad
	if load == nil {
		load = &secretLoad{done: make(chan struct{})}
		s.secretLoad = load
		// The load outlives a caller that gives up: the others wait for it.
		go s.loadSecret(context.WithoutCancel(ctx), load)
	}
	s.secretMu.Unlock()
	select {
	case <-load.done:
		return load.secret, load.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// loadSecret reads (or creates) the secret kept in the store for the
// callers waiting on load.
func (s *Server) loadSecret(ctx context.Context, load *secretLoad) {
	sec, err := snapshot.LoadOrCreateSecret(ctx, s.store)
	s.secretMu.Lock()
	if err == nil {
		s.chunkSecret = sec
	}
	s.secretLoad = nil
	s.secretMu.Unlock()
	load.secret, load.err = sec, err
	close(load.done)
}

type secretState struct {
	secretMu    sync.Mutex
	chunkSecret []byte
	secretLoad  *secretLoad // in flight, or nil
}

type secretLoad struct {
	done   chan struct{}
	secret []byte
	err    error
}

func queryUint(ctx *fasthttp.RequestCtx, name string, def uint64) (uint64, error) {
	v := ctx.QueryArgs().Peek(name)
	if v == nil {
		return def, nil
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, badRequest("query parameter %s=%q is not a non-negative integer", name, v)
	}
	return n, nil
}

// syncQuery is what GET /v1/sync asks for. min is a version the client
// knows exists (a patch receipt from another replica): a replica whose
// cached head trails it reads the head again.
type syncQuery struct {
	from, to, skip, min uint64
	wait                time.Duration
	format              int // of the delta pack
}

func (s *Server) parseSyncQuery(ctx *fasthttp.RequestCtx) (syncQuery, error) {
	var q syncQuery
	var err error
	if q.from, err = queryUint(ctx, "from", 0); err != nil {
		return q, err
	}
	if q.to, err = queryUint(ctx, "to", 0); err != nil {
		return q, err
	}
	if q.skip, err = queryUint(ctx, "skip", 0); err != nil {
		return q, err
	}
	if q.min, err = queryUint(ctx, "min", 0); err != nil {
		return q, err
	}
	if q.format, err = deltaFormat(ctx); err != nil {
		return q, err
	}
	if w := ctx.QueryArgs().Peek("wait"); w != nil {
		if q.wait, err = time.ParseDuration(string(w)); err != nil || q.wait < 0 {
			return q, badRequest("query parameter wait=%q is not a duration such as 30s", w)
		}
		q.wait = min(q.wait, s.opts.LongPollMax)
	}
	return q, nil
}

// sync handles GET /v1/sync?from=A[&to=B&skip=K][&wait=30s][&format=N]: an
// up-to-date answer, or one delta pack (in format N, see deltaFormat) from A
// to the head (or to B, when resuming an interrupted download of B,
// skipping the K chunks already received).
//
// The answer is committed to 200 only once the start of the pack is read
// and verified (see readWindow); a failure after that ends the pack with an
// abort frame. A version gc retired is unknown here even if this replica
// still has its manifest cached: a client at it gets a full sync, a resume
// of it a 404.
func (s *Server) sync(ctx *fasthttp.RequestCtx, req *request) error {
	q, err := s.parseSyncQuery(ctx)
	if err != nil {
		return err
	}
	head, target, err := s.syncTarget(req, q)
	if err != nil {
		return err
	}
	req.deep(func() { err = s.answerSync(ctx, req, q, head, target) })
	return err
}

// answerSync answers a sync once its target is known. It is apart from
// sync so that a long poll waits (in syncTarget) under small frames: the
// runtime halves a parked goroutine's stack only while a quarter of it is
// in use, and this frame is the largest of the request's (issue 10).
func (s *Server) answerSync(ctx *fasthttp.RequestCtx, req *request, q syncQuery, head, target uint64) error {
	if q.from == target {
		writeJSON(ctx, fasthttp.StatusOK, wire.UpToDate{UpToDate: true, Version: head, Policy: req.Policy})
		return nil
	}
	release, err := s.packs.claim(ctx, req, 5, "downloads")
	if err != nil {
		return err
	}
	src, err := s.planDelta(req, q, head, target)
	if err != nil {
		release()
		if q.wait > 0 && errors.Is(err, snapshot.ErrNotExist) {
			s.hub.forget(req.Org, req.User) // the head it knew is gone: read it next time
		}
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		// The slot is the pack's until its writer ends: the client read
		// it all, or left (its connection closed, fasthttp closes pr).
		defer release()
		err := wire.WriteDelta(req.Ctx, pw, src)
		if err != nil && !errors.Is(err, wire.ErrDeltaAborted) {
			// The client left, or could not keep up (aborts are logged
			// by abortDelta).
			s.log.Warn("delta pack interrupted", "request_id", req.ID, "org", req.Org, "user", req.User, "err", err)
			pw.CloseWithError(err)
			return
		}
		pw.Close()
	}()
	ctx.SetContentType(wire.ContentTypeDelta)
	ctx.Response.Header.Set("X-Deltasync-Version", strconv.FormatUint(src.Header.To, 10))
	s.setBodyStream(ctx, req, pr, -1)
	return nil
}

// syncTarget returns the head and the version to send: the head (after a
// long poll, if asked), or the version being resumed.
func (s *Server) syncTarget(req *request, q syncQuery) (head, target uint64, err error) {
	if q.to == 0 && q.wait > 0 {
		head, err = s.poll(req, q)
		return head, head, err
	}
	head, err = s.head(req.Ctx, req.Org, req.User)
	if err != nil {
		return 0, 0, err
	}
	if q.from > head || q.to > head || q.min > head {
		// The client knows of a newer version than the cached head (made
		// through another replica): read the head again.
		if head, err = s.freshHead(req); err != nil {
			return 0, 0, err
		}
	}
	if q.from > head {
		return 0, 0, notFound("version %d is unknown: the newest version is %d", q.from, head)
	}
	if q.to == 0 {
		return head, head, nil
	}
	if q.to > head || q.to < q.from {
		return 0, 0, notFound("version %d is unknown or older than %d: the newest version is %d", q.to, q.from, head)
	}
	return head, q.to, nil
}

// deltaFormat returns the delta-pack format the client asks for with
// format=N: none (a client from before format 3) gets format 2; a client
// newer than this server gets the newest format it writes, which the
// client tells by the pack's format byte.
func deltaFormat(ctx *fasthttp.RequestCtx) (int, error) {
	f, err := queryUint(ctx, "format", wire.DeltaFormat2)
	if err != nil {
		return 0, err
	}
	if f < wire.DeltaFormat2 {
		return 0, badRequest("delta format %d is not served: this server writes formats %d to %d", f, wire.DeltaFormat2, wire.DeltaFormat)
	}
	return int(min(f, wire.DeltaFormat)), nil
}

// planDelta reads the manifests, works out the pack and reads its first
// window: everything that can fail before the answer is committed.
func (s *Server) planDelta(req *request, q syncQuery, head, target uint64) (wire.DeltaSource, error) {
	var src wire.DeltaSource
	secret, err := s.secret(req.Ctx)
	if err != nil {
		return src, err
	}
	b, err := s.targetManifest(req, head, target)
	if err != nil {
		return src, err
	}
	a, err := s.baseManifest(req, q.from)
	if err != nil {
		return src, err
	}
	from := q.from
	if a == nil && from > 0 {
		if q.to != 0 {
			return src, notFound("version %d, the base of the download being resumed, is no longer available: start again", from)
		}
		from = 0 // the client replaces what it has
	}
	src.Script, src.Format = diff.Manifests(a, b), q.format
	needed := src.Script.Needed()
	if q.skip > uint64(len(needed)) {
		return src, badRequest("skip=%d but the delta from %d to %d has %d chunks", q.skip, from, target, len(needed))
	}
	newChunks := snapshot.NewReader(s.store, b, secret)
	w, err := readWindow(req.Ctx, newChunks, b, needed[q.skip:], s.opts.SyncVerifyBytes)
	if err != nil {
		return src, s.targetReadError(req, b, err)
	}
	src.NewChunks = w
	src.Abort = func(err error) *wire.AbortError { return s.abortDelta(req, b, err) }
	if a != nil {
		src.OldChunks = snapshot.NewReader(s.store, a, secret)
		src.OldChunkError = func(err error) { s.oldChunksFailed(req, a, err) }
	}
	src.Header.Org, src.Header.User = req.Org, req.User
	src.Header.From, src.Header.To, src.Header.Skip = from, target, int(q.skip)
	src.Header.IDSeeds = snapshot.NewHasher(secret, req.Org, req.User).Seeds()
	src.Header.Policy = req.Policy
	s.metrics.chunksServed.Add(float64(len(needed) - int(q.skip)))
	return src, nil
}

// targetManifest reads the manifest of the version to send. Any version
// but the head may have been retired by gc.
func (s *Server) targetManifest(req *request, head, target uint64) (*snapshot.Manifest, error) {
	if target == head {
		return s.manifest(req.Ctx, req.Org, req.User, target)
	}
	m, err := s.liveManifest(req.Ctx, req.Org, req.User, target)
	if errors.Is(err, snapshot.ErrNotExist) {
		return nil, &httpError{Status: fasthttp.StatusNotFound, Code: wire.CodeNotFound,
			Message: fmt.Sprintf("version %d is no longer available: sync again", target), Err: err}
	}
	return m, err
}

// baseManifest returns the manifest of the client's version, or nil when
// the client must get a full sync: version 0, a version gc retired, or one
// whose manifest cannot be read (damaged, or from a newer format), which
// must not make every sync of the client fail.
func (s *Server) baseManifest(req *request, v uint64) (*snapshot.Manifest, error) {
	if v == 0 {
		return nil, nil
	}
	m, err := s.liveManifest(req.Ctx, req.Org, req.User, v)
	switch {
	case err == nil:
		return m, nil
	case errors.Is(err, snapshot.ErrNotExist):
		return nil, nil
	case s.noteCorrupt(req, err):
		return nil, nil
	case errors.Is(err, snapshot.ErrUnsupportedVersion):
		s.log.Warn("base version unreadable: full sync", "request_id", req.ID, "org", req.Org, "user", req.User, "version", v, "err", err)
		return nil, nil
	}
	return nil, err
}

// targetReadError tells what a failure to read a chunk of version m means.
// A missing pack means gc retired m while it was being sent (404: the
// client starts again) if m's manifest is gone too; if the manifest is
// still there, the store lost an object a version references, which is
// damage like a flipped byte (500).
func (s *Server) targetReadError(req *request, m *snapshot.Manifest, err error) error {
	if !errors.Is(err, snapshot.ErrNotExist) {
		return err
	}
	key := snapshot.ManifestKey(m.Org, m.User, m.Version)
	_, serr := s.store.Stat(req.Ctx, key)
	switch {
	case errors.Is(serr, snapshot.ErrNotExist):
		s.manifests.drop(manifestKey{m.Org, m.User, m.Version})
		return &httpError{Status: fasthttp.StatusNotFound, Code: wire.CodeNotFound,
			Message: fmt.Sprintf("version %d was retired while it was being sent: sync again", m.Version), Err: err}
	case serr != nil:
		return fmt.Errorf("%w (and stat %s: %v)", err, key, serr)
	}
	obj := ""
	var oe *snapshot.ObjectError
	if errors.As(err, &oe) {
		obj = oe.Key
	}
	return &snapshot.ObjectError{Op: "read pack", Key: obj,
		Err: fmt.Errorf("missing, but version %d references it (%v): %w", m.Version, err, snapshot.ErrCorrupt)}
}

// abortDelta describes, for the abort frame, a chunk of version m that
// could not be read after the answer was committed to 200.
func (s *Server) abortDelta(req *request, m *snapshot.Manifest, err error) *wire.AbortError {
	err = s.targetReadError(req, m, err)
	he := classify(err)
	if he.Status != fasthttp.StatusNotFound && he.Status < 500 {
		he = &httpError{Status: fasthttp.StatusInternalServerError, Code: wire.CodeInternal, Message: "internal error"}
	}
	level := slog.LevelWarn
	if he.Status >= 500 {
		s.noteCorrupt(req, err)
		level = slog.LevelError
	}
	s.log.LogAttrs(context.Background(), level, "delta pack aborted", slog.String("request_id", req.ID),
		slog.String("org", req.Org), slog.String("user", req.User), slog.Uint64("version", m.Version),
		slog.Int("status", he.Status), slog.Any("error", err))
	return &wire.AbortError{Status: he.Status, Code: he.Code, Message: he.Message}
}

// oldChunksFailed is told when chunks of the client's version (read only
// as dictionaries) cannot be read; the pack goes on without them. A missing
// pack means gc retired that version: it is dropped from the cache, so the
// next sync from it is a full sync, as on any other replica.
func (s *Server) oldChunksFailed(req *request, a *snapshot.Manifest, err error) {
	if s.noteCorrupt(req, err) {
		return
	}
	if errors.Is(err, snapshot.ErrNotExist) {
		s.manifests.drop(manifestKey{a.Org, a.User, a.Version})
	}
	s.log.Warn("base version unreadable: chunks sent without dictionaries", "request_id", req.ID,
		"org", req.Org, "user", req.User, "version", a.Version, "err", err)
}

// poll is a long poll: it returns the head as soon as it is newer than
// q.from, or q.from when the wait is over (or the server shuts down). It
// waits in the hub (hub.go), registered before it looks at the head, so a
// version committed meanwhile cannot slip by. A user the hub keeps track
// of costs the store nothing here; otherwise the head is read once.
func (s *Server) poll(req *request, q syncQuery) (uint64, error) {
	// The hub's lock, contended, and the head read go deeper than the
	// worker's stack should (stack.go).
	var w *waiter
	var head uint64
	var known bool
	req.deep(func() {
		s.startWatcher()
		w, head, known = s.hub.register(req.Org, req.User, q.from)
	})
	defer req.deep(func() { s.hub.unregister(w) })
	if !known || q.from > head || q.min > head {
		var err error
		req.deep(func() { head, err = s.pollHead(req, w, q) })
		if err != nil {
			return 0, err
		}
	}
	if q.from > head {
		return 0, notFound("version %d is unknown: the newest version is %d", q.from, head)
	}
	if q.from < head {
		return head, nil
	}
	timer := time.NewTimer(q.wait)
	defer timer.Stop()
	select {
	case v := <-w.ch:
		return v, nil
	case <-timer.C:
		return q.from, nil
	case <-s.stoppingCh():
		return q.from, nil
	case <-req.Ctx.Done():
		return q.from, req.Ctx.Err()
	}
}

// pollHead reads the head of a long poll's user from the store: once for
// all the polls of that user that need it at the same time, and at most
// maxPollHeadReads users at once, so that devices reconnecting together
// (after a restart or a failover) queue here instead of overloading the
// store into timeouts they would come back from. A poll whose wait (at
// least minHeadReadWait) ends before its user's head was read is answered
// 503 with Retry-After; one
// woken meanwhile takes the version that woke it. A read whose polls have
// all left while it waits for its turn is dropped (sharedReads); one that
// has started finishes, for the hub.
func (s *Server) pollHead(req *request, w *waiter, q syncQuery) (uint64, error) {
	org, user := req.Org, req.User
	key := org + "/" + user
	// Another poll of the user may have read the head meanwhile; it will
	// do unless the client knows of a newer version.
	known := func() (uint64, bool) {
		v, ok := s.hub.knownHead(org, user)
		return v, ok && v >= q.from && v >= q.min
	}
	c := s.headReads.join(s.baseCtx, key, known, func(ctx context.Context) (uint64, error) {
		select {
		case s.headSlots <- struct{}{}:
			defer func() { <-s.headSlots }()
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-s.stoppingCh():
			return 0, context.Canceled
		}
		// Once started, the read finishes even if its polls leave: the
		// hub learns the head, and their retries need no read again (under
		// overload, reads cut short just before the end would be redone
		// forever). The store deadline bounds it.
		v, err := snapshot.Head(s.baseCtx, s.store, org, user)
		if err == nil {
			s.hub.observe(org, user, v)
			s.noteHead(org, user, v)
		}
		return v, err
	})
	defer s.headReads.leave(key, c)
	// A short poll may still wait for a read as long as a sync would.
	timer := time.NewTimer(max(q.wait, minHeadReadWait))
	defer timer.Stop()
	select {
	case <-c.done:
		return c.v, c.err
	case v := <-w.ch:
		return v, nil
	case <-req.Ctx.Done():
		return 0, req.Ctx.Err()
	case <-timer.C:
		return 0, errorf(fasthttp.StatusServiceUnavailable, wire.CodeUnavailable,
			"this server is catching up with reconnecting devices; retry shortly")
	}
}

// minHeadReadWait is the least a long poll waits for its first head read.
const minHeadReadWait = 5 * time.Second

// freshHead reads the caller's head from the store and tells the caches.
func (s *Server) freshHead(req *request) (uint64, error) {
	v, err := snapshot.Head(req.Ctx, s.store, req.Org, req.User)
	if err != nil {
		return 0, err
	}
	s.hub.observe(req.Org, req.User, v)
	s.noteHead(req.Org, req.User, v)
	return v, nil
}

// startWatcher starts the change-feed watcher, once: a replica that never
// holds a long poll never lists the feed.
func (s *Server) startWatcher() {
	s.watchOnce.Do(func() {
		s.watcher.started.Store(true)
		go s.watcher.run(s.baseCtx, s.stopping)
		if s.opts.Notifier != nil {
			go s.subscribe(s.baseCtx, s.stopping)
		}
	})
}

// checkVersion is the watcher's check of a version the feed names: its
// manifest is read (and cached for the syncs it wakes).
func (s *Server) checkVersion(ctx context.Context, k userKey, v uint64) error {
	_, err := s.cachedManifest(ctx, k.org, k.user, v)
	return err
}

// status handles GET /v1/status: what the app's settings page shows.
func (s *Server) status(ctx *fasthttp.RequestCtx, req *request) error {
	head, err := snapshot.Head(req.Ctx, s.store, req.Org, req.User)
	if err != nil {
		return err
	}
	st := wire.StatusResponse{Org: req.Org, User: req.User, Head: head, Policy: req.Policy}
	if head > 0 {
		m, err := s.manifest(req.Ctx, req.Org, req.User, head)
		if err != nil {
			return err
		}
		st.Records, st.StreamBytes, st.StoredBytes = m.Records, m.StreamLen, m.StoredBytes()
		st.Chunks, st.UpdatedUnix = len(m.Chunks), m.CreatedUnix
	}
	writeJSON(ctx, fasthttp.StatusOK, st)
	return nil
}

// chunk handles GET /v1/chunks/{id}: one raw chunk, only if the caller's
// head version references it (IDs are scoped per user, so a guessed ID of
// another user's chunk simply does not exist here). Immutable and cacheable.
func (s *Server) chunk(ctx *fasthttp.RequestCtx, req *request) error {
	id, err := snapshot.ParseChunkID(req.Param("id"))
	if err != nil {
		return badRequest("%v", err)
	}
	head, err := s.head(req.Ctx, req.Org, req.User)
	if err != nil {
		return err
	}
	cm, idx, err := s.findChunk(req, head, id)
	if errors.Is(err, snapshot.ErrNotExist) {
		// The cached head may trail a version made through another replica.
		if head, err = snapshot.Head(req.Ctx, s.store, req.Org, req.User); err != nil {
			return err
		}
		s.noteHead(req.Org, req.User, head)
		cm, idx, err = s.findChunk(req, head, id)
	}
	if err != nil {
		return err
	}
	etag := `"` + id.String() + `"`
	ctx.Response.Header.Set("ETag", etag)
	ctx.Response.Header.Set("Cache-Control", "private, max-age=31536000, immutable")
	if string(ctx.Request.Header.Peek("If-None-Match")) == etag {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return nil
	}
	key := chunkKey{req.Org + "/" + req.User, id}
	body, ok := s.chunks.get(key)
	if !ok {
		secret, err := s.secret(req.Ctx)
		if err != nil {
			return err
		}
		err = snapshot.NewReader(s.store, cm.m, secret).Chunks(req.Ctx, []int{idx}, func(_ int, raw []byte) error {
			body = append([]byte(nil), raw...)
			return nil
		})
		if err != nil {
			return err
		}
		s.chunks.put(key, body)
	}
	s.metrics.chunksServed.Inc()
	ctx.SetContentType("application/octet-stream")
	ctx.SetBody(body)
	s.metrics.bytesSent.WithLabelValues(req.Route).Add(float64(len(body)))
	return nil
}

// findChunk looks a chunk up in version head of the caller's data set.
func (s *Server) findChunk(req *request, head uint64, id snapshot.ChunkID) (*cachedManifest, int, error) {
	if head == 0 {
		return nil, 0, notFound("chunk %s is not part of your data", id)
	}
	cm, err := s.cachedManifest(req.Ctx, req.Org, req.User, head)
	if err != nil {
		return nil, 0, err
	}
	idx, ok := cm.chunkIndex(id)
	if !ok {
		return nil, 0, fmt.Errorf("chunk %s is not part of your data: %w", id, snapshot.ErrNotExist)
	}
	return cm, idx, nil
}

// changes handles GET /v1/admin/changes?after=CURSOR&limit=N: the durable,
// ordered feed of accepted change sets.
func (s *Server) changes(ctx *fasthttp.RequestCtx, req *request) error {
	limit, err := queryUint(ctx, "limit", 100)
	if err != nil {
		return err
	}
	if limit == 0 || limit > 1000 {
		return badRequest("limit must be 1..1000")
	}
	entries, next, err := diff.ReadFeed(req.Ctx, s.store, diff.FeedOptions{
		After: string(ctx.QueryArgs().Peek("after")), Limit: int(limit), Settle: s.opts.FeedSettle, Now: s.opts.now()})
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"entries": withBlobRefs(entries), "next": next}) // blobs_read.go
	return nil
}
