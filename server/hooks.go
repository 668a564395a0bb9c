package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// HookSettings are an org's hooks into its backend, part of its settings:
// the webhook that receives the org's change feed (webhook.go), the URL
// that validates devices' patches (validation.go), and the secret that
// signs every request to either (wire.Sign). The secret is never shown:
// settings answers say webhook_secret_set instead.
type HookSettings struct {
	WebhookURL    string `json:"webhook_url,omitempty"`
	WebhookSecret string `json:"webhook_secret,omitempty"`
	ValidationURL string `json:"validation_url,omitempty"`
	// ValidationTimeoutMs is the deadline of one validation request
	// (0: DefaultValidationTimeout).
	ValidationTimeoutMs int64 `json:"validation_timeout_ms,omitempty"`
	// ValidationFallback says what becomes of a device's patch while the
	// validator is down: FallbackWait ("": the default) answers 503 with
	// Retry-After, so the device keeps it and retries; FallbackPass
	// applies it unvalidated.
	ValidationFallback string `json:"validation_fallback,omitempty"`
}

// Validation fallbacks (HookSettings.ValidationFallback).
const (
	FallbackWait = "wait"
	FallbackPass = "pass"
)

// DefaultValidationTimeout is the validation deadline an org sets none of.
const DefaultValidationTimeout = 2 * time.Second

// Bounds of the hook settings.
const (
	maxHookURLBytes         = 2048
	minWebhookSecretBytes   = 16
	maxWebhookSecretBytes   = 512
	maxValidationTimeoutMs  = 30_000
	validationRetryAfterSec = 5
)

func (h HookSettings) validate() error {
	for name, u := range map[string]string{"webhook_url": h.WebhookURL, "validation_url": h.ValidationURL} {
		if err := checkHookURL(u); err != nil {
			return badRequest("%s: %v", name, err)
		}
	}
	if (h.WebhookURL != "" || h.ValidationURL != "") && h.WebhookSecret == "" {
		return badRequest("webhook_secret is required with a webhook_url or validation_url: every request to the backend is signed")
	}
	if n := len(h.WebhookSecret); n > 0 && (n < minWebhookSecretBytes || n > maxWebhookSecretBytes || !utf8.ValidString(h.WebhookSecret)) {
		return badRequest("webhook_secret must be %d..%d bytes of text, got %d", minWebhookSecretBytes, maxWebhookSecretBytes, n)
	}
	if h.ValidationTimeoutMs < 0 || h.ValidationTimeoutMs > maxValidationTimeoutMs {
		return badRequest("validation_timeout_ms must be 0..%d", maxValidationTimeoutMs)
	}
	switch h.ValidationFallback {
	case "", FallbackWait, FallbackPass:
	default:
		return badRequest("validation_fallback %q is not %q or %q", h.ValidationFallback, FallbackWait, FallbackPass)
	}
	return nil
}

// checkHookURL accepts "" or an absolute http(s) URL with a host and no
// user info.
func checkHookURL(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > maxHookURLBytes {
		return fmt.Errorf("longer than %d bytes", maxHookURLBytes)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q is not an http or https URL", s)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q has no host", s)
	case u.User != nil:
		return errors.New("user info in the URL is not allowed (the secret signs requests)")
	}
	return nil
}

func (h HookSettings) validationTimeout() time.Duration {
	if h.ValidationTimeoutMs <= 0 {
		return DefaultValidationTimeout
	}
	return time.Duration(h.ValidationTimeoutMs) * time.Millisecond
}

// hookUpdate is the part of a settings update that changes the hooks.
type hookUpdate struct {
	WebhookURL          *string `json:"webhook_url"`
	WebhookSecret       *string `json:"webhook_secret"`
	ValidationURL       *string `json:"validation_url"`
	ValidationTimeoutMs *int64  `json:"validation_timeout_ms"`
	ValidationFallback  *string `json:"validation_fallback"`
}

func (u hookUpdate) apply(h *HookSettings) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&h.WebhookURL, u.WebhookURL)
	set(&h.WebhookSecret, u.WebhookSecret)
	set(&h.ValidationURL, u.ValidationURL)
	set(&h.ValidationFallback, u.ValidationFallback)
	if u.ValidationTimeoutMs != nil {
		h.ValidationTimeoutMs = *u.ValidationTimeoutMs
	}
}

// orgSettingsView is how settings are answered: the webhook secret hidden
// (this field shadows the stored one), and whether one is set.
type orgSettingsView struct {
	OrgSettings
	WebhookSecret    string `json:"webhook_secret,omitempty"`
	WebhookSecretSet bool   `json:"webhook_secret_set,omitempty"`
}

func settingsView(st OrgSettings) orgSettingsView {
	return orgSettingsView{OrgSettings: st, WebhookSecretSet: st.HookSettings.WebhookSecret != ""}
}

// syncWebhookConsumer makes the webhook's consumer follow the settings: an
// org with a webhook has one (registered at the feed's current end when the
// webhook is new, so it does not replay the org's history), one without has
// none (its entries are then gc's to take). It runs after every settings
// change, so sending the change again repairs a failure.
func (s *Server) syncWebhookConsumer(ctx context.Context, org string, st OrgSettings) error {
	key := snapshot.ConsumerKey(org, diff.WebhookConsumer)
	if st.WebhookURL == "" {
		if err := s.store.Delete(ctx, key); err != nil {
			return fmt.Errorf("settings of org %s saved, but removing its webhook's feed consumer failed (send them again): %w", org, err)
		}
		return nil
	}
	now := time.Now()
	c := &diff.Consumer{Org: org, Name: diff.WebhookConsumer, RegisteredUnix: now.Unix(), AckedUnix: now.Unix(),
		Cursor: diff.FeedPositionAt(now.Add(-s.opts.FeedSettle))}
	err := diff.PutConsumer(ctx, s.store, c)
	if err != nil && !errors.Is(err, snapshot.ErrExist) {
		return fmt.Errorf("settings of org %s saved, but registering its webhook's feed consumer failed (send them again): %w", org, err)
	}
	return nil
}

// sharedAddressSpace is 100.64.0.0/10 (RFC 6598, carrier-grade NAT), as
// private as RFC 1918 space though netip does not call it so.
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

// hookClient makes the requests to orgs' backends. Unless allowPrivate, it
// refuses to connect to loopback, private, link-local and unspecified
// addresses (checked on the address dialled, after name resolution, so a
// name cannot point it inside), and it never follows redirects.
func hookClient(timeout time.Duration, allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: timeout}
	if !allowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			ip := ap.Addr().Unmap()
			if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
				ip.IsUnspecified() || ip.IsMulticast() || sharedAddressSpace.Contains(ip) {
				return fmt.Errorf("refusing to call %s: not a public address (serve --hooks-allow-private allows it)", ip)
			}
			return nil
		}
	}
	tr := &http.Transport{DialContext: d.DialContext, Proxy: nil, MaxIdleConnsPerHost: 4,
		TLSHandshakeTimeout: timeout, ResponseHeaderTimeout: timeout, IdleConnTimeout: 90 * time.Second}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
