package server

import (
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot/memstore"
)

func orgAdminToken(t *testing.T, org string) string {
	return mustToken(t, Claims{Admin: true, Org: org})
}

// crossOrgAdminCases are hostileAuthCases rows: an org admin's token on
// another org's routes and on the deployment's, each refused with 403 and
// the store unchanged.
func crossOrgAdminCases(t *testing.T) []hostileCase {
	other := orgAdminToken(t, "globex")
	emptyOrgAdmin := hs256(t, claimsJSON(`"admin":true`, `"org":""`, numericDate("exp", time.Hour)))
	org := "/v1/admin/orgs/" + hostileEnvOrg
	patch := []byte(`{"id":"x","ops":[{"op":"put","key":"k","value":1}]}`)
	forb := func(name, method, path string, body []byte) hostileCase {
		return hostileCase{name: "org admin of another org: " + name, method: method, path: path, body: body,
			opts: []reqOpt{withToken(other)}, status: 403, code: "forbidden"}
	}
	return []hostileCase{
		forb("get settings", "GET", org, nil),
		forb("enable offline mode", "PUT", org, []byte(`{"offline_mode":false}`)),
		forb("upload a data set", "PUT", org+"/users/"+hostileEnvUser+"/dataset", []byte(`{"key":"k","value":1}`+"\n")),
		forb("admin patch", "POST", org+"/users/"+hostileEnvUser+"/patches", patch),
		forb("fan-out", "POST", org+"/patches", []byte(`{"id":"x","users":["`+hostileEnvUser+`"],"ops":[{"op":"delete","key":"k"}]}`)),
		forb("the org in another case", "GET", "/v1/admin/orgs/ACME", nil),
		forb("the org's change feed", "GET", org+"/changes", nil),
		forb("the org's change feed, long poll", "GET", org+"/changes?wait=5s", nil),
		forb("list the org's consumers", "GET", org+"/consumers", nil),
		forb("register a consumer", "PUT", org+"/consumers/billing", []byte(`{"cursor":""}`)),
		forb("read a consumer", "GET", org+"/consumers/billing", nil),
		forb("delete a consumer", "DELETE", org+"/consumers/billing", nil),
		forb("set a webhook", "PUT", org, []byte(`{"webhook_url":"https://evil.example/","webhook_secret":"0123456789abcdef"}`)),
		forb("the deployment's change feed", "GET", "/v1/admin/changes", nil),
		{name: "org admin token naming a bad org", method: "GET", path: org,
			opts: []reqOpt{withToken(hs256(t, claimsJSON(`"admin":true`, `"org":"acme/x"`, numericDate("exp", time.Hour))))}, status: 401, code: "unauthorized"},
		{name: "org admin token with the org in another case", method: "PUT", path: org, body: []byte(`{"offline_mode":false}`),
			opts: []reqOpt{withToken(orgAdminToken(t, "ACME"))}, status: 403, code: "forbidden"},
		// An issuer that meant an org admin but filled in no org must not
		// mint the deployment's admin: an org claim is a name or absent.
		{name: "admin token with an empty org claim, the org's route", method: "PUT", path: org, body: []byte(`{"offline_mode":false}`),
			opts: []reqOpt{withToken(emptyOrgAdmin)}, status: 401, code: "unauthorized"},
		{name: "admin token with an empty org claim, the deployment's feed", method: "GET", path: "/v1/admin/changes",
			opts: []reqOpt{withToken(emptyOrgAdmin)}, status: 401, code: "unauthorized"},
		{name: "admin token with a null org claim", method: "GET", path: "/v1/admin/changes",
			opts: []reqOpt{withToken(hs256(t, claimsJSON(`"admin":true`, `"org":null`, numericDate("exp", time.Hour))))}, status: 401, code: "unauthorized"},
		{name: "user token with an empty user claim", method: "GET", path: "/v1/status",
			opts: []reqOpt{withToken(hs256(t, claimsJSON(`"org":"acme"`, `"user":""`, numericDate("exp", time.Hour))))}, status: 401, code: "unauthorized"},
		forb("a path that climbs from its org into another", "GET", "/v1/admin/orgs/globex/../"+hostileEnvOrg, nil),
	}
}

// adminRoutePaths returns a concrete path of every admin route with {org}
// set to org (and the other parameters to fixed names), and whether the
// route is the org's (has an {org}).
func adminRoutePaths(s *Server, org string) []struct {
	method, path string
	perOrg       bool
} {
	var out []struct {
		method, path string
		perOrg       bool
	}
	for _, r := range s.router.routes {
		if r.auth != authAdmin || strings.HasPrefix(r.pattern, "/test/") {
			continue
		}
		segs := make([]string, len(r.segs))
		perOrg := false
		for i, seg := range r.segs {
			switch seg {
			case "{org}":
				segs[i], perOrg = org, true
			case "{user}":
				segs[i] = "alice"
			default:
				segs[i] = strings.Trim(seg, "{}")
			}
		}
		out = append(out, struct {
			method, path string
			perOrg       bool
		}{r.method, "/" + strings.Join(segs, "/"), perOrg})
	}
	return out
}

// TestOrgAdminReachesItsOrgOnly: on every admin route, an org admin of A
// gets 403 for org B and for the deployment-wide routes, and is let
// through for A; the deployment admin is let through everywhere. "Let
// through" means any answer but 401 and 403 (a route may still refuse the
// empty body).
func TestOrgAdminReachesItsOrgOnly(t *testing.T) {
	mem := memstore.New()
	e := newTestEnv(t, envConfig{store: mem})
	e.enableOrg("orga")
	e.enableOrg("orgb")
	tokA, deploy := orgAdminToken(t, "orga"), adminToken(t)
	n := 0
	for _, org := range []string{"orga", "orgb"} {
		for _, rt := range adminRoutePaths(e.s, org) {
			n++
			before := storeContents(t, mem)
			r := e.do(rt.method, rt.path, nil, withToken(tokA))
			wantForbidden := !rt.perOrg || org == "orgb"
			if got := r.status == 403; got != wantForbidden || r.status == 401 {
				t.Errorf("org admin of orga: %s %s: %d %s", rt.method, rt.path, r.status, r.body)
			}
			if wantForbidden && !sameContents(before, storeContents(t, mem)) {
				t.Errorf("%s %s: refused, but the store changed", rt.method, rt.path)
			}
			if r := e.do(rt.method, rt.path, nil, withToken(deploy)); r.status == 401 || r.status == 403 {
				t.Errorf("deployment admin: %s %s: %d %s", rt.method, rt.path, r.status, r.body)
			}
		}
	}
	if n < 8 {
		t.Fatalf("only %d admin routes found", n)
	}
	// A user token is no admin, whatever org it names.
	if r := e.do("GET", "/v1/admin/orgs/orga", nil, withToken(userToken(t, "orga", "alice"))); r.status != 403 {
		t.Errorf("user token: %d", r.status)
	}
}
