package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/wire"
)

// Webhook delivery: an org with a webhook_url in its settings has a feed
// consumer named diff.WebhookConsumer (syncWebhookConsumer), and the feed
// worker (one per deployment: feedworker.go) POSTs each of the org's feed
// entries after that consumer's cursor to the URL, one entry per request,
// in feed order (so in order per user), as a diff.Event signed with the
// org's webhook secret (wire.Sign over the timestamp and the body, in
// wire.HeaderSignature, the timestamp in wire.HeaderTimestamp, the entry's
// cursor in wire.HeaderDelivery). A 2xx answer acknowledges the entry:
// only then does the consumer's cursor move past it, so gc keeps what is
// not delivered. Anything else (an error, a timeout, a redirect) stops the
// org's delivery, and the same entry is tried again after an exponential
// backoff (WebhookBackoffMin, doubling, at most WebhookBackoffMax). An
// entry is delivered at least once: after a crash or a lease handover the
// entries delivered since the cursor was last written go again, and a
// receiver drops repeats by wire.HeaderDelivery.

// webhookPage is how many entries one round reads per org.
const webhookPage = 100

// orgDelivery is the worker's memory of one org's webhook.
type orgDelivery struct {
	failures int       // consecutive failed attempts at the entry `failing`
	failing  string    // cursor of the entry that failed
	retryAt  time.Time // no attempt before
	passed   string    // feed position read up to (past other orgs' entries); not durable
}

func (w *feedWorker) orgState(org string) *orgDelivery {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.orgs[org]
	if d == nil {
		d = &orgDelivery{}
		w.orgs[org] = d
	}
	return d
}

// deliverOrg delivers the org's entries after its webhook consumer's
// cursor, until one fails or the page ends.
func (w *feedWorker) deliverOrg(ctx context.Context, c diff.Consumer) {
	d := w.orgState(c.Org)
	if w.s.opts.now().Before(d.retryAt) {
		return
	}
	st, _, err := w.s.loadOrgSettings(ctx, c.Org)
	if err != nil || st.WebhookURL == "" {
		return // unreadable now, or the webhook was just removed
	}
	after := max(c.Cursor, d.passed)
	entries, next, err := diff.ReadFeed(ctx, w.s.store, diff.FeedOptions{
		Org: c.Org, After: after, Limit: webhookPage, Settle: w.s.opts.FeedSettle, Now: w.s.opts.now()})
	if err != nil {
		w.log.Warn("webhook: read feed", "org", c.Org, "err", err)
		return
	}
	for _, e := range entries {
		if ctx.Err() != nil || !w.deliver(ctx, &c, d, st.HookSettings, e) {
			return
		}
	}
	d.passed = next
}

// deliver sends one entry and, on a 2xx, moves the consumer past it. It
// reports whether delivery may go on with the next entry.
func (w *feedWorker) deliver(ctx context.Context, c *diff.Consumer, d *orgDelivery, h HookSettings, e diff.FeedEntry) bool {
	attempt := 1
	if d.failing == e.Cursor {
		attempt = d.failures + 1
	}
	err := w.post(ctx, h, diff.NewEvent(e), attempt)
	if err != nil {
		if ctx.Err() != nil {
			return false // the lease ran out: not the receiver's fault
		}
		d.failing, d.failures = e.Cursor, attempt
		d.retryAt = w.s.opts.now().Add(w.backoff(attempt))
		w.s.backend.webhookDeliveries.WithLabelValues(c.Org, "failed").Inc()
		w.log.Warn("webhook delivery failed", "org", c.Org, "entry", e.Cursor, "attempt", attempt,
			"retry_in", w.backoff(attempt), "err", err)
		return false
	}
	w.s.backend.webhookDeliveries.WithLabelValues(c.Org, "ok").Inc()
	d.failing, d.failures = "", 0
	c.Cursor, c.AckedUnix = e.Cursor, w.s.opts.now().Unix()
	if err := diff.PutConsumer(ctx, w.s.store, c); err != nil {
		// Deleted (the webhook removed) or unwritable: the entry goes
		// again later, which at-least-once allows.
		w.log.Warn("webhook: advancing the cursor failed", "org", c.Org, "entry", e.Cursor, "err", err)
		return false
	}
	return true
}

// backoff is the wait after the attempt-th failure at one entry.
func (w *feedWorker) backoff(attempt int) time.Duration {
	b := w.s.opts.Backend
	d := b.WebhookBackoffMin
	for i := 1; i < attempt && d < b.WebhookBackoffMax; i++ {
		d *= 2
	}
	return min(d, b.WebhookBackoffMax)
}

// post sends one signed request to the webhook; only a 2xx answer is a
// success.
func (w *feedWorker) post(ctx context.Context, h HookSettings, ev diff.Event, attempt int) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	req, err := signedRequest(ctx, h.WebhookURL, []byte(h.WebhookSecret), body)
	if err != nil {
		return err
	}
	req.Header.Set(wire.HeaderDelivery, ev.Cursor)
	req.Header.Set(wire.HeaderAttempt, strconv.Itoa(attempt))
	resp, err := w.hooks.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// signedRequest is a POST of a JSON body to url, signed with secret.
func signedRequest(ctx context.Context, url string, secret, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "deltasync")
	req.Header.Set(wire.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(wire.HeaderSignature, wire.Sign(secret, ts, body))
	return req, nil
}
