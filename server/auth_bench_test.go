package server

import (
	"testing"
	"time"
)

// BenchmarkVerifyToken: what checking a bearer token costs, the first time
// (signature, exact claims decoding, rules) and from the verified-token
// cache (the rules again).
func BenchmarkVerifyToken(b *testing.B) {
	o := DefaultOptions()
	o.JWTSecret = testSecret
	v, err := newVerifier(&o)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := MintToken(testSecret, Claims{Org: "acme", User: "alice"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v.cache = nil
			if _, err := v.verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}
