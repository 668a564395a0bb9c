package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// The feed worker does the deployment's work on the change feed that must
// not multiply with its replicas: webhook delivery (webhook.go) and the
// consumer lag metrics. Every replica started with BackendOptions.Worker
// runs one, and each interval it tries to take or renew the deployment's
// lease (lease.go, snapshot.LeaseKey("feed-worker")); only the holder
// works, and only while its lease is valid (its work's context ends
// then). A replica that shuts down releases the lease, so another takes
// over at its next try; one that dies is replaced once the lease expires
// (six intervals).

// feedWorkerLease names the feed worker's lease.
const feedWorkerLease = "feed-worker"

// lagScanMax bounds the feed names one consumer's lag count examines.
const lagScanMax = 10_000

type feedWorker struct {
	s     *Server
	lease *lease
	hooks *http.Client
	log   *slog.Logger

	mu     sync.Mutex
	orgs   map[string]*orgDelivery // webhook state by org (webhook.go)
	gauges map[consumerID]bool     // consumer labels set, to delete stale ones
	stale  map[consumerID]bool     // consumers reported stale
	leader bool
}

type consumerID struct{ org, name string }

func newFeedWorker(s *Server) *feedWorker {
	var id [8]byte
	rand.Read(id[:])
	iv := s.opts.Backend.WorkerInterval
	return &feedWorker{
		s: s, log: s.log,
		lease: &lease{s: s.store, key: snapshot.LeaseKey(feedWorkerLease), holder: hex.EncodeToString(id[:]),
			ttl: 6 * iv, margin: iv, now: s.opts.Now},
		hooks:  s.hooks,
		orgs:   map[string]*orgDelivery{},
		gauges: map[consumerID]bool{},
		stale:  map[consumerID]bool{},
	}
}

// startFeedWorker runs the feed worker until the server stops, if the
// options ask for one. Shutdown waits for it.
func (s *Server) startFeedWorker() {
	if !s.opts.Backend.Worker {
		return
	}
	s.workerOnce.Do(func() {
		s.workerDone.Add(1)
		go func() {
			defer s.workerDone.Done()
			newFeedWorker(s).run()
		}()
	})
}

func (w *feedWorker) run() {
	t := time.NewTicker(w.s.opts.Backend.WorkerInterval)
	defer t.Stop()
	// The round in progress ends as soon as a shutdown begins.
	ctx, cancel := context.WithCancel(w.s.baseCtx)
	defer cancel()
	go func() {
		select {
		case <-w.s.stoppingCh():
		case <-ctx.Done():
		}
		cancel()
	}()
	for {
		w.tick(ctx)
		select {
		case <-t.C:
		case <-w.s.stoppingCh():
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := w.lease.release(ctx); err != nil {
				w.log.Warn("feed worker: releasing the lease failed; another replica takes over when it expires", "err", err)
			}
			cancel()
			w.setLeader(false)
			return
		}
	}
}

// tick renews or takes the lease and, holding it, does one round of work
// within the lease's validity.
func (w *feedWorker) tick(ctx context.Context) {
	if w.lease.etag == "" {
		// Not the holder: compete only when there is work, so that a
		// deployment without consumers (and a replica that is not the
		// holder) only lists, and writes nothing.
		if ok, err := w.hasConsumers(ctx); !ok {
			if err != nil {
				w.log.Warn("feed worker: list consumers", "err", err)
			}
			w.setLeader(false)
			return
		}
	}
	held, err := w.lease.acquire(ctx)
	if err != nil {
		w.log.Warn("feed worker: lease", "err", err)
	}
	w.setLeader(held)
	if !held {
		return
	}
	wctx, cancel := context.WithDeadline(ctx, w.lease.until)
	defer cancel()
	consumers, err := diff.ReadConsumers(wctx, w.s.store, "")
	if err != nil {
		w.log.Warn("feed worker: read consumers", "err", err)
		return
	}
	w.deliverWebhooks(wctx, consumers)
	w.measureLag(wctx, consumers)
}

// errFound stops a listing or a scan that found what it looked for.
var errFound = errors.New("found")

// hasConsumers reports whether any org has a registered feed consumer.
func (w *feedWorker) hasConsumers(ctx context.Context) (bool, error) {
	err := w.s.store.List(ctx, snapshot.ConsumersPrefix, func(snapshot.ObjectInfo) error { return errFound })
	if errors.Is(err, errFound) {
		return true, nil
	}
	return false, err
}

// setLeader records whether this replica holds the lease; one that lost
// it clears its consumer gauges (the new holder reports them).
func (w *feedWorker) setLeader(held bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if held == w.leader {
		return
	}
	w.leader = held
	m := w.s.backend
	if held {
		m.workerLeader.Set(1)
		w.log.Info("feed worker: this replica holds the lease")
		return
	}
	m.workerLeader.Set(0)
	m.consumerLagEntries.Reset()
	m.consumerLagSeconds.Reset()
	m.consumerStale.Reset()
	clear(w.gauges)
	clear(w.orgs)
}

// measureLag sets each consumer's lag gauges and reports the consumers
// that went stale (once each, until they acknowledge again).
func (w *feedWorker) measureLag(ctx context.Context, consumers []diff.Consumer) {
	m := w.s.backend
	now := w.s.opts.now()
	seen := map[consumerID]bool{}
	for _, c := range consumers {
		lag, err := diff.FeedLag(ctx, w.s.store, diff.FeedOptions{Org: c.Org, After: c.Cursor,
			Settle: w.s.opts.FeedSettle, MaxScan: lagScanMax, Now: now})
		if err != nil {
			w.log.Warn("feed worker: consumer lag", "org", c.Org, "consumer", c.Name, "err", err)
			continue
		}
		id := consumerID{c.Org, c.Name}
		seen[id] = true
		secs := 0.0
		if lag.Entries > 0 {
			secs = max(0, now.Sub(lag.Oldest).Seconds())
		}
		m.consumerLagEntries.WithLabelValues(c.Org, c.Name).Set(float64(lag.Entries))
		m.consumerLagSeconds.WithLabelValues(c.Org, c.Name).Set(secs)
		stale := lag.Entries > 0 && now.Sub(time.Unix(c.AckedUnix, 0)) > w.s.opts.Backend.ConsumerStale
		w.noteStale(id, c, stale, lag) // the log line before the gauge says so
		m.consumerStale.WithLabelValues(c.Org, c.Name).Set(b2f(stale))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range w.gauges {
		if !seen[id] {
			m.consumerLagEntries.DeleteLabelValues(id.org, id.name)
			m.consumerLagSeconds.DeleteLabelValues(id.org, id.name)
			m.consumerStale.DeleteLabelValues(id.org, id.name)
		}
	}
	w.gauges = seen
}

func (w *feedWorker) noteStale(id consumerID, c diff.Consumer, stale bool, lag diff.Lag) {
	w.mu.Lock()
	was := w.stale[id]
	w.stale[id] = stale
	w.mu.Unlock()
	if stale && !was {
		w.log.Warn("feed consumer is stale: it has not acknowledged for longer than --consumer-stale; gc keeps its entries (delete the consumer if it is gone for good)",
			"org", c.Org, "consumer", c.Name, "acked", time.Unix(c.AckedUnix, 0).UTC(),
			"lag_entries", lag.Entries, "lag_complete", lag.Complete)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// deliverWebhooks delivers every org's pending webhook entries, orgs side
// by side (a few at once), each org's in feed order.
func (w *feedWorker) deliverWebhooks(ctx context.Context, consumers []diff.Consumer) {
	g := new(errgroup.Group)
	g.SetLimit(4)
	for _, c := range consumers {
		if c.Name != diff.WebhookConsumer {
			continue
		}
		g.Go(func() error {
			w.deliverOrg(ctx, c)
			return nil
		})
	}
	g.Wait()
}
