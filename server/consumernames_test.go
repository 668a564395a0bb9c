package server

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/deltasync/deltasync/diff"
)

// TestConsumerNamesThatAreNotNames: a consumer name with a slash, dots that
// climb, an escaped slash, the webhook's reserved name or no name at all is
// refused on every consumer route, by an org admin and by the deployment
// admin (400; 404 where no route matches; a path that climbs into another
// org normalises to that org's route: 403 for the org admin, and the
// settings route refuses a consumer's body), and nothing changes: no
// consumer is stored, no org's settings are touched.
func TestConsumerNamesThatAreNotNames(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	e.enableOrg("acme")
	e.enableOrg("globex")
	depTok, orgTok := adminToken(t), orgAdminToken(t, "acme")
	dep, tok := withToken(depTok), withToken(orgTok)
	state := func() string {
		var out string
		for _, org := range []string{"acme", "globex"} {
			out += string(e.do("GET", "/v1/admin/orgs/"+org, nil, dep).body)
			out += string(e.do("GET", "/v1/admin/orgs/"+org+"/consumers", nil, dep).body)
		}
		return out
	}
	before := state()
	for _, name := range []string{"a/b", "..", ".", "%2e%2e", "a%2Fb", "..%2F..%2Fglobex", "..%2F..%2Fglobex%2Fconsumers%2Fx",
		"_webhook", ".hidden", "", "a..b/..", "%00"} {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			var body []byte
			if m == "PUT" {
				body = []byte(`{"cursor":""}`)
			}
			for _, as := range []string{orgTok, depTok} {
				r := e.hostileDo(t, hostileCase{raw: rawPathRequest(m, "/v1/admin/orgs/acme/consumers/"+name, as, body)})
				if r.status < 400 || r.status > 499 {
					t.Errorf("%s consumer %q: %d %s, want refused", m, name, r.status, r.body)
				}
			}
		}
	}
	if after := state(); after != before {
		t.Errorf("consumer routes with bad names changed settings or consumers:\n%s\nwas\n%s", after, before)
	}
	var list struct {
		Consumers []diff.Consumer `json:"consumers"`
	}
	if err := json.Unmarshal(e.do("GET", "/v1/admin/orgs/acme/consumers", nil, tok).body, &list); err != nil || len(list.Consumers) != 0 {
		t.Errorf("consumers after refused names: %+v %v", list, err)
	}
	if r := e.do("PUT", "/v1/admin/orgs/acme/consumers/a..b", []byte(`{"cursor":""}`), tok); r.status != 200 {
		t.Errorf("a name with two dots inside: %d %s", r.status, r.body)
	}
}

// rawPathRequest is an HTTP/1.1 request with the path exactly as given (the
// fasthttp client would normalise it; net/http's does not).
func rawPathRequest(method, path, token string, body []byte) []byte {
	return fmt.Appendf(nil, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		method, path, token, len(body), body)
}
