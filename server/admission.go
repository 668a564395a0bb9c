package server

import (
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/wire"
)

// Admission is what the server decides from a request's headers alone,
// before a byte of its body is read: the route, the caller's token, and the
// body's announced length against the route's limit. Every request passes
// it (admit); a phone must not spend its data plan on a body that will be
// refused, nor a hostile client hold a connection sending one.
//
// fasthttp reads the start of a body (up to 8 KiB, and a whole multipart
// form) before it calls the handler, unless the request carries
// "Expect: 100-continue": then it asks ExpectHandler first, and on a refusal
// answers with the final status and closes the connection without reading
// the body. So:
//
//   - headerReceived, run as soon as the headers are parsed, spots requests
//     whose body will surely be refused (no route, no or a bad token, a user
//     token on an admin route, a Content-Length over the route's limit) with
//     checks that do no I/O. One with a body too big to be read and thrown
//     away (maxDrainedBody) it marks "Expect: 100-continue", so that fasthttp
//     reads none of it and closes the connection after the answer
//     (lingering, so that a client already sending sees the answer); a
//     smaller one keeps the connection, and must arrive within HeaderTimeout;
//   - expectContinue, fasthttp's ExpectHandler, runs the full admission
//     (admit: routing, authentication with the org policy, body limit) and
//     answers a refusal with its final 4xx and JSON error instead of
//     "100 Continue"; an admitted request is kept for serveHTTP, so it is
//     not authenticated (nor rate-limited) twice;
//   - serveHTTP admits the other requests the same way before the handler.
//
// HTTP/1.0 has no 100-continue; such a request is still refused before the
// handler reads its body, after fasthttp's first 8 KiB.

// admittedKey is the user value under which expectContinue leaves an
// admitted request for serveHTTP.
type admittedKey struct{}

type admitted struct {
	req   *request
	route *route
}

// newRequest starts the server's record of a request: its id, echoed in
// the response header.
func (s *Server) newRequest(ctx *fasthttp.RequestCtx) *request {
	req := &request{Ctx: s.baseCtx, ID: s.requestID(ctx.Request.Header.Peek(headerRequestID))}
	ctx.Response.Header.Set(headerRequestID, req.ID)
	return req
}

// admit routes the request, authenticates it for the route and checks its
// announced body length against the route's limit. It fills req (route
// name, parameters, claims) and returns the route, or the error to answer.
func (s *Server) admit(ctx *fasthttp.RequestCtx, req *request) (*route, error) {
	if err := checkCanonicalPath(ctx.Request.URI().PathOriginal()); err != nil {
		req.Route = "bad_path"
		return nil, err
	}
	method, path := string(ctx.Method()), string(ctx.Path())
	r, params, allowed := s.router.match(method, path)
	if r == nil {
		if len(allowed) > 0 {
			req.Route = "method_not_allowed"
			ctx.Response.Header.Set(fasthttp.HeaderAllow, strings.Join(allowed, ", "))
			return nil, errorf(fasthttp.StatusMethodNotAllowed, wire.CodeMethodNotAllowed,
				"method %s not allowed; use %s", method, strings.Join(allowed, ", "))
		}
		req.Route = "not_found"
		return nil, notFound("no such endpoint: %s", path)
	}
	req.Route, req.params = r.name, params
	if err := s.authenticate(ctx, req, r.auth); err != nil {
		return nil, err
	}
	if err := s.checkContentLength(&ctx.Request.Header, s.bodyLimit(req)); err != nil {
		return nil, err
	}
	return r, nil
}

// checkContentLength refuses, from the headers alone, a body whose
// announced length exceeds what limit (decoded bytes; 0: no limit known
// here) allows on the wire. An unknown Content-Encoding is refused too
// (415), since such a body cannot be read at all.
func (s *Server) checkContentLength(h *fasthttp.RequestHeader, limit int64) error {
	if limit <= 0 || !hasBody(h) {
		return nil
	}
	enc, err := headerEncoding(h)
	if err != nil {
		return err
	}
	if cl := h.ContentLength(); cl > 0 && int64(cl) > wireLimit(enc, limit) {
		return tooLarge(limit)
	}
	return nil
}

// hasBody reports whether a request announces a body: a positive
// Content-Length, or a chunked one (-1).
func hasBody(h *fasthttp.RequestHeader) bool {
	cl := h.ContentLength()
	return cl > 0 || cl == -1
}

// expectContinue is fasthttp's ExpectHandler: "100 Continue" for an
// admitted request, else the final status of the refusal, with its JSON
// error already written (fasthttp then closes the connection, unread).
func (s *Server) expectContinue(ctx *fasthttp.RequestCtx) int {
	start := time.Now()
	req := s.newRequest(ctx)
	r, err := s.admit(ctx, req)
	if err == nil {
		ctx.SetUserValue(admittedKey{}, &admitted{req: req, route: r})
		return fasthttp.StatusContinue
	}
	s.metrics.inFlight.Inc() // finish counts the request out
	s.writeError(ctx, req, err)
	if c, ok := ctx.Conn().(*conn); ok {
		// fasthttp closes the connection after this answer, and the body
		// may be on its way (from a client that did not ask, or did not
		// wait for 100 Continue): linger, so that the client reads it.
		c.lingerOnClose()
	}
	s.finish(ctx, req, start)
	return ctx.Response.StatusCode()
}

// headerReceived runs as soon as a request's headers are parsed. It gives
// the body its own read deadline (Options.ReadTimeout; the headers had
// Options.HeaderTimeout), and marks "Expect: 100-continue" a request
// whose body would surely be refused, so that none of it is read (see the
// comment at the top of this file).
func (s *Server) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	conf := fasthttp.RequestConfig{ReadTimeout: s.opts.ReadTimeout}
	if conf.ReadTimeout <= 0 {
		conf.ReadTimeout = noTimeout // 0 would leave the headers' deadline on the body
	}
	if s.surelyRefused(h) {
		if h.ContentLength() > maxDrainedBody {
			h.Set(fasthttp.HeaderExpect, "100-continue")
		} else {
			// fasthttp reads (and after the answer discards) a body this
			// small to keep the connection: it must come at once.
			conf.ReadTimeout = s.opts.HeaderTimeout
		}
	}
	return conf
}

// noTimeout is a read deadline that never comes (Options.ReadTimeout 0).
const noTimeout = 100 * 365 * 24 * time.Hour

// maxDrainedBody is the most of a refused body that fasthttp reads and
// discards to keep a connection alive (its maxUnreadStreamBodySize); past
// it, the connection is closed anyway, so the body is better not read.
const maxDrainedBody = 256 << 10

// surelyRefused is a cheap, I/O-free forecast of admit for a request with
// a body. A wrong forecast costs little either way: admit decides.
func (s *Server) surelyRefused(h *fasthttp.RequestHeader) bool {
	if !hasBody(h) || !h.IsHTTP11() {
		return false
	}
	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	if err := uri.Parse(nil, h.RequestURI()); err != nil {
		return true
	}
	if checkCanonicalPath(uri.PathOriginal()) != nil {
		return true
	}
	r, params, _ := s.router.match(string(h.Method()), string(uri.Path()))
	if r == nil {
		return true
	}
	if r.auth != authNone {
		raw, err := requestBearer(h)
		if err != nil {
			return true
		}
		c, err := s.verifier.verify(raw)
		switch {
		case err != nil:
			return true
		case r.auth == authAdmin && adminScope(c, &request{params: params}) != nil:
			return true
		case r.auth != authAdmin && (c.Org == "" || c.User == ""):
			return true
		}
	}
	return s.checkContentLength(h, s.bodyLimitFor(r.name)) != nil
}

// bodyLimit is the largest decoded body the request's route reads, known
// before the body is read: the limit its handler passes to readBody or
// bodyReader (a handler must never read with a larger one). 0 means the
// route declares none here, and its handler alone enforces one.
func (s *Server) bodyLimit(req *request) int64 {
	if req.Route == "blob_patch" && req.Policy.MaxBlobBytes > 0 {
		return req.Policy.MaxBlobBytes // the org's, known once authenticated
	}
	return s.bodyLimitFor(req.Route)
}

// bodyLimitFor is bodyLimit by route name.
func (s *Server) bodyLimitFor(route string) int64 {
	switch route {
	case "patches":
		// Not the org's patch limit: a patch of one edit may be as large as
		// one record needs, and Apply holds a patch to the limits in force.
		return s.patchBodyLimit()
	case "admin_dataset_put":
		return s.opts.MaxDatasetBytes
	case "admin_org_put", "admin_consumer_put":
		return maxAdminJSONBytes
	case "admin_user_patch":
		return s.patchBodyLimit()
	case "admin_fanout":
		return s.fanoutBodyLimit()
	case "blob_patch":
		return s.opts.MaxBlobBytes
	}
	return 0
}

// admittedRequest returns the request expectContinue admitted, if any.
func admittedRequest(ctx *fasthttp.RequestCtx) (*admitted, bool) {
	a, ok := ctx.UserValue(admittedKey{}).(*admitted)
	return a, ok
}

// checkCanonicalPath refuses a request path (as sent, before decoding)
// that is not the plain path of a route: a segment that is empty, "." or
// "..", or that holds an escaped slash, once its escapes are decoded.
// fasthttp would decode and normalise such a path into another one, so
// "/v1/admin/orgs/acme/consumers/..%2F..%2Fglobex%2Fconsumers%2Fx" would
// reach org globex's consumer x: a client that builds a path from a name
// it did not check must get an error, not another org's route. No name
// the API accepts can make such a segment.
func checkCanonicalPath(raw []byte) error {
	p, _, _ := strings.Cut(string(raw), "?")
	if p == "/" {
		return nil
	}
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, seg := range segs {
		dec, err := url.PathUnescape(seg)
		switch {
		case err != nil:
			return badRequest("the path has a bad escape in segment %d", i+1)
		case dec == "" && i < len(segs)-1, dec == "." || dec == "..", strings.Contains(dec, "/"):
			return badRequest("the path %.200q is not canonical: a segment is empty, %q, %q or holds an escaped slash", p, ".", "..")
		}
	}
	return nil
}
