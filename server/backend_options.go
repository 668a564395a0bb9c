package server

import (
	"flag"
	"fmt"
	"strconv"
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

func (o *Options) registerBackendFlags(fs *flag.FlagSet) {
	b := &o.Backend
	b.MaxFanoutUsers = envParse(o, "DELTASYNC_MAX_FANOUT_USERS", b.MaxFanoutUsers, strconv.Atoi)
	fs.IntVar(&b.MaxFanoutUsers, "max-fanout-users", b.MaxFanoutUsers,
		"most users one fan-out admin patch may name (env DELTASYNC_MAX_FANOUT_USERS)")
	b.FanoutConcurrency = envParse(o, "DELTASYNC_FANOUT_CONCURRENCY", b.FanoutConcurrency, strconv.Atoi)
	fs.IntVar(&b.FanoutConcurrency, "fanout-concurrency", b.FanoutConcurrency,
		"users of one fan-out replayed at once (env DELTASYNC_FANOUT_CONCURRENCY)")
	b.Worker = o.envBool("DELTASYNC_FEED_WORKER", b.Worker)
	fs.BoolVar(&b.Worker, "feed-worker", b.Worker,
		"compete for the deployment's feed-worker lease: webhook delivery and consumer lag metrics (env DELTASYNC_FEED_WORKER)")
	b.WorkerInterval = o.envDuration("DELTASYNC_FEED_WORKER_INTERVAL", b.WorkerInterval)
	fs.DurationVar(&b.WorkerInterval, "feed-worker-interval", b.WorkerInterval,
		"cadence of the feed worker; its lease lasts six of these (env DELTASYNC_FEED_WORKER_INTERVAL)")
	b.ConsumerStale = o.envDuration("DELTASYNC_CONSUMER_STALE", b.ConsumerStale)
	fs.DurationVar(&b.ConsumerStale, "consumer-stale", b.ConsumerStale,
		"report a feed consumer that has not acknowledged for this long while entries wait (env DELTASYNC_CONSUMER_STALE)")
	o.registerHookFlags(fs)
}

func (o *Options) registerHookFlags(fs *flag.FlagSet) {
	b := &o.Backend
	b.HookTimeout = o.envDuration("DELTASYNC_HOOK_TIMEOUT", b.HookTimeout)
	fs.DurationVar(&b.HookTimeout, "hook-timeout", b.HookTimeout,
		"longest wait for one webhook delivery (env DELTASYNC_HOOK_TIMEOUT)")
	b.WebhookBackoffMin = o.envDuration("DELTASYNC_WEBHOOK_BACKOFF_MIN", b.WebhookBackoffMin)
	fs.DurationVar(&b.WebhookBackoffMin, "webhook-backoff-min", b.WebhookBackoffMin,
		"first wait after a failed webhook delivery; it doubles per failure (env DELTASYNC_WEBHOOK_BACKOFF_MIN)")
	b.WebhookBackoffMax = o.envDuration("DELTASYNC_WEBHOOK_BACKOFF_MAX", b.WebhookBackoffMax)
	fs.DurationVar(&b.WebhookBackoffMax, "webhook-backoff-max", b.WebhookBackoffMax,
		"longest wait between webhook attempts (env DELTASYNC_WEBHOOK_BACKOFF_MAX)")
	b.HooksAllowPrivate = o.envBool("DELTASYNC_HOOKS_ALLOW_PRIVATE", b.HooksAllowPrivate)
	fs.BoolVar(&b.HooksAllowPrivate, "hooks-allow-private", b.HooksAllowPrivate,
		"let webhooks and validation URLs reach loopback, private and link-local addresses (env DELTASYNC_HOOKS_ALLOW_PRIVATE)")
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
