package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/deltasync/deltasync/wire"
)

// The tests in this file mint their tokens with go-jose, not with the JWT
// library the server verifies with, and write the claims as raw JSON: what
// another issuer (or a forger holding nothing but a token) could send, case
// variants and duplicate names included.

// joseToken signs the raw claims JSON payload with alg and key (go-jose).
func joseToken(t *testing.T, alg jose.SignatureAlgorithm, key any, payload string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatalf("go-jose signer %s: %v", alg, err)
	}
	jws, err := signer.Sign([]byte(payload))
	if err != nil {
		t.Fatalf("go-jose sign %s: %v", alg, err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// hs256 signs payload with the test servers' secret.
func hs256(t *testing.T, payload string) string {
	return joseToken(t, jose.HS256, testSecret, payload)
}

// claimsJSON joins raw JSON members into a claims object.
func claimsJSON(members ...string) string { return "{" + strings.Join(members, ",") + "}" }

// numericDate is the JSON member name:unix-seconds of now+d.
func numericDate(name string, d time.Duration) string {
	return fmt.Sprintf("%q:%d", name, time.Now().Add(d).Unix())
}

// hmacToken signs header and payload (raw JSON) with HS256 and the test
// secret by hand, for headers no JWT library writes.
func hmacToken(header, payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc([]byte(header)) + "." + enc([]byte(payload))
	mac := hmac.New(sha256.New, testSecret)
	mac.Write([]byte(signing))
	return signing + "." + enc(mac.Sum(nil))
}

// unsignedToken is an "alg":"none" token: header and payload, empty signature.
func unsignedToken(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc([]byte(payload)) + "."
}

const (
	orgAlice = `"org":"acme"`
	usrAlice = `"user":"alice"`
)

// forgedClaimCases are tokens validly signed with the server's secret whose
// claims must not be read the way encoding/json's case-insensitive matching
// reads them (or that break the time rules), and tokens that are not signed
// with a trusted key at all. Every one answers 401.
func forgedClaimCases(t *testing.T) []struct{ name, path, tok string } {
	exp := numericDate("exp", time.Hour)
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return []struct{ name, path, tok string }{
		{"Admin capitalised", "/test/admin", hs256(t, claimsJSON(`"Admin":true`, exp))},
		{"ADMIN upper case", "/test/admin", hs256(t, claimsJSON(`"ADMIN":true`, exp))},
		{"admin as a string", "/test/admin", hs256(t, claimsJSON(`"admin":"true"`, exp))},
		{"admin as a number", "/test/admin", hs256(t, claimsJSON(`"admin":1`, exp))},
		{"ORG and USER override org and user", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, `"ORG":"evil"`, `"USER":"mallory"`, exp))},
		{"Org and User only", "/test/ungated", hs256(t, claimsJSON(`"Org":"acme"`, `"User":"alice"`, exp))},
		{"duplicate org", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, orgAlice, exp))},
		{"duplicate org, escaped name", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, `"\u006frg":"evil"`, exp))},
		{"duplicate admin", "/test/admin", hs256(t, claimsJSON(`"admin":false`, `"admin":true`, exp))},
		{"duplicate exp", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("exp", -time.Hour), exp))},
		{"duplicate inside a nested claim", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, `"ext":{"a":[{"b":1,"b":2}]}`, exp))},
		{"Exp capitalised only", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("Exp", time.Hour)))},
		{"exp as a string", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, fmt.Sprintf(`"exp":"%d"`, time.Now().Add(time.Hour).Unix())))},
		{"exp null", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, `"exp":null`))},
		{"exp missing", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice))},
		{"exp expired", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("exp", -time.Hour)))},
		{"exp huge", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, `"exp":1e300`))},
		{"iat in the future", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("iat", 10*time.Minute), exp))},
		{"iat as a string", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, `"iat":"0"`, exp))},
		{"nbf in the future", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("nbf", 10*time.Minute), exp))},
		{"lifetime over 24h by iat", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("iat", 0), numericDate("exp", 25*time.Hour)))},
		{"lifetime over 24h without iat", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("exp", 25*time.Hour)))},
		{"org as a number", "/test/ungated", hs256(t, claimsJSON(`"org":1`, usrAlice, exp))},
		{"claims not an object", "/test/ungated", hs256(t, `["org","acme"]`)},
		{"trailing data after the claims", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, exp)+`{}`)},
		{"invalid UTF-8 in a claim", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, "\"note\":\"a\xffb\"", exp))},
		{"duplicate alg in the header", "/test/admin", hmacToken(`{"alg":"HS256","alg":"HS256"}`, claimsJSON(`"admin":true`, exp))},
		{"crit in the header", "/test/admin", hmacToken(`{"alg":"HS256","crit":["exp"]}`, claimsJSON(`"admin":true`, exp))},
		{"alg none", "/test/admin", unsignedToken(claimsJSON(`"admin":true`, exp))},
		{"wrong HMAC key", "/test/admin", joseToken(t, jose.HS256, []byte("another-secret-0123456789abcdef012345"), claimsJSON(`"admin":true`, exp))},
		{"RS256 unknown key", "/test/admin", joseToken(t, jose.RS256, otherRSA, claimsJSON(`"admin":true`, exp))},
		{"HS512 not allowed", "/test/admin", joseToken(t, jose.HS512, append(append([]byte{}, testSecret...), testSecret...), claimsJSON(`"admin":true`, exp))},
	}
}

func TestForgedClaimsRefused(t *testing.T) {
	e := newTestEnv(t, envConfig{setup: echoRoutes})
	for _, tc := range forgedClaimCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("GET", tc.path, nil, withToken(tc.tok))
			if r.status != 401 {
				t.Fatalf("status %d %s, want 401", r.status, r.body)
			}
			d := r.errBody(t)
			t.Logf("answer: %s", d.Message)
			if d.Code != wire.CodeUnauthorized {
				t.Errorf("code %q (%s), want %q", d.Code, d.Message, wire.CodeUnauthorized)
			}
		})
	}
}

// TestIssuerAndAudienceMatchedExactly: "ISS" and "AUD" are not iss and aud.
func TestIssuerAndAudienceMatchedExactly(t *testing.T) {
	e := newTestEnv(t, envConfig{
		opts:  func(o *Options) { o.JWTIssuer, o.JWTAudience = "https://app.example", "deltasync" },
		setup: echoRoutes,
	})
	exp := numericDate("exp", time.Hour)
	tests := []struct {
		name    string
		members []string
		want    int
	}{
		{"iss and aud", []string{`"iss":"https://app.example"`, `"aud":"deltasync"`}, 200},
		{"aud as a list", []string{`"iss":"https://app.example"`, `"aud":["other","deltasync"]`}, 200},
		{"ISS and AUD", []string{`"ISS":"https://app.example"`, `"AUD":"deltasync"`}, 401},
		{"Iss and Aud beside wrong iss and aud", []string{`"iss":"https://evil.example"`, `"aud":"other"`, `"Iss":"https://app.example"`, `"Aud":"deltasync"`}, 401},
		{"duplicate iss", []string{`"iss":"https://evil.example"`, `"iss":"https://app.example"`, `"aud":"deltasync"`}, 401},
		{"aud with a number", []string{`"iss":"https://app.example"`, `"aud":["deltasync",1]`}, 401},
		{"iss differs in case", []string{`"iss":"https://APP.example"`, `"aud":"deltasync"`}, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := hs256(t, claimsJSON(append([]string{orgAlice, usrAlice, exp}, tc.members...)...))
			r := e.do("GET", "/test/ungated", nil, withToken(tok))
			if r.status != tc.want {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tc.want)
			}
		})
	}
}

// TestTokensFromAnotherLibrary: tokens minted by go-jose with HS256, RS256
// and ES256 are accepted and read exactly.
func TestTokensFromAnotherLibrary(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, envConfig{
		opts:  func(o *Options) { o.JWTPublicKeys = append(o.JWTPublicKeys, &rsaKey.PublicKey, &ecKey.PublicKey) },
		setup: echoRoutes,
	})
	now := time.Now()
	user := claimsJSON(orgAlice, usrAlice, numericDate("iat", 0), numericDate("exp", time.Hour), `"sub":"alice"`, `"jti":"x1"`, `"scope":{"Admin":true}`)
	tests := []struct {
		name, path, tok string
	}{
		{"HS256 user", "/test/ungated", hs256(t, user)},
		{"RS256 user", "/test/ungated", joseToken(t, jose.RS256, rsaKey, user)},
		{"ES256 user", "/test/ungated", joseToken(t, jose.ES256, ecKey, user)},
		{"ES256 admin", "/test/admin", joseToken(t, jose.ES256, ecKey, claimsJSON(`"admin":true`, numericDate("exp", time.Hour)))},
		{"fractional exp", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, fmt.Sprintf(`"exp":%d.25`, now.Add(time.Hour).Unix())))},
		{"lifetime exactly 24h", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice,
			fmt.Sprintf(`"iat":%d`, now.Unix()), fmt.Sprintf(`"exp":%d`, now.Add(24*time.Hour).Unix())))},
		{"iat a little ahead (clock skew)", "/test/ungated", hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("iat", 10*time.Second), numericDate("exp", time.Hour)))},
		{"hand-signed, no typ", "/test/admin", hmacToken(`{"alg":"HS256"}`, claimsJSON(`"admin":true`, numericDate("exp", time.Hour)))},
		{"admin false beside org and user", "/test/ungated", hs256(t, claimsJSON(`"admin":false`, orgAlice, usrAlice, numericDate("exp", time.Hour)))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("GET", tc.path, nil, withToken(tc.tok))
			if r.status != 200 {
				t.Fatalf("status %d %s, want 200", r.status, r.body)
			}
			if tc.path != "/test/ungated" {
				return
			}
			var got struct{ Org, User string }
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Org != "acme" || got.User != "alice" {
				t.Errorf("caller %s/%s, want acme/alice", got.Org, got.User)
			}
		})
	}
}

// TestTokenLifetimeFlag: the cap on exp - iat follows Options.JWTMaxLifetime.
func TestTokenLifetimeFlag(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.JWTMaxLifetime = time.Hour }, setup: echoRoutes})
	for _, tc := range []struct {
		ttl  time.Duration
		want int
	}{{time.Hour, 200}, {time.Hour + time.Minute, 401}} {
		tok := hs256(t, claimsJSON(orgAlice, usrAlice, numericDate("iat", 0), numericDate("exp", tc.ttl)))
		if r := e.do("GET", "/test/ungated", nil, withToken(tok)); r.status != tc.want {
			t.Errorf("lifetime %v under a 1h cap: status %d %s, want %d", tc.ttl, r.status, r.body, tc.want)
		}
	}
	o := DefaultOptions()
	o.Store, o.JWTSecret, o.JWTMaxLifetime = e.store, testSecret, 0
	if err := o.Validate(); err == nil {
		t.Error("Validate accepted a zero token lifetime cap")
	}
}

// TestVerifiedTokenCacheRechecksExpiry: a token verified once (and so
// cached) is refused once it expires.
func TestVerifiedTokenCacheRechecksExpiry(t *testing.T) {
	v, err := newVerifier(&Options{JWTSecret: testSecret, JWTMaxLifetime: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	v.now = func() time.Time { return now }
	tok := hs256(t, claimsJSON(orgAlice, usrAlice, fmt.Sprintf(`"exp":%d`, now.Add(time.Minute).Unix())))
	if _, err := v.verify(tok); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	if _, err := v.verify(tok); err != nil {
		t.Fatalf("cached token: %v", err)
	}
	now = now.Add(time.Minute + tokenLeeway + time.Second)
	if _, err := v.verify(tok); err == nil {
		t.Fatal("expired token accepted from the cache")
	}
}
