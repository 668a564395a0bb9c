package wire_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/deltasync/deltasync/wire"
)

// TestVerifySignedRequests: a receiver accepts exactly the requests signed
// with its secret over that timestamp and body, within the tolerance.
func TestVerifySignedRequests(t *testing.T) {
	secret, body := []byte("0123456789abcdef"), []byte(`{"cursor":"c"}`)
	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := wire.Sign(secret, now.Unix(), body)
	if err := wire.Verify(secret, ts, sig, body, now, time.Minute); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
	for name, tc := range map[string]struct {
		secret, body []byte
		ts, sig      string
		now          time.Time
	}{
		"another secret":      {[]byte("fedcba9876543210"), body, ts, sig, now},
		"another body":        {secret, []byte(`{"cursor":"d"}`), ts, sig, now},
		"another timestamp":   {secret, body, strconv.FormatInt(now.Unix()+1, 10), sig, now},
		"replayed an hour on": {secret, body, ts, sig, now.Add(time.Hour)},
		"from the future":     {secret, body, ts, sig, now.Add(-time.Hour)},
		"no timestamp":        {secret, body, "", sig, now},
		"no scheme":           {secret, body, ts, sig[len("sha256="):], now},
		"empty signature":     {secret, body, ts, "", now},
	} {
		if err := wire.Verify(tc.secret, tc.ts, tc.sig, tc.body, tc.now, time.Minute); !errors.Is(err, wire.ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
}
