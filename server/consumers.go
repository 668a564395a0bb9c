package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// Consumers of an org's change feed (diff.Consumer): the backend registers
// a named consumer and acknowledges its cursor with
// PUT /v1/admin/orgs/{org}/consumers/{name} {"cursor": …}; gc keeps every
// version whose entry a consumer has not acknowledged. GET lists them or
// shows one, DELETE unregisters one (its entries are then gc's to take).
// Names starting with "_" are the server's own (the webhook's) and cannot
// be written here.

// consumerBody is the body of PUT …/consumers/{name}: the acknowledged
// cursor, "" for nothing yet (the whole feed is kept), or "now" for the
// feed's current end (less the settle time).
type consumerBody struct {
	Cursor *string `json:"cursor"`
}

// consumerPath validates the {org} and {name} path parameters of the
// routes of one consumer.
func consumerPath(req *request) (org, name string, err error) {
	if org, err = adminOrg(req); err != nil {
		return "", "", err
	}
	name = req.Param("name")
	if err := diff.ValidateConsumerName(name); err != nil {
		return "", "", badRequest("%v", err)
	}
	return org, name, nil
}

// putConsumer handles PUT /v1/admin/orgs/{org}/consumers/{name}: it
// registers the consumer or moves its cursor (back too: an entry gc has
// not removed can be read again), with compare-and-swap.
func (s *Server) putConsumer(ctx *fasthttp.RequestCtx, req *request) error {
	org, name, err := consumerPath(req)
	if err != nil {
		return err
	}
	body, err := s.readBody(ctx, maxAdminJSONBytes)
	if err != nil {
		return err
	}
	var b consumerBody
	if err := decodeJSON(body, &b); err != nil {
		return err
	}
	if b.Cursor == nil {
		return badRequest(`give {"cursor": …}: a position from the feed, "" for the start, or "now"`)
	}
	cursor := *b.Cursor
	if cursor == "now" {
		cursor = diff.FeedPositionAt(s.opts.now().Add(-s.opts.FeedSettle))
	}
	if err := diff.CheckCursor(cursor, s.opts.now()); err != nil {
		return badRequest("%v", err)
	}
	c, err := s.ackConsumer(req.Ctx, org, name, cursor)
	if err != nil {
		return err
	}
	s.log.Info("feed consumer acknowledged", "request_id", req.ID, "org", org, "consumer", name, "cursor", cursor)
	writeJSON(ctx, fasthttp.StatusOK, c)
	return nil
}

// maxConsumersPerOrg bounds an org's consumers (the webhook's included):
// each one holds versions from gc and costs the feed worker a lag count
// per round.
const maxConsumersPerOrg = 32

// ackConsumer sets a consumer's cursor, registering it if need be, and
// returns it as stored.
func (s *Server) ackConsumer(ctx context.Context, org, name, cursor string) (*diff.Consumer, error) {
	for range maxSettingsAttempts {
		c, err := diff.ReadConsumer(ctx, s.store, org, name)
		now := s.opts.now().Unix()
		switch {
		case errors.Is(err, snapshot.ErrNotExist):
			if err := s.roomForConsumer(ctx, org); err != nil {
				return nil, err
			}
			c = &diff.Consumer{Org: org, Name: name, RegisteredUnix: now}
		case err != nil:
			return nil, err
		}
		c.Cursor, c.AckedUnix = cursor, now
		err = diff.PutConsumer(ctx, s.store, c)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, snapshot.ErrExist) && !errors.Is(err, snapshot.ErrPrecondition) && !errors.Is(err, snapshot.ErrNotExist) {
			return nil, err
		}
	}
	return nil, conflict("consumer %s of org %s changed concurrently too often; retry", name, org)
}

// roomForConsumer refuses a new consumer for an org that has
// maxConsumersPerOrg.
func (s *Server) roomForConsumer(ctx context.Context, org string) error {
	n := 0
	err := s.store.List(ctx, snapshot.ConsumersPrefix+org+"/", func(snapshot.ObjectInfo) error { n++; return nil })
	if err != nil {
		return err
	}
	if n >= maxConsumersPerOrg {
		return conflict("org %s has %d consumers, the most allowed: delete one it no longer needs", org, n)
	}
	return nil
}

// getConsumer handles GET /v1/admin/orgs/{org}/consumers/{name}.
func (s *Server) getConsumer(ctx *fasthttp.RequestCtx, req *request) error {
	org, name, err := consumerPath(req)
	if err != nil {
		return err
	}
	c, err := diff.ReadConsumer(req.Ctx, s.store, org, name)
	if errors.Is(err, snapshot.ErrNotExist) {
		return notFound("org %s has no consumer %s", org, name)
	}
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, c)
	return nil
}

// listConsumers handles GET /v1/admin/orgs/{org}/consumers.
func (s *Server) listConsumers(ctx *fasthttp.RequestCtx, req *request) error {
	org, err := adminOrg(req)
	if err != nil {
		return err
	}
	cs, err := diff.ReadConsumers(req.Ctx, s.store, org)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"consumers": cs})
	return nil
}

// deleteConsumer handles DELETE /v1/admin/orgs/{org}/consumers/{name}.
func (s *Server) deleteConsumer(ctx *fasthttp.RequestCtx, req *request) error {
	org, name, err := consumerPath(req)
	if err != nil {
		return err
	}
	key := snapshot.ConsumerKey(org, name)
	if _, err := s.store.Stat(req.Ctx, key); errors.Is(err, snapshot.ErrNotExist) {
		return notFound("org %s has no consumer %s", org, name)
	} else if err != nil {
		return err
	}
	if err := s.store.Delete(req.Ctx, key); err != nil {
		return fmt.Errorf("delete consumer: %w", err)
	}
	s.log.Info("feed consumer deleted", "request_id", req.ID, "org", org, "consumer", name)
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"deleted": name})
	return nil
}
