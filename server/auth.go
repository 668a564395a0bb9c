package server

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// MintToken signs c with the HS256 secret, valid for ttl from now. It is what
// `deltasync token` uses; the app's own backend mints the same tokens with
// any JWT library. The org and user, when set, must be valid names.
func MintToken(secret []byte, c Claims, ttl time.Duration) (string, error) {
	if len(secret) < MinJWTSecretBytes {
		return "", fmt.Errorf("mint token: secret has %d bytes, need at least %d", len(secret), MinJWTSecretBytes)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("mint token: ttl %v must be positive (tokens must expire)", ttl)
	}
	if !c.Admin && (c.Org == "" || c.User == "") {
		return "", errors.New("mint token: a user token needs an org and a user")
	}
	if c.Org != "" {
		if err := snapshot.ValidateName("org", c.Org); err != nil {
			return "", fmt.Errorf("mint token: %w", err)
		}
	}
	if c.User != "" {
		if err := snapshot.ValidateName("user", c.User); err != nil {
			return "", fmt.Errorf("mint token: %w", err)
		}
	}
	now := time.Now()
	c.IssuedAt = now
	c.ExpiresAt = now.Add(ttl)
	if c.Subject == "" && c.User != "" {
		c.Subject = c.User
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	sig, err := jwt.SigningMethodHS256.Sign(signing, secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

// verifier checks bearer tokens. The JWT library verifies the signature:
// the key handed to it depends on the token's algorithm family, and only the
// families with a configured key are valid methods, so an HMAC token is never
// checked against a public key (the classic RS256→HS256 confusion) and
// "none" is never accepted. The claims are then decoded exactly by
// decodeClaims (not by the library, whose encoding/json matches names
// case-insensitively) and checked by Claims.check.
type verifier struct {
	secret  []byte
	rsaKeys []jwt.VerificationKey
	ecKeys  []jwt.VerificationKey
	parser  *jwt.Parser
	rules   claimRules
	now     func() time.Time

	// cache holds tokens already verified and decoded: a client sends the
	// same token with every poll, and checking a signature costs more than
	// the rest of an up-to-date answer. A token's claims never change, but
	// time does: every use, cached or not, runs Claims.check again.
	mu    sync.Mutex
	cache map[string]*Claims
}

// maxCachedTokens bounds the verified-token cache; when full it starts over.
const maxCachedTokens = 10_000

// tokenLeeway absorbs clock skew between the token issuer and this server.
const tokenLeeway = 30 * time.Second

func newVerifier(o *Options) (*verifier, error) {
	if o.JWTMaxLifetime <= 0 {
		return nil, fmt.Errorf("server: the longest token lifetime must be positive, got %v", o.JWTMaxLifetime)
	}
	v := &verifier{
		secret: o.JWTSecret,
		rules:  claimRules{issuer: o.JWTIssuer, audience: o.JWTAudience, maxLifetime: o.JWTMaxLifetime},
		now:    time.Now,
	}
	if err := v.addPublicKeys(o); err != nil {
		return nil, err
	}
	var methods []string
	if len(v.secret) > 0 {
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if len(v.rsaKeys) > 0 {
		methods = append(methods, jwt.SigningMethodRS256.Alg())
	}
	if len(v.ecKeys) > 0 {
		methods = append(methods, jwt.SigningMethodES256.Alg())
	}
	if len(methods) == 0 {
		return nil, errors.New("server: no JWT verification key")
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(methods),
		jwt.WithStrictDecoding(),
		jwt.WithoutClaimsValidation(), // Claims.check does it, on exactly decoded claims
	)
	return v, nil
}

// addPublicKeys sorts the configured public keys by algorithm family.
func (v *verifier) addPublicKeys(o *Options) error {
	keys := append([]crypto.PublicKey(nil), o.JWTPublicKeys...)
	for _, f := range o.JWTPublicKeyFiles {
		ks, err := loadPublicKeys(f)
		if err != nil {
			return err
		}
		keys = append(keys, ks...)
	}
	for _, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				return fmt.Errorf("server: RSA public key has %d bits, need at least 2048", k.N.BitLen())
			}
			v.rsaKeys = append(v.rsaKeys, k)
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() {
				return fmt.Errorf("server: ECDSA public key on %s; ES256 needs P-256", k.Curve.Params().Name)
			}
			v.ecKeys = append(v.ecKeys, k)
		default:
			return fmt.Errorf("server: unsupported public key type %T (want RSA or P-256 ECDSA)", k)
		}
	}
	return nil
}

func (v *verifier) keyFunc(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(v.secret) > 0 {
			return v.secret, nil
		}
	case *jwt.SigningMethodRSA:
		if len(v.rsaKeys) > 0 {
			return jwt.VerificationKeySet{Keys: v.rsaKeys}, nil
		}
	case *jwt.SigningMethodECDSA:
		if len(v.ecKeys) > 0 {
			return jwt.VerificationKeySet{Keys: v.ecKeys}, nil
		}
	}
	return nil, fmt.Errorf("no key for algorithm %v", t.Header["alg"])
}

// verify checks a raw token: signature, exact claims, and the time, issuer
// and audience rules. A refused claim is a *tokenError. The claims returned
// are shared with the cache and must not be modified.
func (v *verifier) verify(raw string) (*Claims, error) {
	v.mu.Lock()
	c, cached := v.cache[raw]
	v.mu.Unlock()
	if !cached {
		var err error
		if c, err = v.parse(raw); err != nil {
			return nil, err
		}
	}
	if err := c.check(v.now(), v.rules); err != nil {
		if cached {
			v.mu.Lock()
			delete(v.cache, raw)
			v.mu.Unlock()
		}
		return nil, err
	}
	if !cached {
		v.mu.Lock()
		if v.cache == nil || len(v.cache) >= maxCachedTokens {
			v.cache = make(map[string]*Claims)
		}
		v.cache[raw] = c
		v.mu.Unlock()
	}
	return c, nil // shared with the cache: callers only read it
}

// parse verifies the signature of a raw token, then decodes its header and
// claims exactly.
func (v *verifier) parse(raw string) (*Claims, error) {
	var rc rawClaims
	if _, err := v.parser.ParseWithClaims(raw, &rc, v.keyFunc); err != nil {
		return nil, err
	}
	header, _, _ := strings.Cut(raw, ".")
	if err := checkHeader(header); err != nil {
		return nil, refuse("token header: %v", err)
	}
	c, err := decodeClaims(rc.b)
	if err != nil {
		return nil, refuse("token claims: %v", err)
	}
	return c, nil
}

// checkHeader refuses a JOSE header with duplicate names (RFC 7515 §4
// allows refusing them; the library would read the last) and one with
// "crit": the server understands no extension a token could require.
func checkHeader(seg string) error {
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return err
	}
	if err := snapshot.ValidateJSONText(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		name, err := memberName(dec, seen)
		if err != nil {
			return err
		}
		if name == "crit" {
			return errors.New(`"crit" names extensions this server does not understand`)
		}
		if err := skipValue(dec, 0); err != nil {
			return err
		}
	}
	return nil
}

// rawClaims keeps the claims bytes for decodeClaims; it satisfies the JWT
// library's Claims interface only so that the library verifies signatures.
// Its claim validation is off (WithoutClaimsValidation), and these methods
// refuse, should it ever be called.
type rawClaims struct{ b []byte }

var errClaimsByLibrary = errors.New("claims are checked by deltasync, not the JWT library")

func (r *rawClaims) UnmarshalJSON(b []byte) error { r.b = bytes.Clone(b); return nil }

func (*rawClaims) GetExpirationTime() (*jwt.NumericDate, error) { return nil, errClaimsByLibrary }
func (*rawClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return nil, errClaimsByLibrary }
func (*rawClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, errClaimsByLibrary }
func (*rawClaims) GetIssuer() (string, error)                   { return "", errClaimsByLibrary }
func (*rawClaims) GetSubject() (string, error)                  { return "", errClaimsByLibrary }
func (*rawClaims) GetAudience() (jwt.ClaimStrings, error)       { return nil, errClaimsByLibrary }

// loadPublicKeys reads every public key in a PEM file.
func loadPublicKeys(path string) ([]crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("server: read JWT public key: %w", err)
	}
	var keys []crypto.PublicKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		var k crypto.PublicKey
		switch b.Type {
		case "PUBLIC KEY":
			k, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			k, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(b.Bytes); err == nil {
				k = cert.PublicKey
			}
		default:
			continue // private keys or parameters next to the public key
		}
		if err != nil {
			return nil, fmt.Errorf("server: JWT public key %s: %w", path, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("server: JWT public key %s: no PEM public key found", path)
	}
	return keys, nil
}

// authenticate checks the bearer token of a request against the route's
// auth level and fills req.Claims (and req.Org, req.User for user routes).
func (s *Server) authenticate(ctx *fasthttp.RequestCtx, req *request, level authLevel) error {
	if level == authNone {
		return nil
	}
	raw, err := requestBearer(&ctx.Request.Header)
	if err != nil {
		return err
	}
	c, err := s.verifier.verify(raw)
	if err != nil {
		var te *tokenError
		if errors.As(err, &te) {
			return unauthorized(te.reason)
		}
		return &httpError{Status: fasthttp.StatusUnauthorized, Code: wire.CodeUnauthorized, Message: "invalid token", Err: err}
	}
	req.Claims = c
	switch level {
	case authAdmin:
		if err := adminScope(c, req); err != nil {
			return err
		}
	case authUser, authUserUngated:
		if c.Org == "" || c.User == "" {
			return unauthorized("token carries no org and user")
		}
		if err := snapshot.ValidateName("org", c.Org); err != nil {
			return unauthorized(err.Error())
		}
		if err := snapshot.ValidateName("user", c.User); err != nil {
			return unauthorized(err.Error())
		}
		req.Org, req.User = c.Org, c.User
		if ok, wait := s.limiter.allow(c.Org + "/" + c.User); !ok {
			ctx.Response.Header.Set("Retry-After", retryAfter(wait))
			return rateLimited("too many requests for this user; retry later")
		}
		p, err := s.orgPolicy(req.Ctx, c.Org, req.longPoll)
		if err != nil {
			return err
		}
		req.Policy = p
		if level == authUser && !p.OfflineMode {
			return &httpError{Status: fasthttp.StatusForbidden, Code: wire.CodeOfflineDisabled, Message: msgOfflineDisabled}
		}
	}
	return nil
}

// adminScope checks an admin token against the route: a deployment
// admin's (no org claim) opens every admin route, an org admin's (an org
// claim) only the routes of that org, so 403 on another org's and on the
// deployment-wide ones (those without an {org}).
func adminScope(c *Claims, req *request) error {
	if !c.Admin {
		return forbidden("admin token required")
	}
	if c.Org == "" {
		return nil
	}
	if err := snapshot.ValidateName("org", c.Org); err != nil {
		return unauthorized(err.Error())
	}
	switch org := req.Param("org"); {
	case org == "":
		return forbidden(fmt.Sprintf("this token administers org %s only, not the deployment", c.Org))
	case org != c.Org:
		return forbidden(fmt.Sprintf("this token administers org %s only", c.Org))
	}
	return nil
}

const msgOfflineDisabled = "offline mode is not enabled for this organization"

// requestBearer is the bearer token of a request: its one Authorization
// header. More than one is refused: which one counts is a question a proxy
// in front may answer otherwise than fasthttp (the first).
func requestBearer(h *fasthttp.RequestHeader) (string, error) {
	if len(h.PeekAll(fasthttp.HeaderAuthorization)) > 1 {
		return "", unauthorized("more than one Authorization header")
	}
	raw, ok := bearerToken(h.Peek(fasthttp.HeaderAuthorization))
	if !ok {
		return "", unauthorized("missing bearer token")
	}
	return raw, nil
}

func bearerToken(h []byte) (string, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !bytes.EqualFold(h[:len(prefix)], []byte(prefix)) {
		return "", false
	}
	t := bytes.TrimSpace(h[len(prefix):])
	if len(t) == 0 {
		return "", false
	}
	return string(t), true
}
