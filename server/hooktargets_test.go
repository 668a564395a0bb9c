package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHookClientRefusesNonPublicAddresses: the client that calls orgs'
// backends refuses, before connecting, every address that is not a public
// unicast one, also IPv6 forms that carry a private IPv4 address (NAT64,
// 6to4, IPv4-mapped and -compatible), so an org admin's webhook cannot
// reach the cloud's metadata service or the deployment's own network.
func TestHookClientRefusesNonPublicAddresses(t *testing.T) {
	dial := hookClient(time.Second, false).Transport.(*http.Transport).DialContext
	for _, addr := range []string{
		"169.254.169.254:80",          // cloud metadata
		"[::ffff:169.254.169.254]:80", // the same, IPv4-mapped
		"[::a9fe:a9fe]:80",            // the same, IPv4-compatible
		"[64:ff9b::a9fe:a9fe]:80",     // the same through NAT64
		"[64:ff9b::a00:1]:80",         // 10.0.0.1 through NAT64
		"[64:ff9b:1::a00:1]:80",       // local-use NAT64
		"[2002:a00:1::1]:80",          // 10.0.0.1 in 6to4
		"[fd00:ec2::254]:80",          // AWS metadata over IPv6 (ULA)
		"[fe80::1]:80",
		"100.100.100.200:80", // Alibaba metadata (shared address space)
		"127.0.0.1:80", "[::1]:80", "0.0.0.0:80", "[::]:80", "0.1.2.3:80",
		"10.1.2.3:80", "172.16.0.1:80", "192.168.1.1:80",
		"192.0.0.192:80", "198.18.0.1:80", "240.0.0.1:80", "255.255.255.255:80", "224.0.0.1:80",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := dial(ctx, "tcp", addr)
		cancel()
		if conn != nil {
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "not a public address") {
			t.Errorf("%s: %v, want refused as not a public address", addr, err)
		}
	}
}

// TestHookSettingsRefuseNonPublicLiterals: a webhook or validation URL
// whose host is a literal non-public address is refused when set (400,
// nothing stored), unless --hooks-allow-private; names are checked when
// dialled.
func TestHookSettingsRefuseNonPublicLiterals(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	for _, u := range []string{"http://169.254.169.254/latest/meta-data/", "http://[::ffff:a9fe:a9fe]/", "https://10.0.0.1:8443/hook",
		"http://[64:ff9b::a9fe:a9fe]/", "http://127.0.0.1/"} {
		for _, field := range []string{"webhook_url", "validation_url"} {
			body := `{"` + field + `":"` + u + `","webhook_secret":"0123456789abcdef"}`
			if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(body), withToken(adminToken(t))); r.status != 400 || !strings.Contains(string(r.body), "not a public address") {
				t.Errorf("%s %s: %d %s", field, u, r.status, r.body)
			}
		}
	}
	if r := e.do("GET", "/v1/admin/orgs/acme", nil, withToken(adminToken(t))); strings.Contains(string(r.body), "_url") {
		t.Errorf("refused hooks stored: %s", r.body)
	}
	open := newTestEnv(t, envConfig{opts: func(o *Options) { o.Backend.HooksAllowPrivate = true }})
	if r := open.do("PUT", "/v1/admin/orgs/acme", []byte(`{"webhook_url":"http://10.0.0.1/","webhook_secret":"0123456789abcdef"}`), withToken(adminToken(t))); r.status != 200 {
		t.Errorf("with hooks allowed to private addresses: %d %s", r.status, r.body)
	}
}
