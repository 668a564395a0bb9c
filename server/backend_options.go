package server

import (
	"fmt"
	"time"
)

// BackendOptions configure what the server does for the app's backend:
// admin patches and their fan-out, the per-org change feed, consumers,
// webhook delivery and write validation (backend.go, consumers.go,
// feedworker.go, webhook.go, validation.go).
type BackendOptions struct {
	// MaxFanoutUsers bounds the users of one fan-out admin patch.
	MaxFanoutUsers int
	// FanoutConcurrency bounds the users of one fan-out replayed at once.
	FanoutConcurrency int

	// Worker runs this replica's feed worker: it competes for the
	// deployment's lease (one holder at a time across replicas) and, while
	// it holds it, delivers webhooks and measures consumer lag. Off in the
	// library's defaults; `deltasync serve` turns it on.
	Worker bool
	// WorkerInterval is the feed worker's cadence: how often it looks for
	// work and tries to take the lease. The lease lasts six intervals and
	// is renewed every interval.
	WorkerInterval time.Duration
	// ConsumerStale is how long a consumer may go without acknowledging,
	// while it has entries to read, before it is reported stale (metric
	// and log). gc keeps its entries all the same.
	ConsumerStale time.Duration

	// HookTimeout bounds one webhook delivery; an org's validation
	// timeout is its own (at most this too).
	HookTimeout time.Duration
	// WebhookBackoffMin and WebhookBackoffMax bound the exponential
	// backoff between failed attempts at one delivery.
	WebhookBackoffMin, WebhookBackoffMax time.Duration
	// HooksAllowPrivate lets webhooks and validation requests reach
	// loopback, private and link-local addresses. Off by default: an org
	// admin must not make the server call into its own network.
	HooksAllowPrivate bool
}

// DefaultBackendOptions are the defaults of Options.Backend.
func DefaultBackendOptions() BackendOptions {
	return BackendOptions{
		MaxFanoutUsers:    10_000,
		FanoutConcurrency: 8,
		WorkerInterval:    5 * time.Second,
		ConsumerStale:     24 * time.Hour,
		HookTimeout:       10 * time.Second,
		WebhookBackoffMin: time.Second,
		WebhookBackoffMax: 5 * time.Minute,
	}
}

func (o *Options) validateBackend() error {
	b := &o.Backend
	switch {
	case b.MaxFanoutUsers <= 0 || b.FanoutConcurrency <= 0:
		return fmt.Errorf("server: max-fanout-users (%d) and fanout-concurrency (%d) must be positive", b.MaxFanoutUsers, b.FanoutConcurrency)
	case b.WorkerInterval <= 0 || b.HookTimeout <= 0:
		return fmt.Errorf("server: feed-worker-interval and hook-timeout must be positive")
	case b.ConsumerStale <= 0:
		return fmt.Errorf("server: consumer-stale must be positive, not %v", b.ConsumerStale)
	case b.WebhookBackoffMin <= 0 || b.WebhookBackoffMax < b.WebhookBackoffMin:
		return fmt.Errorf("server: webhook backoff %v..%v: want 0 < min <= max", b.WebhookBackoffMin, b.WebhookBackoffMax)
	}
	return nil
}

// feedSettle is FeedSettle as diff.ReadFeed applies it (its default when
// unset): per-org feed long polls wake when an entry is this old.
func (o *Options) feedSettle() time.Duration {
	if o.FeedSettle > 0 {
		return o.FeedSettle
	}
	return 10 * time.Second
}
