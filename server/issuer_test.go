package server

import (
	"testing"
	"time"
)

func TestIssuerAndAudience(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.JWTIssuer, o.JWTAudience = "https://app.example", "deltasync" }})
	mintAs := func(c Claims, iss, aud string) string {
		c.Issuer = iss
		if aud != "" {
			c.Audience = []string{aud}
		}
		tok, err := MintToken(testSecret, c, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	mint := func(iss, aud string) string { return mintAs(Claims{Org: "acme", User: "alice"}, iss, aud) }
	admin := mintAs(Claims{Admin: true}, "https://app.example", "deltasync")
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode":true}`), withToken(admin)); r.status != 200 {
		t.Fatalf("admin with iss and aud: %d %s", r.status, r.body)
	}
	for _, tt := range []struct {
		iss, aud string
		want     int
	}{
		{"https://app.example", "deltasync", 200},
		{"https://other.example", "deltasync", 401},
		{"https://app.example", "another-service", 401},
		{"", "", 401},
	} {
		if r := e.do("GET", "/v1/status", nil, withToken(mint(tt.iss, tt.aud))); r.status != tt.want {
			t.Errorf("iss %q aud %q: %d, want %d", tt.iss, tt.aud, r.status, tt.want)
		}
	}
}
