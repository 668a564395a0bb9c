package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/wire"
)

// authLevel says what a route requires of the caller's bearer token.
type authLevel int

const (
	// authNone: no token (health, readiness, metrics).
	authNone authLevel = iota
	// authUser: a valid token naming an org and a user, and the org must
	// have offline mode on (else 403 offline_mode_disabled). req.Org,
	// req.User and req.Policy are filled in.
	authUser
	// authUserUngated: like authUser but answers even when the org's
	// offline mode is off, for routes that report state rather than sync.
	authUserUngated
	// authAdmin: a valid token with "admin": true; a user token gets 403.
	authAdmin
)

func (l authLevel) String() string {
	switch l {
	case authNone:
		return "none"
	case authUser:
		return "user"
	case authUserUngated:
		return "user-ungated"
	case authAdmin:
		return "admin"
	}
	return fmt.Sprintf("authLevel(%d)", int(l))
}

// handlerFunc is the signature of every route handler. The handler writes
// its successful answer to ctx; returning an error makes the dispatcher
// answer with the error's JSON body and status instead (see classify).
type handlerFunc func(ctx *fasthttp.RequestCtx, req *request) error

// request is what the dispatcher knows about a request beyond the raw
// fasthttp context: who is calling, the path parameters, and a
// context.Context for I/O.
type request struct {
	// Ctx is the context for store I/O. Unlike the fasthttp ctx (whose Done
	// closes as soon as a shutdown starts), it is cancelled only when a
	// graceful shutdown runs out of time, so in-flight requests finish.
	Ctx context.Context
	// ID is the request id, echoed in the X-Request-ID response header.
	ID string
	// Route is the route name given to handle ("not_found" if none matched).
	Route string
	// Claims of the verified token; nil on authNone routes.
	Claims *Claims
	// Org and User come from the token on user routes.
	Org, User string
	// Policy is the org's policy on user routes, loaded (through the
	// settings cache) during authentication.
	Policy wire.Policy

	params []param
	// longPoll: the request is a long poll, whose deep parts run on
	// goroutines of their own (stack.go).
	longPoll bool
}

type param struct{ name, value string }

// Param returns the path parameter name ("org" for "{org}"), or "".
func (r *request) Param(name string) string {
	for _, p := range r.params {
		if p.name == name {
			return p.value
		}
	}
	return ""
}

type route struct {
	method  string
	pattern string
	name    string
	auth    authLevel
	h       handlerFunc
	segs    []string // literal segment, or "{name}" for a parameter
	literal int      // number of literal segments, to prefer exact matches
}

// router is a small explicit method+pattern router. Patterns are
// slash-separated; a segment "{name}" matches any one non-empty segment.
// When several patterns match, the one with the most literal segments wins,
// so "/v1/admin/orgs/{org}" and "/v1/admin/orgs/defaults" can coexist.
type router struct {
	routes []*route
}

func (rt *router) add(method, pattern, name string, auth authLevel, h handlerFunc) {
	if !strings.HasPrefix(pattern, "/") {
		panic(fmt.Sprintf("server: route pattern %q must start with /", pattern))
	}
	r := &route{method: method, pattern: pattern, name: name, auth: auth, h: h}
	for _, seg := range strings.Split(pattern[1:], "/") {
		if strings.HasPrefix(seg, "{") != strings.HasSuffix(seg, "}") || seg == "{}" {
			panic(fmt.Sprintf("server: route pattern %q: bad segment %q", pattern, seg))
		}
		if !strings.HasPrefix(seg, "{") {
			r.literal++
		}
		r.segs = append(r.segs, seg)
	}
	for _, o := range rt.routes {
		if o.method == method && sameShape(o.segs, r.segs) {
			panic(fmt.Sprintf("server: route %s %s registered twice (as %q and %q)", method, pattern, o.name, name))
		}
	}
	rt.routes = append(rt.routes, r)
}

func sameShape(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		pa, pb := strings.HasPrefix(a[i], "{"), strings.HasPrefix(b[i], "{")
		if pa != pb || (!pa && a[i] != b[i]) {
			return false
		}
	}
	return true
}

// match finds the route for method and path. If some route matches the
// path but not the method, it returns nil and the allowed methods.
func (rt *router) match(method, path string) (*route, []param, []string) {
	var best *route
	var bestParams []param
	var allowed []string
	for _, r := range rt.routes {
		params, ok := r.matchPath(path)
		if !ok {
			continue
		}
		if r.method != method && !(method == fasthttp.MethodHead && r.method == fasthttp.MethodGet) {
			allowed = appendUnique(allowed, r.method)
			continue
		}
		if best == nil || r.literal > best.literal {
			best, bestParams = r, params
		}
	}
	if best != nil {
		return best, bestParams, nil
	}
	return nil, nil, allowed
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func (r *route) matchPath(path string) ([]param, bool) {
	if path == "" || path[0] != '/' {
		return nil, false
	}
	rest := path[1:]
	var params []param
	for i, seg := range r.segs {
		var part string
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			if i == len(r.segs)-1 {
				return nil, false
			}
			part, rest = rest[:j], rest[j+1:]
		} else {
			if i != len(r.segs)-1 {
				return nil, false
			}
			part, rest = rest, ""
		}
		if strings.HasPrefix(seg, "{") {
			if part == "" {
				return nil, false
			}
			params = append(params, param{name: seg[1 : len(seg)-1], value: part})
		} else if part != seg {
			return nil, false
		}
	}
	return params, true
}

// handle registers a route: method, path pattern ("/v1/admin/orgs/{org}"),
// a short route name used as the metrics label and in access logs, the
// auth level, and the handler. Call it before Serve (New registers every
// route through s.routes). It panics on a malformed or duplicate pattern,
// which is a programming error.
func (s *Server) handle(method, pattern, name string, auth authLevel, h handlerFunc) {
	s.router.add(method, pattern, name, auth, h)
}
