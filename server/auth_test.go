package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/deltasync/deltasync/wire"
)

func sign(t *testing.T, m jwt.SigningMethod, key any, c Claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(m, mapClaims(t, c)).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return tok
}

// mapClaims is c as the JWT library's map, for signing with it.
func mapClaims(t *testing.T, c Claims) jwt.MapClaims {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m := jwt.MapClaims{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func in(d time.Duration) time.Time { return time.Now().Add(d) }

func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuth(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaFile := writePEM(t, "PUBLIC KEY", rsaDER)
	ecFile := writePEM(t, "PUBLIC KEY", ecDER)

	// One server accepts HS256, RS256 (key from a PEM file) and ES256.
	e := newTestEnv(t, envConfig{
		opts:  func(o *Options) { o.JWTPublicKeyFiles = []string{rsaFile, ecFile} },
		setup: echoRoutes,
	})
	// The org has offline mode on, so the user route reaches its handler.
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode":true}`), withToken(adminToken(t))); r.status != 200 {
		t.Fatalf("enable org: %d %s", r.status, r.body)
	}

	user := Claims{Org: "acme", User: "alice", ExpiresAt: in(time.Hour)}
	noneTok, err := jwt.NewWithClaims(jwt.SigningMethodNone, mapClaims(t, user)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// HS256 signed with the RSA public key as the HMAC secret: the classic
	// algorithm confusion attack.
	confused := sign(t, jwt.SigningMethodHS256, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER}), user)

	tests := []struct {
		name     string
		path     string
		auth     string // Authorization header; "" sends none
		want     int
		wantCode string
	}{
		{"hs256 user", "/test/user", "Bearer " + userToken(t, "acme", "alice"), 200, ""},
		{"lowercase bearer", "/test/user", "bearer " + userToken(t, "acme", "alice"), 200, ""},
		{"rs256 from PEM file", "/test/user", "Bearer " + sign(t, jwt.SigningMethodRS256, rsaKey, user), 200, ""},
		{"es256", "/test/user", "Bearer " + sign(t, jwt.SigningMethodES256, ecKey, user), 200, ""},
		{"admin on admin route", "/test/admin", "Bearer " + adminToken(t), 200, ""},

		{"no header", "/test/user", "", 401, wire.CodeUnauthorized},
		{"not bearer", "/test/user", "Basic YWxpY2U6cHc=", 401, wire.CodeUnauthorized},
		{"empty bearer", "/test/user", "Bearer ", 401, wire.CodeUnauthorized},
		{"garbage", "/test/user", "Bearer not.a.jwt", 401, wire.CodeUnauthorized},
		{"expired", "/test/user", "Bearer " + sign(t, jwt.SigningMethodHS256, testSecret,
			Claims{Org: "acme", User: "alice", ExpiresAt: in(-time.Hour)}), 401, wire.CodeUnauthorized},
		{"no exp", "/test/user", "Bearer " + sign(t, jwt.SigningMethodHS256, testSecret,
			Claims{Org: "acme", User: "alice"}), 401, wire.CodeUnauthorized},
		{"wrong secret", "/test/user", "Bearer " + sign(t, jwt.SigningMethodHS256,
			[]byte("another-secret-0123456789abcdef012345"), user), 401, wire.CodeUnauthorized},
		{"alg none", "/test/user", "Bearer " + noneTok, 401, wire.CodeUnauthorized},
		{"hs512 not allowed", "/test/user", "Bearer " + sign(t, jwt.SigningMethodHS512, testSecret, user), 401, wire.CodeUnauthorized},
		{"alg confusion hs256 with rsa public key", "/test/user", "Bearer " + confused, 401, wire.CodeUnauthorized},
		{"rs256 unknown key", "/test/user", "Bearer " + sign(t, jwt.SigningMethodRS256, otherRSA, user), 401, wire.CodeUnauthorized},
		{"tampered payload", "/test/user", "Bearer " + tamper(t, userToken(t, "acme", "alice")), 401, wire.CodeUnauthorized},
		{"missing user", "/test/user", "Bearer " + sign(t, jwt.SigningMethodHS256, testSecret,
			Claims{Org: "acme", ExpiresAt: in(time.Hour)}), 401, wire.CodeUnauthorized},
		{"missing org", "/test/user", "Bearer " + sign(t, jwt.SigningMethodHS256, testSecret,
			Claims{User: "alice", ExpiresAt: in(time.Hour)}), 401, wire.CodeUnauthorized},
		{"invalid org name", "/test/user", "Bearer " + sign(t, jwt.SigningMethodHS256, testSecret,
			Claims{Org: "../acme", User: "alice", ExpiresAt: in(time.Hour)}), 401, wire.CodeUnauthorized},
		{"admin token without user on user route", "/test/user", "Bearer " + adminToken(t), 401, wire.CodeUnauthorized},
		{"user token on admin route", "/test/admin", "Bearer " + userToken(t, "acme", "alice"), 403, wire.CodeForbidden},
		{"user token on admin API", "/v1/admin/orgs/acme", "Bearer " + userToken(t, "acme", "alice"), 403, wire.CodeForbidden},
		{"no token on admin API", "/v1/admin/orgs/acme", "", 401, wire.CodeUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []reqOpt
			if tc.auth != "" {
				opts = append(opts, withHeader("Authorization", tc.auth))
			}
			r := e.do("GET", tc.path, nil, opts...)
			if got := r.status; got != tc.want {
				t.Fatalf("status = %d, want %d (body %s)", got, tc.want, r.body)
			}
			if tc.want == 200 {
				if tc.path == "/test/user" {
					var got struct{ Org, User string }
					if err := json.Unmarshal(r.body, &got); err != nil {
						t.Fatal(err)
					}
					if got.Org != "acme" || got.User != "alice" {
						t.Errorf("caller = %s/%s, want acme/alice", got.Org, got.User)
					}
				}
				return
			}
			if got := r.errBody(t).Code; got != tc.wantCode {
				t.Errorf("code = %q, want %q", got, tc.wantCode)
			}
			if tc.want == 401 && !strings.HasPrefix(r.header["Www-Authenticate"], "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer (headers %v)", r.header)
			}
		})
	}
}

// tamper changes the org claim of a token without re-signing it.
func tamper(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	payload = []byte(strings.Replace(string(payload), `"alice"`, `"mallory"`, 1))
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}

func TestHMACOnlyServerRejectsRS256(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, envConfig{setup: echoRoutes})
	tok := sign(t, jwt.SigningMethodRS256, rsaKey, Claims{Admin: true, ExpiresAt: in(time.Hour)})
	if r := e.do("GET", "/test/admin", nil, withToken(tok)); r.status != 401 {
		t.Errorf("RS256 token on an HS256-only server: status %d, want 401", r.status)
	}
}

func TestPublicKeyOnlyServer(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, envConfig{
		opts: func(o *Options) {
			o.JWTSecret = nil
			o.JWTPublicKeys = append(o.JWTPublicKeys, &ecKey.PublicKey)
		},
		setup: echoRoutes,
	})
	tests := []struct {
		name string
		tok  string
		want int
	}{
		{"es256", sign(t, jwt.SigningMethodES256, ecKey, Claims{Admin: true, ExpiresAt: in(time.Hour)}), 200},
		// Without a configured secret no HMAC token verifies, whatever it
		// was signed with (an empty key included).
		{"hs256 with empty secret", sign(t, jwt.SigningMethodHS256, []byte{}, Claims{Admin: true, ExpiresAt: in(time.Hour)}), 401},
		{"hs256 with test secret", adminToken(t), 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.do("GET", "/test/admin", nil, withToken(tc.tok)).status; got != tc.want {
				t.Errorf("status = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestMintToken(t *testing.T) {
	v, err := newVerifier(&Options{JWTSecret: testSecret, JWTMaxLifetime: DefaultJWTMaxLifetime})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := MintToken(testSecret, Claims{Org: "acme", User: "bob"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.verify(tok)
	if err != nil {
		t.Fatalf("verify minted token: %v", err)
	}
	if c.Org != "acme" || c.User != "bob" || c.Admin {
		t.Errorf("claims = %+v, want acme/bob non-admin", c)
	}
	if d := time.Until(c.ExpiresAt); d <= 0 || d > time.Minute {
		t.Errorf("expires in %v, want within a minute", d)
	}

	bad := []struct {
		name   string
		secret []byte
		c      Claims
		ttl    time.Duration
	}{
		{"short secret", []byte("short"), Claims{Org: "acme", User: "bob"}, time.Hour},
		{"zero ttl", testSecret, Claims{Org: "acme", User: "bob"}, 0},
		{"no user", testSecret, Claims{Org: "acme"}, time.Hour},
		{"bad org", testSecret, Claims{Org: "a/b", User: "bob"}, time.Hour},
		{"bad user on admin token", testSecret, Claims{Admin: true, User: "_x"}, time.Hour},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := MintToken(tc.secret, tc.c, tc.ttl); err == nil {
				t.Error("MintToken succeeded, want an error")
			}
		})
	}
}

func TestClaimsJSONNames(t *testing.T) {
	b, err := json.Marshal(Claims{Org: "o", User: "u", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"org": "o", "user": "u", "admin": true}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("claim %q = %v, want %v (json %s)", k, got[k], v, b)
		}
	}
}
