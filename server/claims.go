package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// Claims are the claims of a deltasync bearer token. A user token names the
// org and user whose data set it opens; an admin token has Admin set and
// opens the admin API: with an Org, only that org's admin routes (an org
// admin); without, every admin route (the deployment's admin).
//
// Claims are decoded exactly (see decodeClaims): names are case-sensitive,
// a name may occur once, and each registered claim has its JSON type.
type Claims struct {
	Org   string // "org"
	User  string // "user"
	Admin bool   // "admin"

	Issuer    string    // "iss"
	Subject   string    // "sub"
	Audience  []string  // "aud": one string or a list of strings
	ExpiresAt time.Time // "exp", required
	IssuedAt  time.Time // "iat"; zero when absent
	NotBefore time.Time // "nbf"; zero when absent
}

// knownClaims are the claim names deltasync reads. A name that differs from
// one of them only in case is refused, not ignored: an issuer that writes
// "Admin" means something, and it is not what deltasync would read.
var knownClaims = []string{"org", "user", "admin", "iss", "sub", "aud", "exp", "iat", "nbf", "jti"}

// MarshalJSON writes the claims as a JWT claims set: numeric dates in whole
// seconds, absent claims left out, a single audience as a string.
func (c Claims) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	setString := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	setDate := func(k string, t time.Time) {
		if !t.IsZero() {
			m[k] = t.Unix()
		}
	}
	setString("org", c.Org)
	setString("user", c.User)
	if c.Admin {
		m["admin"] = true
	}
	setString("iss", c.Issuer)
	setString("sub", c.Subject)
	switch len(c.Audience) {
	case 0:
	case 1:
		m["aud"] = c.Audience[0]
	default:
		m["aud"] = c.Audience
	}
	setDate("exp", c.ExpiresAt)
	setDate("iat", c.IssuedAt)
	setDate("nbf", c.NotBefore)
	return json.Marshal(m)
}

// maxClaimsDepth bounds the nesting of claims the server does not read.
const maxClaimsDepth = 32

// maxNumericDate is the largest accepted NumericDate (about year 5138):
// beyond it a claim is nonsense, and converting it could overflow.
const maxNumericDate = 1e11

// decodeClaims decodes a verified token's claims set exactly. encoding/json
// matches names case-insensitively and lets the last of duplicate names win,
// so {"Admin":true} would read as an admin token and {"org":"a","ORG":"b"}
// as org b. Here names match exactly, any duplicate name (at any depth) is
// refused, a name that differs from a known claim only in case is refused,
// known claims must have their JSON type (exp, iat, nbf numbers; admin a
// boolean; aud a string or a list of strings; the others strings), strings
// must be Unicode as written, and nothing may follow the object.
func decodeClaims(b []byte) (*Claims, error) {
	if err := snapshot.ValidateJSONText(b); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("claims are not a JSON object")
	}
	var c Claims
	seen := map[string]bool{}
	for dec.More() {
		name, err := memberName(dec, seen)
		if err != nil {
			return nil, err
		}
		if err := c.decodeMember(dec, name); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the claims object")
	}
	return &c, nil
}

// memberName reads an object member's name and refuses a duplicate.
func memberName(dec *json.Decoder, seen map[string]bool) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	name, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("unexpected %v in an object", tok)
	}
	if seen[name] {
		return "", fmt.Errorf("duplicate claim name %q", name)
	}
	seen[name] = true
	return name, nil
}

// decodeMember decodes the value of claim name into c.
func (c *Claims) decodeMember(dec *json.Decoder, name string) error {
	var err error
	switch name {
	case "org":
		c.Org, err = nameClaim(dec, name)
	case "user":
		c.User, err = nameClaim(dec, name)
	case "iss":
		c.Issuer, err = stringClaim(dec, name)
	case "sub":
		c.Subject, err = stringClaim(dec, name)
	case "jti":
		_, err = stringClaim(dec, name)
	case "admin":
		c.Admin, err = boolClaim(dec, name)
	case "aud":
		c.Audience, err = audienceClaim(dec)
	case "exp":
		c.ExpiresAt, err = dateClaim(dec, name)
	case "iat":
		c.IssuedAt, err = dateClaim(dec, name)
	case "nbf":
		c.NotBefore, err = dateClaim(dec, name)
	default:
		for _, k := range knownClaims {
			if strings.EqualFold(name, k) {
				return fmt.Errorf("claim %q is not %q: claim names are case-sensitive", name, k)
			}
		}
		err = skipValue(dec, 0)
	}
	return err
}

func stringClaim(dec *json.Decoder, name string) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("claim %q must be a string", name)
	}
	return s, nil
}

// nameClaim reads the org or user claim: a string, not empty. An empty
// org would otherwise read as no org, and an admin token as the
// deployment's admin token: an issuer that meant an org admin and filled
// in no org must get a refused token, not the whole deployment.
func nameClaim(dec *json.Decoder, name string) (string, error) {
	s, err := stringClaim(dec, name)
	if err == nil && s == "" {
		err = fmt.Errorf("claim %q is empty: leave it out or name one", name)
	}
	return s, err
}

func boolClaim(dec *json.Decoder, name string) (bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return false, err
	}
	v, ok := tok.(bool)
	if !ok {
		return false, fmt.Errorf("claim %q must be true or false", name)
	}
	return v, nil
}

// audienceClaim reads "aud": a string or a list of strings (RFC 7519 §4.1.3).
func audienceClaim(dec *json.Decoder) ([]string, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if s, ok := tok.(string); ok {
		return []string{s}, nil
	}
	if tok != json.Delim('[') {
		return nil, errors.New(`claim "aud" must be a string or a list of strings`)
	}
	aud := []string{}
	for dec.More() {
		s, err := stringClaim(dec, "aud")
		if err != nil {
			return nil, err
		}
		aud = append(aud, s)
	}
	_, err = dec.Token() // the closing bracket
	return aud, err
}

// dateClaim reads a NumericDate: a JSON number of seconds since the epoch,
// possibly fractional (RFC 7519 §2). A string is refused, even one holding a
// number.
func dateClaim(dec *json.Decoder, name string) (time.Time, error) {
	tok, err := dec.Token()
	if err != nil {
		return time.Time{}, err
	}
	n, ok := tok.(json.Number)
	if !ok {
		return time.Time{}, fmt.Errorf("claim %q must be a number (seconds since the epoch)", name)
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f < 0 || f > maxNumericDate {
		return time.Time{}, fmt.Errorf("claim %q: %s is not a time between the epoch and %g", name, n, maxNumericDate)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}

// skipValue reads one value the server does not use, refusing duplicate
// names in any object in it and nesting deeper than maxClaimsDepth.
func skipValue(dec *json.Decoder, depth int) error {
	if depth > maxClaimsDepth {
		return fmt.Errorf("claims nested deeper than %d levels", maxClaimsDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			if _, err := memberName(dec, seen); err != nil {
				return err
			}
			if err := skipValue(dec, depth+1); err != nil {
				return err
			}
		}
	case json.Delim('['):
		for dec.More() {
			if err := skipValue(dec, depth+1); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	_, err = dec.Token() // the closing brace or bracket
	return err
}

// claimRules are what a token's claims must satisfy besides their form.
type claimRules struct {
	issuer, audience string        // required iss and aud, if set
	maxLifetime      time.Duration // longest exp - iat (exp - now without iat)
}

// tokenError is a token whose signature verified but whose claims the
// server refuses; reason is what the client is told.
type tokenError struct{ reason string }

func (e *tokenError) Error() string { return e.reason }

func refuse(format string, args ...any) error {
	return &tokenError{reason: fmt.Sprintf(format, args...)}
}

// check applies the time rules (with tokenLeeway for clock skew) and the
// issuer and audience rules at now. It runs on every use of a token, cached
// or not.
func (c *Claims) check(now time.Time, r claimRules) error {
	switch {
	case c.ExpiresAt.IsZero():
		return refuse("token lacks a required claim (exp)")
	case now.After(c.ExpiresAt.Add(tokenLeeway)):
		return refuse("token expired")
	case !c.NotBefore.IsZero() && now.Add(tokenLeeway).Before(c.NotBefore):
		return refuse("token not valid yet (nbf)")
	case !c.IssuedAt.IsZero() && c.IssuedAt.After(now.Add(tokenLeeway)):
		return refuse("token issued in the future (iat)")
	}
	if !c.IssuedAt.IsZero() {
		if life := c.ExpiresAt.Sub(c.IssuedAt); life > r.maxLifetime {
			return refuse("token lifetime exp - iat of %v exceeds the server's limit of %v", life, r.maxLifetime)
		}
	} else if left := c.ExpiresAt.Sub(now); left > r.maxLifetime+tokenLeeway {
		return refuse("token valid for %v more, beyond the server's limit of %v", left.Round(time.Second), r.maxLifetime)
	}
	if r.issuer != "" && c.Issuer != r.issuer {
		return refuse("token issuer (iss) is not the one this server requires")
	}
	if r.audience != "" && !slices.Contains(c.Audience, r.audience) {
		return refuse("token audience (aud) does not include this server")
	}
	return nil
}
