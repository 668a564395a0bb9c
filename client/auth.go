package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// DefaultTokenRefreshSeconds is Options.TokenRefreshSeconds when unset.
const DefaultTokenRefreshSeconds = 60

// tokenState is the bearer token when a TokenProvider supplies it: kept in
// memory only.
type tokenState struct {
	mu       sync.Mutex
	provider func(ctx context.Context) (string, error)
	token    string
	exp      time.Time // when it is due by this device's clock (localExpiry); zero: unknown
	// refreshing is closed when the provider call under way returns: one
	// call at a time, and requests that need a token meanwhile wait for
	// it. The provider runs without the lock, so it may call the client.
	refreshing chan struct{}
}

// tokenError is a failure of the app's TokenProvider. It matches ErrAuth
// (the client has no token to send) but is temporary: the provider may
// have failed for want of a network, and the loop retries with backoff.
type tokenError struct{ err error }

func (e *tokenError) Error() string        { return "token provider: " + e.err.Error() }
func (e *tokenError) Unwrap() error        { return e.err }
func (e *tokenError) Is(target error) bool { return target == ErrAuth }

// bearer returns the token to send. Without a provider it is the stored
// one. With one, the provider is asked when there is no token yet, when
// the token expires within Options.TokenRefreshSeconds, or when force is
// set and the token is still stale (the one the server just refused: a
// concurrent refresh may already have replaced it).
func (c *Client) bearer(ctx context.Context, force bool, stale string) (string, error) {
	t := &c.tok
	if t.provider == nil {
		return c.storedToken(), nil
	}
	for {
		t.mu.Lock()
		if wait := t.refreshing; wait != nil {
			t.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		if tok, ok := t.usableLocked(c.statusNow(), c.tokenMargin(), force, stale); ok {
			t.mu.Unlock()
			return tok, nil
		}
		done := make(chan struct{})
		t.refreshing = done
		t.mu.Unlock()
		tok, err := c.refreshToken(ctx, force)
		t.mu.Lock()
		t.refreshing = nil
		close(done)
		t.mu.Unlock()
		return tok, err
	}
}

func (c *Client) tokenMargin() time.Duration {
	return time.Duration(c.opts.TokenRefreshSeconds) * time.Second
}

// usableLocked returns the token in memory if it may be sent as it is.
func (t *tokenState) usableLocked(now time.Time, margin time.Duration, force bool, stale string) (string, bool) {
	if t.token == "" {
		return "", false
	}
	if force {
		return t.token, t.token != stale
	}
	return t.token, t.exp.IsZero() || now.Before(t.exp.Add(-margin))
}

// refreshToken asks the provider for a token and keeps it. If the
// provider fails while the old token is still valid (only due for
// renewal, not refused: force), the old one is used and the provider
// asked again next time.
func (c *Client) refreshToken(ctx context.Context, force bool) (string, error) {
	t := &c.tok
	tok, err := t.provider(ctx)
	if err == nil {
		err = checkToken(tok)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.token, t.exp = tok, localExpiry(tok, c.statusNow(), c.tokenMargin())
		return tok, nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if !force && t.token != "" && !t.exp.IsZero() && c.statusNow().Before(t.exp) {
		return t.token, nil
	}
	return "", &tokenError{err: err}
}

// checkToken refuses what cannot be sent as a bearer token.
func checkToken(tok string) error {
	switch {
	case tok == "":
		return errors.New("it returned an empty token")
	case strings.ContainsAny(tok, " \t\r\n"):
		return errors.New("it returned a token with white space in it")
	}
	return nil
}

// localExpiry is when a token handed over at now is due for renewal by
// this device's clock: its exp claim, unless the token is due by that the
// moment it arrives. Then the clock is wrong (phones' clocks can be days
// ahead) and asking again would bring the same: the token is kept for its
// lifetime (exp - iat) counted from now, or, without iat, until the
// server refuses it (a 401 asks for a new one either way).
func localExpiry(tok string, now time.Time, margin time.Duration) time.Time {
	iat, exp := jwtTimes(tok)
	if exp.IsZero() || now.Before(exp.Add(-margin)) {
		return exp
	}
	if !iat.IsZero() && exp.After(iat) {
		return now.Add(exp.Sub(iat))
	}
	return time.Time{}
}

// jwtTimes reads the iat and exp claims of a JWT without verifying it (the
// server does that); each is zero if the token is not a JWT or the claim
// is absent or unreadable.
func jwtTimes(tok string) (iat, exp time.Time) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return
	}
	var claims struct {
		Iat json.Number `json:"iat"`
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return
	}
	return unixClaim(claims.Iat), unixClaim(claims.Exp)
}

// unixClaim is a NumericDate claim as a time; zero if unusable.
func unixClaim(n json.Number) time.Time {
	f, err := n.Float64()
	if err != nil || f <= 0 || f > 1<<40 {
		return time.Time{}
	}
	return time.Unix(int64(f), 0)
}

// setProvidedToken replaces the token in memory (SetServer with a
// provider); "" keeps the current one.
func (c *Client) setProvidedToken(tok string) {
	if tok == "" {
		return
	}
	c.tok.mu.Lock()
	c.tok.token, c.tok.exp = tok, localExpiry(tok, c.statusNow(), c.tokenMargin())
	c.tok.mu.Unlock()
}

// providedToken is the token in memory.
func (c *Client) providedToken() string {
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	return c.tok.token
}

func tokenMessage(err error) string {
	var te *tokenError
	if errors.As(err, &te) {
		return fmt.Sprintf("could not get a sign-in token from the app: %v", te.err)
	}
	return "the server refused the sign-in token: sign in again (" + err.Error() + ")"
}
