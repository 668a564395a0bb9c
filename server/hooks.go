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
	now := s.opts.now()
	c := &diff.Consumer{Org: org, Name: diff.WebhookConsumer, RegisteredUnix: now.Unix(), AckedUnix: now.Unix(),
		Cursor: diff.FeedPositionAt(now.Add(-s.opts.FeedSettle))}
	err := diff.PutConsumer(ctx, s.store, c)
	if err != nil && !errors.Is(err, snapshot.ErrExist) {
		return fmt.Errorf("settings of org %s saved, but registering its webhook's feed consumer failed (send them again): %w", org, err)
	}
	return nil
}

// nonPublicV4 are IPv4 ranges that are not public unicast beyond what
// netip classifies: "this network" (0/8: 0.x dials the host itself on
// some systems), shared address space (100.64/10, RFC 6598: carrier NAT,
// and cloud metadata such as 100.100.100.200), IETF protocol assignments
// (192.0.0/24), benchmarking (198.18/15) and reserved space up to the
// broadcast address (240/4).
var nonPublicV4 = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// Prefixes of IPv6 addresses that carry an IPv4 address a gateway or the
// host may deliver to: NAT64 (64:ff9b::/96, and 64:ff9b:1::/48 for local
// use), IPv4-compatible (::/96, deprecated) at the end, 6to4 (2002::/16)
// in bytes 2..5. The IPv4 address inside is checked as well.
var (
	nat64Prefix      = netip.MustParsePrefix("64:ff9b::/96")
	nat64LocalPrefix = netip.MustParsePrefix("64:ff9b:1::/48")
	v4CompatPrefix   = netip.MustParsePrefix("::/96")
	sixToFourPrefix  = netip.MustParsePrefix("2002::/16")
)

// checkPublicAddr refuses an address a hook must not call unless the
// operator allows private ones: loopback, private, link-local,
// unspecified, multicast, the IPv4 ranges of nonPublicV4, and IPv6
// addresses carrying such an IPv4 address.
func checkPublicAddr(ip netip.Addr) error {
	ip = ip.Unmap()
	if inner, ok := embeddedV4(ip); ok {
		if err := checkPublicAddr(inner); err != nil {
			return fmt.Errorf("%s carries %s: %w", ip, inner, err)
		}
	}
	public := !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast())
	for _, p := range nonPublicV4 {
		public = public && !p.Contains(ip)
	}
	if !public {
		return fmt.Errorf("%s is not a public address (serve --hooks-allow-private allows it)", ip)
	}
	return nil
}

// embeddedV4 returns the IPv4 address an IPv6 address carries (NAT64,
// IPv4-compatible, 6to4), if it is one of those.
func embeddedV4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	switch {
	case nat64Prefix.Contains(ip), nat64LocalPrefix.Contains(ip), v4CompatPrefix.Contains(ip) && !ip.IsUnspecified() && !ip.IsLoopback():
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFourPrefix.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// checkHookHost refuses a hook URL whose host is a literal address that
// checkPublicAddr refuses, so the admin learns it when setting it. Names
// are checked when dialled (hookClient), after they are resolved.
func checkHookHost(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return nil // a name
	}
	return checkPublicAddr(ip)
}

// checkHookTargets refuses, unless the operator allows private addresses,
// an update setting a webhook or validation URL whose host is a literal
// non-public address (checkHookHost).
func (s *Server) checkHookTargets(u hookUpdate) error {
	if s.opts.Backend.HooksAllowPrivate {
		return nil
	}
	for name, v := range map[string]*string{"webhook_url": u.WebhookURL, "validation_url": u.ValidationURL} {
		if v == nil || *v == "" {
			continue
		}
		if err := checkHookHost(*v); err != nil {
			return badRequest("%s: %v", name, err)
		}
	}
	return nil
}

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
			if err := checkPublicAddr(ap.Addr()); err != nil {
				return fmt.Errorf("refusing to call it: %w", err)
			}
			return nil
		}
	}
	tr := &http.Transport{DialContext: d.DialContext, Proxy: nil, MaxIdleConnsPerHost: 4,
		TLSHandshakeTimeout: timeout, ResponseHeaderTimeout: timeout, IdleConnTimeout: 90 * time.Second}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
