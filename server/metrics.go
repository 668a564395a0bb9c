package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/deltasync/deltasync/snapshot"
)

// metrics are the Prometheus metrics of one Server, on a registry of its own
// (never the global one), so several servers in one process (tests, or an
// embedding app) do not collide.
type metrics struct {
	reg *prometheus.Registry

	requests  *prometheus.CounterVec   // route, code
	duration  *prometheus.HistogramVec // route
	bytesSent *prometheus.CounterVec   // route
	inFlight  prometheus.Gauge

	// Counters for the sync handlers to increment.
	chunksServed   prometheus.Counter
	patchesApplied prometheus.Counter
	conflicts      prometheus.Counter
	corrupt        *prometheus.CounterVec // kind
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_http_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "deltasync_http_request_duration_seconds",
			Help: "Time to handle a request (until the handler returns; streamed bodies are written after), by route.",
			// Up to two minutes: long polls wait up to LongPollMax.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"route"}),
		bytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_http_response_bytes_total",
			Help: "Response body bytes sent, by route.",
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "deltasync_http_requests_in_flight",
			Help: "Requests being handled now.",
		}),
		chunksServed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_chunks_served_total",
			Help: "Chunks sent to clients, in delta packs or one by one.",
		}),
		patchesApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_patches_applied_total",
			Help: "Patches replayed into a new version.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_conflicts_total",
			Help: "Conflicting edits resolved by an org's conflict policy.",
		}),
		corrupt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_corrupt_objects_total",
			Help: "Stored objects found damaged or missing when read (each find counts), by kind: manifest, pack, changes, other.",
		}, []string{"kind"}),
	}
	for _, k := range []string{"manifest", "pack", "changes", "other"} {
		m.corrupt.WithLabelValues(k) // present at 0, for alerts on any increase
	}
	m.reg.MustRegister(m.requests, m.duration, m.bytesSent, m.inFlight,
		m.chunksServed, m.patchesApplied, m.conflicts, m.corrupt,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe records one answered request. n < 0 means the size is unknown.
func (m *metrics) observe(route string, status int, d time.Duration, n int64) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
	if n > 0 {
		m.bytesSent.WithLabelValues(route).Add(float64(n))
	}
}

// noteCorrupt logs stored data that failed verification (or an object a
// version references that is missing) at ERROR, naming the object, and
// counts it. It reports whether err was such damage; other errors are left
// to the caller.
func (s *Server) noteCorrupt(req *request, err error) bool {
	if !errors.Is(err, snapshot.ErrCorrupt) {
		return false
	}
	var key string
	var oe *snapshot.ObjectError
	if errors.As(err, &oe) {
		key = oe.Key
	}
	s.metrics.corrupt.WithLabelValues(objectKind(key)).Inc()
	s.log.LogAttrs(context.Background(), slog.LevelError, "stored object failed verification",
		slog.String("request_id", req.ID), slog.String("org", req.Org), slog.String("user", req.User),
		slog.String("object", key), slog.Any("error", err))
	return true
}

// objectKind is the label of an object in deltasync_corrupt_objects_total.
func objectKind(key string) string {
	switch {
	case strings.HasSuffix(key, ".manifest"):
		return "manifest"
	case strings.HasSuffix(key, ".pack"):
		return "pack"
	case strings.HasSuffix(key, ".changes"):
		return "changes"
	}
	return "other"
}

// MetricsRegistry returns the server's Prometheus registry, for an embedding
// program to add its own collectors; they appear on /metrics.
func (s *Server) MetricsRegistry() *prometheus.Registry { return s.metrics.reg }

func (s *Server) metricsHandler() handlerFunc {
	h := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		Registry: s.metrics.reg, // also exports promhttp's own error counter
	}))
	return func(ctx *fasthttp.RequestCtx, _ *request) error {
		h(ctx)
		return nil
	}
}

// setBodyStream answers with a streamed body (size -1 if unknown) and counts
// the bytes as they are sent, which the dispatcher cannot do for streams:
// fasthttp writes them after the handler returned. Use it instead of
// ctx.SetBodyStream. If r is an io.Closer it is closed when done.
func (s *Server) setBodyStream(ctx *fasthttp.RequestCtx, req *request, r io.Reader, size int) {
	ctx.SetBodyStream(&countingReader{r: r, c: s.metrics.bytesSent.WithLabelValues(req.Route)}, size)
}

type countingReader struct {
	r io.Reader
	c prometheus.Counter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.c.Add(float64(n))
	}
	return n, err
}

func (c *countingReader) Close() error {
	if cl, ok := c.r.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}
