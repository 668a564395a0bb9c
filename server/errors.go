package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// httpError is an error that knows its HTTP answer. Handlers return one (or
// any error: see classify) and the dispatcher writes it as a wire.ErrorBody.
type httpError struct {
	Status  int
	Code    string // one of the wire.Code* constants
	Message string // shown to the client
	Err     error  // cause, logged but never shown
}

func (e *httpError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Status, e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
}

func (e *httpError) Unwrap() error { return e.Err }

// errorf builds an httpError with a formatted client-visible message.
func errorf(status int, code, format string, args ...any) *httpError {
	return &httpError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *httpError {
	return errorf(fasthttp.StatusBadRequest, wire.CodeBadRequest, format, args...)
}

func unauthorized(msg string) *httpError {
	return &httpError{Status: fasthttp.StatusUnauthorized, Code: wire.CodeUnauthorized, Message: msg}
}

func forbidden(msg string) *httpError {
	return &httpError{Status: fasthttp.StatusForbidden, Code: wire.CodeForbidden, Message: msg}
}

func notFound(format string, args ...any) *httpError {
	return errorf(fasthttp.StatusNotFound, wire.CodeNotFound, format, args...)
}

func conflict(format string, args ...any) *httpError {
	return errorf(fasthttp.StatusConflict, wire.CodeConflict, format, args...)
}

func tooLarge(limit int64) *httpError {
	return errorf(fasthttp.StatusRequestEntityTooLarge, wire.CodeTooLarge, "request body exceeds the limit of %d bytes", limit)
}

func rateLimited(msg string) *httpError {
	return &httpError{Status: fasthttp.StatusTooManyRequests, Code: wire.CodeRateLimited, Message: msg}
}

// classify maps any error to its HTTP answer:
//
//	*httpError                       as given
//	snapshot.ErrNotExist             404 not_found
//	snapshot.ErrInvalid              400 bad_request
//	ErrExist, ErrPrecondition        409 conflict
//	ErrUnavailable                   503 unavailable, with Retry-After
//	ErrCorrupt, ErrUnsupportedVersion 500 internal (the stored data is bad)
//	anything else                    503 unavailable (store or network)
//
// Messages of 4xx answers carry the error text (it describes the caller's
// input); 5xx answers say only what failed, the cause goes to the log.
func classify(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	switch {
	case errors.Is(err, snapshot.ErrNotExist):
		return &httpError{Status: fasthttp.StatusNotFound, Code: wire.CodeNotFound, Message: err.Error(), Err: err}
	case errors.Is(err, snapshot.ErrInvalid):
		return &httpError{Status: fasthttp.StatusBadRequest, Code: wire.CodeBadRequest, Message: err.Error(), Err: err}
	case errors.Is(err, snapshot.ErrExist), errors.Is(err, snapshot.ErrPrecondition):
		return &httpError{Status: fasthttp.StatusConflict, Code: wire.CodeConflict, Message: err.Error(), Err: err}
	case errors.Is(err, snapshot.ErrUnavailable):
		return &httpError{Status: fasthttp.StatusServiceUnavailable, Code: wire.CodeUnavailable, Message: "storage did not answer in time, retry later", Err: err}
	case errors.Is(err, snapshot.ErrCorrupt), errors.Is(err, snapshot.ErrUnsupportedVersion):
		return &httpError{Status: fasthttp.StatusInternalServerError, Code: wire.CodeInternal, Message: "stored data failed verification", Err: err}
	case errors.Is(err, context.Canceled):
		return &httpError{Status: fasthttp.StatusServiceUnavailable, Code: wire.CodeUnavailable, Message: "server is shutting down", Err: err}
	default:
		return &httpError{Status: fasthttp.StatusServiceUnavailable, Code: wire.CodeUnavailable, Message: "storage unavailable, retry later", Err: err}
	}
}

// writeError answers the request with err as a JSON wire.ErrorBody. A
// streamed response body that a handler set before failing is discarded.
func (s *Server) writeError(ctx *fasthttp.RequestCtx, req *request, err error) {
	he := classify(err)
	if clientGone(req) {
		// Nobody reads this answer; the status tells logs and metrics.
		he = &httpError{Status: statusClientClosed, Code: wire.CodeUnavailable, Message: "client closed the connection", Err: err}
	}
	if he.Status >= 500 {
		s.noteCorrupt(req, err)
		s.log.LogAttrs(context.Background(), slog.LevelError, "request failed",
			slog.String("request_id", req.ID), slog.String("route", req.Route),
			slog.Int("status", he.Status), slog.Any("error", err))
	}
	writeErrorBody(ctx, he.Status, he.Code, he.Message)
	if he.Status == fasthttp.StatusServiceUnavailable && len(ctx.Response.Header.Peek(fasthttp.HeaderRetryAfter)) == 0 {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, s.retryAfterUnavailable(err))
	}
	if he.Status == fasthttp.StatusUnauthorized {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="deltasync", error="invalid_token"`)
	}
}

// statusClientClosed is the status logged for a request whose client
// left before the answer (nginx's 499).
const statusClientClosed = 499

// retryAfterUnavailable is the Retry-After of a 503: a store that did not
// answer gets a store timeout's rest, anything else a second.
func (s *Server) retryAfterUnavailable(err error) string {
	if errors.Is(err, snapshot.ErrUnavailable) {
		return retryAfter(s.opts.StoreTimeout)
	}
	return "1"
}

func writeErrorBody(ctx *fasthttp.RequestCtx, status int, code, msg string) {
	ctx.Response.ResetBody()
	ctx.Response.Header.Del(fasthttp.HeaderContentEncoding)
	ctx.Response.Header.Del(fasthttp.HeaderETag)
	ctx.Response.Header.Del(fasthttp.HeaderCacheControl)
	writeJSON(ctx, status, wire.ErrorBody{Error: wire.ErrorDetail{Code: code, Message: msg}})
}

// writeJSON answers with v encoded as JSON.
func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a programming error (an unencodable type) gets here.
		status = fasthttp.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"cannot encode response"}}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b = append(b, '\n')
	ctx.SetBody(b)
}
