package server

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Claims are the claims of a deltasync bearer token. A user token names the
// org and user whose data set it opens; an admin token has Admin set and
// opens the admin API (it needs no org or user).
type Claims struct {
	Org   string `json:"org,omitempty"`
	User  string `json:"user,omitempty"`
	Admin bool   `json:"admin,omitempty"`
	jwt.RegisteredClaims
}

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
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
	if c.Subject == "" && c.User != "" {
		c.Subject = c.User
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, &c).SignedString(secret)
}

// verifier checks bearer tokens. The key handed to the JWT library depends
// on the token's algorithm family, and only the families with a configured
// key are valid methods: an HMAC token is never checked against a public key
// (the classic RS256→HS256 confusion) and "none" is never accepted.
type verifier struct {
	secret  []byte
	rsaKeys []jwt.VerificationKey
	ecKeys  []jwt.VerificationKey
	parser  *jwt.Parser

	// cache holds tokens already verified: a client sends the same token
	// with every poll, and parsing and checking it costs more than the
	// rest of an up-to-date answer. A token's claims never change, so an
	// entry only has to expire with the token itself.
	mu    sync.Mutex
	cache map[string]cachedClaims
}

type cachedClaims struct {
	c   *Claims
	exp time.Time
}

// maxCachedTokens bounds the verified-token cache; when full it starts over.
const maxCachedTokens = 10_000

// tokenLeeway absorbs clock skew between the token issuer and this server.
const tokenLeeway = 30 * time.Second

func newVerifier(o *Options) (*verifier, error) {
	v := &verifier{secret: o.JWTSecret}
	keys := append([]crypto.PublicKey(nil), o.JWTPublicKeys...)
	for _, f := range o.JWTPublicKeyFiles {
		ks, err := loadPublicKeys(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, ks...)
	}
	for _, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("server: RSA public key has %d bits, need at least 2048", k.N.BitLen())
			}
			v.rsaKeys = append(v.rsaKeys, k)
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() {
				return nil, fmt.Errorf("server: ECDSA public key on %s; ES256 needs P-256", k.Curve.Params().Name)
			}
			v.ecKeys = append(v.ecKeys, k)
		default:
			return nil, fmt.Errorf("server: unsupported public key type %T (want RSA or P-256 ECDSA)", k)
		}
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
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(tokenLeeway),
	}
	if o.JWTIssuer != "" {
		popts = append(popts, jwt.WithIssuer(o.JWTIssuer))
	}
	if o.JWTAudience != "" {
		popts = append(popts, jwt.WithAudience(o.JWTAudience))
	}
	v.parser = jwt.NewParser(popts...)
	return v, nil
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

// verify parses and checks a raw token.
func (v *verifier) verify(raw string) (*Claims, error) {
	now := time.Now()
	v.mu.Lock()
	e, ok := v.cache[raw]
	v.mu.Unlock()
	if ok && now.Before(e.exp) {
		return e.c, nil
	}
	var c Claims
	if _, err := v.parser.ParseWithClaims(raw, &c, v.keyFunc); err != nil {
		return nil, err
	}
	if c.ExpiresAt != nil {
		v.mu.Lock()
		if v.cache == nil || len(v.cache) >= maxCachedTokens {
			v.cache = make(map[string]cachedClaims)
		}
		v.cache[raw] = cachedClaims{c: &c, exp: c.ExpiresAt.Add(tokenLeeway)}
		v.mu.Unlock()
	}
	return &c, nil
}

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
	raw, ok := bearerToken(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization))
	if !ok {
		return unauthorized("missing bearer token")
	}
	c, err := s.verifier.verify(raw)
	if err != nil {
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			return unauthorized("token expired")
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			return unauthorized("token lacks a required claim (exp, or the iss/aud this server requires)")
		default:
			return &httpError{Status: fasthttp.StatusUnauthorized, Code: wire.CodeUnauthorized, Message: "invalid token", Err: err}
		}
	}
	req.Claims = c
	switch level {
	case authAdmin:
		if !c.Admin {
			return forbidden("admin token required")
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
		p, err := s.orgPolicy(req.Ctx, c.Org)
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

const msgOfflineDisabled = "offline mode is not enabled for this organization"

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
