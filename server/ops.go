package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// readyProbeKey is Stat-ed by /readyz. It normally does not exist: a store
// that answers "does not exist" in time is reachable. The "_" prefix keeps
// it out of every org's namespace (see snapshot.ValidateName).
const readyProbeKey = "_deltasync/readyz-probe"

type healthResponse struct {
	Status string `json:"status"`
}

// healthz answers 200 while the process runs: liveness, nothing more.
func (s *Server) healthz(ctx *fasthttp.RequestCtx, _ *request) error {
	writeJSON(ctx, fasthttp.StatusOK, healthResponse{Status: "ok"})
	return nil
}

// readyz answers 200 if the store answers a Stat within ReadyTimeout, and
// 503 otherwise (or while shutting down), so a load balancer sends traffic
// only to replicas that can serve it.
func (s *Server) readyz(ctx *fasthttp.RequestCtx, req *request) error {
	select {
	case <-s.stoppingCh():
		return &httpError{Status: fasthttp.StatusServiceUnavailable, Code: wire.CodeUnavailable, Message: "shutting down"}
	default:
	}
	c, cancel := context.WithTimeout(req.Ctx, s.opts.ReadyTimeout)
	defer cancel()
	_, err := s.store.Stat(c, readyProbeKey)
	if err != nil && !errors.Is(err, snapshot.ErrNotExist) {
		return &httpError{Status: fasthttp.StatusServiceUnavailable, Code: wire.CodeUnavailable,
			Message: "store unreachable", Err: fmt.Errorf("readiness probe: %w", err)}
	}
	writeJSON(ctx, fasthttp.StatusOK, healthResponse{Status: "ready"})
	return nil
}
