package server

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// sync handles GET /v1/sync?from=A[&to=B&skip=K][&wait=30s]: an up-to-date
// answer, or one delta pack from A to the head (or to B, when resuming an
// interrupted download of B, skipping the K chunks already received).
func (s *Server) sync(ctx *fasthttp.RequestCtx, req *request) error {
	from, err := queryUint(ctx, "from", 0)
	if err != nil {
		return err
	}
	to, err := queryUint(ctx, "to", 0)
	if err != nil {
		return err
	}
	skip, err := queryUint(ctx, "skip", 0)
	if err != nil {
		return err
	}
	var wait time.Duration
	if w := ctx.QueryArgs().Peek("wait"); w != nil {
		if wait, err = time.ParseDuration(string(w)); err != nil || wait < 0 {
			return badRequest("query parameter wait=%q is not a duration such as 30s", w)
		}
		wait = min(wait, s.opts.LongPollMax)
	}
	head, err := s.head(req.Ctx, req.Org, req.User)
	if err != nil {
		return err
	}
	if from > head || to > head {
		// A client may know of a newer version than the cached head.
		if head, err = snapshot.Head(req.Ctx, s.store, req.Org, req.User); err != nil {
			return err
		}
		s.noteHead(req.Org, req.User, head)
	}
	if from > head {
		return notFound("version %d is unknown: the newest version is %d", from, head)
	}
	if to == 0 && from == head && wait > 0 {
		if head, err = s.waitForVersion(req, from, wait); err != nil {
			return err
		}
	}
	target := head
	if to != 0 {
		if to > head || to < from {
			return notFound("version %d is unknown or older than %d: the newest version is %d", to, from, head)
		}
		target = to
	}
	if from == target {
		writeJSON(ctx, fasthttp.StatusOK, wire.UpToDate{UpToDate: true, Version: head, Policy: req.Policy})
		return nil
	}
	secret, err := s.secret(req.Ctx)
	if err != nil {
		return err
	}
	b, err := s.manifest(req.Ctx, req.Org, req.User, target)
	if err != nil {
		return err
	}
	var a *snapshot.Manifest
	if from > 0 {
		a, err = s.manifest(req.Ctx, req.Org, req.User, from)
		if errors.Is(err, snapshot.ErrNotExist) {
			// The client's version was retired by garbage collection: it
			// gets a full sync (from 0) and replaces what it has.
			a, from = nil, 0
		} else if err != nil {
			return err
		}
	}
	src := wire.DeltaSource{Script: diff.Manifests(a, b), NewChunks: snapshot.NewReader(s.store, b, secret)}
	if a != nil {
		src.OldChunks = snapshot.NewReader(s.store, a, secret)
	}
	needed := len(src.Script.Needed())
	if skip > uint64(needed) {
		return badRequest("skip=%d but the delta from %d to %d has %d chunks", skip, from, target, needed)
	}
	src.Header.Org, src.Header.User = req.Org, req.User
	src.Header.From, src.Header.To, src.Header.Skip = from, target, int(skip)
	src.Header.IDSeeds = snapshot.NewHasher(secret, req.Org, req.User).Seeds()
	src.Header.Policy = req.Policy
	s.metrics.chunksServed.Add(float64(needed - int(skip)))

	pr, pw := io.Pipe()
	go func() {
		err := wire.WriteDelta(req.Ctx, pw, src)
		if err != nil {
			s.log.Warn("delta pack interrupted", "request_id", req.ID, "org", req.Org, "user", req.User, "err", err)
		}
		pw.CloseWithError(err)
	}()
	ctx.SetContentType(wire.ContentTypeDelta)
	ctx.Response.Header.Set("X-Deltasync-Version", strconv.FormatUint(target, 10))
	s.setBodyStream(ctx, req, pr, -1)
	return nil
}

// waitForVersion long-polls until a version newer than from exists, the
// wait is over, or the server shuts down. It polls the store (a Stat of the
// next manifest), so it sees versions written by any replica.
func (s *Server) waitForVersion(req *request, from uint64, wait time.Duration) (uint64, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	key := snapshot.ManifestKey(req.Org, req.User, from+1)
	for {
		select {
		case <-deadline.C:
			return from, nil
		case <-s.stoppingCh():
			return from, nil
		case <-req.Ctx.Done():
			return from, req.Ctx.Err()
		case <-tick.C:
			if _, err := s.store.Stat(req.Ctx, key); err == nil {
				v, err := snapshot.Head(req.Ctx, s.store, req.Org, req.User)
				if err == nil {
					s.noteHead(req.Org, req.User, v)
				}
				return v, err
			} else if !errors.Is(err, snapshot.ErrNotExist) {
				return 0, err
			}
		}
	}
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
		After: string(ctx.QueryArgs().Peek("after")), Limit: int(limit), Settle: s.opts.FeedSettle})
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []diff.FeedEntry{}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"entries": entries, "next": next})
	return nil
}
