package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/wire"
)

const testHookSecret = "webhook-secret-0123456789"

// delivery is one request a test webhook receiver got.
type delivery struct {
	cursor   string
	attempt  int
	status   int
	signedOK bool
	event    diff.Event
}

// hookReceiver is a webhook endpoint that fails its first `fail` requests
// and records every request.
type hookReceiver struct {
	srv  *httptest.Server
	fail int

	mu   sync.Mutex
	got  []delivery
	seen int
}

func newHookReceiver(t *testing.T, fail int) *hookReceiver {
	h := &hookReceiver{fail: fail}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d := delivery{cursor: r.Header.Get(wire.HeaderDelivery), status: 200}
		d.attempt, _ = strconv.Atoi(r.Header.Get(wire.HeaderAttempt))
		d.signedOK = wire.Verify([]byte(testHookSecret), r.Header.Get(wire.HeaderTimestamp), r.Header.Get(wire.HeaderSignature),
			body, time.Now(), 5*time.Minute) == nil
		if json.Unmarshal(body, &d.event) != nil || d.event.Cursor != d.cursor {
			d.signedOK = false
		}
		h.mu.Lock()
		h.seen++
		if h.seen <= h.fail {
			d.status = 500
		}
		h.got = append(h.got, d)
		h.mu.Unlock()
		w.WriteHeader(d.status)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) deliveries() []delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery(nil), h.got...)
}

// delivered returns the entries acknowledged (2xx) so far, in order.
func (h *hookReceiver) delivered() []delivery {
	var out []delivery
	for _, d := range h.deliveries() {
		if d.status == 200 {
			out = append(out, d)
		}
	}
	return out
}

// checkWebhookDeliveries asserts what the issue asks of a webhook that
// failed its first `fail` requests: every entry (want, in feed order)
// delivered with a valid signature, in order per user; the failures all
// attempts at the first entry, retried with growing attempt numbers; and,
// fail aside, each entry delivered exactly once (no replica multiplies
// them).
func checkWebhookDeliveries(t *testing.T, all []delivery, fail int, want []string) {
	t.Helper()
	count := map[string]int{}
	lastVersion := map[string]uint64{}
	for i, d := range all {
		if !d.signedOK {
			t.Errorf("delivery %d (%s): bad signature or body", i, d.cursor)
		}
		if i < fail {
			if d.status != 500 || d.cursor != want[0] || d.attempt != i+1 {
				t.Errorf("delivery %d: %+v, want attempt %d at the first entry, failed", i, d, i+1)
			}
			continue
		}
		if d.status != 200 {
			continue
		}
		count[d.cursor]++
		if d.event.Version <= lastVersion[d.event.User] {
			t.Errorf("user %s: version %d delivered after %d", d.event.User, d.event.Version, lastVersion[d.event.User])
		}
		lastVersion[d.event.User] = d.event.Version
	}
	if len(all) > fail && all[fail].attempt != fail+1 {
		t.Errorf("the first success is attempt %d, want %d", all[fail].attempt, fail+1)
	}
	for _, c := range want {
		if count[c] != 1 {
			t.Errorf("entry %s acknowledged %d times, want once", c, count[c])
		}
	}
	if len(count) != len(want) {
		t.Errorf("%d entries delivered, want %d", len(count), len(want))
	}
}

func webhookEnv(t *testing.T, allowPrivate bool) *testEnv {
	return feedEnv(t, envConfig{opts: func(o *Options) {
		b := &o.Backend
		b.Worker, b.WorkerInterval, b.HooksAllowPrivate = true, 20*time.Millisecond, allowPrivate
		b.WebhookBackoffMin, b.WebhookBackoffMax = 5*time.Millisecond, 40*time.Millisecond
	}})
}

func (e *testEnv) setWebhook(org, url string) {
	e.t.Helper()
	body := fmt.Sprintf(`{"offline_mode":true,"webhook_url":%q,"webhook_secret":%q}`, url, testHookSecret)
	if r := e.do("PUT", "/v1/admin/orgs/"+org, []byte(body), withToken(adminToken(e.t))); r.status != 200 {
		e.t.Fatalf("set webhook: %d %s", r.status, r.body)
	}
}

// TestWebhookDeliversEveryEntryInOrder: a receiver that fails the first 5
// deliveries and then recovers receives every entry of its org, signed, in
// order per user, at least once; the webhook's consumer cursor ends at the
// last entry.
func TestWebhookDeliversEveryEntryInOrder(t *testing.T) {
	e := webhookEnv(t, true)
	h := newHookReceiver(t, 5)
	e.setWebhook("acme", h.srv.URL)
	e.enableOrg("globex") // another org's entries are not delivered
	e.upload("globex", "gus", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	for _, u := range []string{"alice", "bob"} {
		e.upload("acme", u, []gen.Record{{Key: "k", Value: []byte(`1`)}})
	}
	for i := range 2 {
		for _, u := range []string{"alice", "bob"} {
			body := fmt.Sprintf(`{"id":"p%d","base":%d,"ops":[{"op":"put","key":"k","value":%d}]}`, i, i+1, i+2)
			patchAnswer(t, e.do("POST", "/v1/patches", []byte(body), withToken(userToken(t, "acme", u))))
		}
	}
	e.clock.add(time.Second) // past FeedSettle
	page := e.orgFeed("acme", orgAdminToken(t, "acme"), "", 100, 0)
	if len(page.Entries) != 6 {
		t.Fatalf("feed holds %d entries", len(page.Entries))
	}
	var want []string
	for _, ev := range page.Entries {
		want = append(want, ev.Cursor)
	}
	waitUntil(t, "every entry is delivered", func() bool { return len(h.delivered()) >= len(want) })
	waitUntil(t, "the cursor reaches the last entry", func() bool {
		c, err := diff.ReadConsumer(t.Context(), e.s.store, "acme", diff.WebhookConsumer)
		return err == nil && c.Cursor == want[len(want)-1]
	})
	checkWebhookDeliveries(t, h.deliveries(), 5, want)

	r := e.do("GET", "/v1/admin/orgs/acme", nil, withToken(adminToken(t)))
	if strings.Contains(string(r.body), testHookSecret) || !strings.Contains(string(r.body), `"webhook_secret_set":true`) {
		t.Errorf("settings answer shows the secret or hides that it is set: %s", r.body)
	}
	// Removing the webhook removes its consumer: gc may take the entries.
	e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"webhook_url":""}`), withToken(adminToken(t)))
	if _, err := diff.ReadConsumer(t.Context(), e.s.store, "acme", diff.WebhookConsumer); err == nil {
		t.Error("the webhook's consumer outlives the webhook")
	}
}

// TestWebhookRefusesPrivateAddresses: without HooksAllowPrivate the server
// does not call a webhook whose name resolves to a loopback address (a
// literal one is refused when set: TestHookSettingsRefuseNonPublicLiterals);
// the entry waits.
func TestWebhookRefusesPrivateAddresses(t *testing.T) {
	e := webhookEnv(t, false)
	h := newHookReceiver(t, 0)
	e.setWebhook("acme", strings.Replace(h.srv.URL, "127.0.0.1", "localhost", 1))
	e.upload("acme", "alice", []gen.Record{{Key: "k", Value: []byte(`1`)}})
	waitUntil(t, "a delivery is refused", func() bool {
		return counter(t, e.s.backend.webhookDeliveries.WithLabelValues("acme", "failed")) > 0
	})
	if n := len(h.deliveries()); n != 0 {
		t.Errorf("the receiver on loopback got %d requests", n)
	}
	c, err := diff.ReadConsumer(t.Context(), e.s.store, "acme", diff.WebhookConsumer)
	if err != nil || c.Cursor > diff.FeedPositionAt(time.Now()) {
		t.Errorf("consumer %+v %v", c, err)
	}
}

// TestHookSettingsRefused: hook settings that cannot work are refused and
// change nothing.
func TestHookSettingsRefused(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	for name, body := range map[string]string{
		"not a URL":         `{"webhook_url":"::nope","webhook_secret":"0123456789abcdef"}`,
		"ftp":               `{"webhook_url":"ftp://x.example/","webhook_secret":"0123456789abcdef"}`,
		"user info":         `{"webhook_url":"https://u:p@x.example/","webhook_secret":"0123456789abcdef"}`,
		"no secret":         `{"webhook_url":"https://x.example/"}`,
		"short secret":      `{"webhook_url":"https://x.example/","webhook_secret":"short"}`,
		"validator, no key": `{"validation_url":"https://x.example/v"}`,
		"timeout":           `{"validation_timeout_ms":-1}`,
		"fallback":          `{"validation_fallback":"maybe"}`,
	} {
		if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(body), withToken(adminToken(t))); r.status != 400 {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := e.do("GET", "/v1/admin/orgs/acme", nil, withToken(adminToken(t))); strings.Contains(string(r.body), "x.example") {
		t.Errorf("refused settings stored: %s", r.body)
	}
}
