package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/deadline"
	"github.com/deltasync/deltasync/snapshot/storemetrics"
)

// DefaultMaxConns is the connection limit the server uses when
// Options.MaxConns is 0: half the process's file-descriptor limit less 32,
// so that every connection can hold one more descriptor for the store (a
// file, an S3 connection) and the process keeps some for itself. Without a
// known limit it is 4096.
func DefaultMaxConns() int {
	n, ok := descriptorLimit()
	if !ok {
		return 4096
	}
	return maxConnsFor(n)
}

func maxConnsFor(nofile uint64) int {
	const reserve, most = 32, 1 << 20
	if nofile <= reserve+2 {
		return 1
	}
	return int(min((nofile-reserve)/2, most))
}

// wrapStore counts and times every call the store receives
// (snapshot/storemetrics, on reg) and gives every call a deadline
// (snapshot/deadline), counting the calls that run out of it.
func wrapStore(opts *Options, m *guardMetrics, reg prometheus.Registerer) (snapshot.Store, error) {
	sm, err := storemetrics.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	metered := storemetrics.New(opts.Store, sm)
	if opts.StoreTimeout <= 0 {
		return metered, nil
	}
	return deadline.New(metered, deadline.Options{
		Timeout:   opts.StoreTimeout,
		MinRate:   opts.StoreMinRate,
		OnTimeout: func(op string) { m.storeTimeouts.WithLabelValues(op).Inc() },
	})
}

// guardMetrics count what the denial-of-service guards do, on the server's
// registry.
type guardMetrics struct {
	connsOpen     prometheus.Gauge
	connsRefused  *prometheus.CounterVec // limit
	acceptErrors  prometheus.Counter
	storeTimeouts *prometheus.CounterVec // op
	clientsGone   prometheus.Counter
}

func newGuardMetrics(reg *prometheus.Registry) *guardMetrics {
	m := &guardMetrics{
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "deltasync_connections_open",
			Help: "Client connections open now.",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_connections_refused_total",
			Help: "Client connections refused at once, by the limit they were over (max_conns, max_conns_per_ip).",
		}, []string{"limit"}),
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_accept_errors_total",
			Help: "Transient failures to accept a connection (such as running out of file descriptors), each followed by a retry.",
		}),
		storeTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_store_timeouts_total",
			Help: "Store calls that got no answer within their deadline, by operation.",
		}, []string{"op"}),
		clientsGone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_requests_abandoned_total",
			Help: "Requests whose client closed the connection while the server worked on them (the work was cancelled).",
		}),
	}
	reg.MustRegister(m.connsOpen, m.connsRefused, m.acceptErrors, m.storeTimeouts, m.clientsGone)
	return m
}

// Causes of the end of a request's context.
var (
	// errClientGone: the client closed the connection; the work for it
	// stops.
	errClientGone = errors.New("client closed the connection")
	// errRequestDone: the answer was sent.
	errRequestDone = errors.New("request answered")
)

// lifeKey is the user value under which a request's lifecycle is kept.
type lifeKey struct{}

// lifecycle ties a request's context to its connection: the context ends
// when the client goes away while the handler works (peerWatcher), or when
// the answer has been sent. fasthttp closes it, as an io.Closer user
// value, when it is done with the request: after a streamed answer too.
type lifecycle struct {
	s      *Server
	ctx    *fasthttp.RequestCtx
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	stop    func() // of the watch, nil if none runs
	stopped bool   // the handler returned: no watch may start
}

// begin gives req a context of its own, ended by the lifecycle.
func (s *Server) begin(ctx *fasthttp.RequestCtx, req *request) *lifecycle {
	rctx, cancel := context.WithCancelCause(req.Ctx)
	req.Ctx = rctx
	l := &lifecycle{s: s, ctx: ctx, cancel: cancel}
	ctx.SetUserValue(lifeKey{}, l)
	return l
}

// watch starts watching for the client to leave, once the request's body
// has been read (before, the body's bytes would look like a live client).
func (l *lifecycle) watch() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop != nil || l.stopped {
		return
	}
	l.stop = l.s.peers.watch(l.ctx.Conn(), func() {
		l.s.guards.clientsGone.Inc()
		l.cancel(errClientGone)
	}, l.s.opts.HeaderTimeout)
}

// handlerDone stops the watch: fasthttp reads the connection again.
func (l *lifecycle) handlerDone() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.stop != nil {
		l.stop()
		l.stop = nil
	}
}

// Close ends the request's context; fasthttp calls it once the answer is
// sent.
func (l *lifecycle) Close() error {
	l.handlerDone()
	l.cancel(errRequestDone)
	return nil
}

// watchAfterBody starts the client watch of the request in ctx, if any;
// readBody calls it once the whole body is in.
func watchAfterBody(ctx *fasthttp.RequestCtx) {
	if l, ok := ctx.UserValue(lifeKey{}).(*lifecycle); ok {
		l.watch()
	}
}

// clientGone reports whether the request's client left before its answer.
func clientGone(req *request) bool { return context.Cause(req.Ctx) == errClientGone }

func (s *Server) logGuards() {
	s.log.Info("connection and store guards",
		slog.Int("max_conns", s.maxConns), slog.Int("max_conns_per_ip", s.opts.MaxConnsPerIP),
		slog.Duration("header_timeout", s.opts.HeaderTimeout), slog.Duration("read_timeout", s.opts.ReadTimeout),
		slog.Duration("store_timeout", s.opts.StoreTimeout), slog.Int64("store_min_rate", s.opts.StoreMinRate))
}
