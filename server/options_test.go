package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/bytesize"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestDefaultOptions(t *testing.T) {
	o := DefaultOptions()
	if o.Addr != "127.0.0.1:8080" || o.MaxPatchBytes != 8<<20 || o.MaxDatasetBytes != 1<<30 || o.LongPollMax != 60*time.Second {
		t.Errorf("DefaultOptions() = %+v", o)
	}
}

func TestValidate(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p384 := writePEM(t, "PUBLIC KEY", der)
	notPEM := writePEM(t, "PRIVATE KEY", []byte("x"))

	tests := []struct {
		name    string
		edit    func(o *Options)
		wantErr string
	}{
		{"ok with secret", func(o *Options) {}, ""},
		{"no key", func(o *Options) { o.JWTSecret = nil }, "no JWT secret"},
		{"short secret", func(o *Options) { o.JWTSecret = []byte("short") }, "at least 32"},
		{"no store", func(o *Options) { o.Store = nil }, "no store"},
		{"zero patch limit", func(o *Options) { o.MaxPatchBytes = 0 }, "positive"},
		{"decode memory under one decoder", func(o *Options) { o.MaxDecodeMemory = 1 << 20 }, "max-decode-memory"},
		{"zero long poll", func(o *Options) { o.LongPollMax = 0 }, "positive"},
		{"missing key file", func(o *Options) { o.JWTPublicKeyFiles = []string{"/nonexistent.pem"} }, "read JWT public key"},
		{"P-384 key", func(o *Options) { o.JWTPublicKeyFiles = []string{p384} }, "P-256"},
		// Durations an operator can make negative by mistake: each once ran
		// (a negative settle as the default, a negative connection timeout
		// failing every read).
		{"listen address without a port", func(o *Options) { o.Addr = "notanaddr" }, "listen address"},
		{"listen address with a bad port", func(o *Options) { o.Addr = "127.0.0.1:http-ish" }, "listen address"},
		{"negative feed settle", func(o *Options) { o.FeedSettle = -5 * time.Second }, "feed-settle must not be negative"},
		{"negative head cache", func(o *Options) { o.HeadCacheTTL = -time.Second }, "head-cache-ttl must not be negative"},
		{"negative read timeout", func(o *Options) { o.ReadTimeout = -time.Second }, "read-timeout"},
		{"negative write timeout", func(o *Options) { o.WriteTimeout = -time.Second }, "write-timeout"},
		{"negative idle timeout", func(o *Options) { o.IdleTimeout = -time.Second }, "idle-timeout"},
		{"file without public key", func(o *Options) { o.JWTPublicKeyFiles = []string{notPEM} }, "no PEM public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			o.Store = memstore.New()
			o.JWTSecret = testSecret
			o.Logger = discardLogger()
			tc.edit(&o)
			err := o.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate = %v, want an error containing %q", err, tc.wantErr)
			}
			if _, err := New(o); err == nil {
				t.Error("New accepted options Validate rejects")
			}
		})
	}
}

func TestDevMode(t *testing.T) {
	var logs bytes.Buffer
	o := DefaultOptions()
	o.Store = memstore.New()
	o.Dev = true
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if string(o.JWTSecret) != DevJWTSecret {
		t.Errorf("dev secret = %q, want DevJWTSecret", o.JWTSecret)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "DEVELOPMENT MODE") {
		t.Errorf("no loud warning in dev mode; logs: %s", logs.String())
	}
	// A token minted with the dev secret opens a dev server.
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.JWTSecret = nil; o.Dev = true }, setup: echoRoutes})
	tok, err := MintToken([]byte(DevJWTSecret), Claims{Admin: true}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", "/test/admin", nil, withToken(tok)); r.status != 200 {
		t.Errorf("dev token: status %d, want 200", r.status)
	}
	// With a secret configured, dev mode keeps it.
	o2 := DefaultOptions()
	o2.Store = memstore.New()
	o2.Dev = true
	o2.JWTSecret = testSecret
	o2.Logger = discardLogger()
	if err := o2.Validate(); err != nil || !bytes.Equal(o2.JWTSecret, testSecret) {
		t.Errorf("dev with a secret: err %v, secret %q", err, o2.JWTSecret)
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"4096", 4096, false},
		{"512k", 512 << 10, false},
		{"8MiB", 8 << 20, false},
		{"8mb", 8 << 20, false},
		{"1G", 1 << 30, false},
		{"1GiB", 1 << 30, false},
		{" 2 MiB ", 2 << 20, false},
		{"", 0, true},
		{"-1", 0, true},
		{"1.5M", 0, true},
		{"10T", 0, true},
		{"99999999999999G", 0, true},
	}
	for _, tc := range tests {
		got, err := bytesize.Parse(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("bytesize.Parse(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
