package server

import "testing"

func TestRateLimitAnswers429(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.RateLimit, o.RateBurst = 0.001, 3 }})
	e.enableOrg("acme")
	alice, bob := userToken(t, "acme", "alice"), userToken(t, "acme", "bob")
	for i := range 3 {
		if r := e.do("GET", "/v1/status", nil, withToken(alice)); r.status != 200 {
			t.Fatalf("request %d within the burst: %d %s", i, r.status, r.body)
		}
	}
	r := e.do("GET", "/v1/status", nil, withToken(alice))
	if r.status != 429 || r.header["Retry-After"] == "" {
		t.Fatalf("over the limit: %d, Retry-After %q", r.status, r.header["Retry-After"])
	}
	if d := r.errBody(t); d.Code != "rate_limited" {
		t.Fatalf("code %q", d.Code)
	}
	if r := e.do("GET", "/v1/status", nil, withToken(bob)); r.status != 200 {
		t.Fatalf("another user is limited too: %d", r.status)
	}
}
