// Package storemetrics wraps a snapshot.Store so that every call is counted
// and timed in Prometheus metrics: what the store bills for (requests by
// kind, bytes moved) and how it answers (outcome, latency). The server puts
// it right around the backend, inside the deadline wrapper, so that it
// counts the calls the store actually receives.
//
// Kinds follow S3's request classes: get (Get, GetRange), put (Put,
// PutIfAbsent, PutIfMatch), stat, list (List, ListAfter) and delete. A
// listing counts as one request; an S3 listing costs one request per 1,000
// keys, so deltasync_store_listed_objects_total tells how many pages the
// listings of a busy feed needed.
package storemetrics

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/deltasync/deltasync/snapshot"
)

// Kinds of request, the values of the op label.
const (
	OpGet    = "get"
	OpPut    = "put"
	OpStat   = "stat"
	OpList   = "list"
	OpDelete = "delete"
)

// Metrics are the collectors of a Store.
type Metrics struct {
	requests *prometheus.CounterVec   // op, outcome
	duration *prometheus.HistogramVec // op
	listed   prometheus.Counter
	read     prometheus.Counter
	written  prometheus.Counter
}

// NewMetrics makes the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "deltasync_store_requests_total",
			Help: "Store requests, by kind (get, put, stat, list, delete) and outcome (ok, not_found, exists, precondition, invalid, unavailable, canceled, error).",
		}, []string{"op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "deltasync_store_request_duration_seconds",
			Help:    "Time a store request took until the store answered (a get until its body opened; a listing includes its callbacks), by kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"op"}),
		listed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_store_listed_objects_total",
			Help: "Objects delivered by store listings (an S3 listing pages per 1,000).",
		}),
		read: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_store_read_bytes_total",
			Help: "Object bytes read from the store.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_store_written_bytes_total",
			Help: "Object bytes sent to the store (writes that failed included).",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.listed, m.read, m.written} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, op := range []string{OpGet, OpPut, OpStat, OpList, OpDelete} {
		m.requests.WithLabelValues(op, "ok") // present at 0
		m.duration.WithLabelValues(op)
	}
	return m, nil
}

// Store is a snapshot.Store whose calls are counted and timed.
type Store struct {
	snapshot.Store
	m *Metrics
}

var _ snapshot.Store = (*Store)(nil)

// New wraps s, recording into m.
func New(s snapshot.Store, m *Metrics) *Store { return &Store{Store: s, m: m} }

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() snapshot.Store { return s.Store }

// Outcome is the outcome label of a call's error.
func Outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, snapshot.ErrNotExist):
		return "not_found"
	case errors.Is(err, snapshot.ErrExist):
		return "exists"
	case errors.Is(err, snapshot.ErrPrecondition):
		return "precondition"
	case errors.Is(err, snapshot.ErrInvalid):
		return "invalid"
	case errors.Is(err, snapshot.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "error"
}

func (s *Store) done(op string, start time.Time, err error) {
	s.m.requests.WithLabelValues(op, Outcome(err)).Inc()
	s.m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Get implements snapshot.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
	start := time.Now()
	rc, info, err := s.Store.Get(ctx, key)
	s.done(OpGet, start, err)
	if err != nil {
		return nil, info, err
	}
	return &countingBody{rc: rc, c: s.m.read}, info, nil
}

// GetRange implements snapshot.Store.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := s.Store.GetRange(ctx, key, offset, length)
	s.done(OpGet, start, err)
	if err != nil {
		return nil, err
	}
	return &countingBody{rc: rc, c: s.m.read}, nil
}

// Put implements snapshot.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	start := time.Now()
	info, err := s.Store.Put(ctx, key, r, size)
	s.wrote(start, size, err)
	return info, err
}

// PutIfAbsent implements snapshot.Store.
func (s *Store) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	start := time.Now()
	info, err := s.Store.PutIfAbsent(ctx, key, r, size)
	s.wrote(start, size, err)
	return info, err
}

// PutIfMatch implements snapshot.Store.
func (s *Store) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (snapshot.ObjectInfo, error) {
	start := time.Now()
	info, err := s.Store.PutIfMatch(ctx, key, r, size, etag)
	s.wrote(start, size, err)
	return info, err
}

func (s *Store) wrote(start time.Time, size int64, err error) {
	s.done(OpPut, start, err)
	if size > 0 {
		s.m.written.Add(float64(size))
	}
}

// Stat implements snapshot.Store.
func (s *Store) Stat(ctx context.Context, key string) (snapshot.ObjectInfo, error) {
	start := time.Now()
	info, err := s.Store.Stat(ctx, key)
	s.done(OpStat, start, err)
	return info, err
}

// List implements snapshot.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(snapshot.ObjectInfo) error) error {
	start := time.Now()
	err := s.Store.List(ctx, prefix, s.counted(fn))
	s.done(OpList, start, err)
	return err
}

// ListAfter implements snapshot.Store.
func (s *Store) ListAfter(ctx context.Context, prefix, after string, fn func(snapshot.ObjectInfo) error) error {
	start := time.Now()
	err := s.Store.ListAfter(ctx, prefix, after, s.counted(fn))
	s.done(OpList, start, err)
	return err
}

func (s *Store) counted(fn func(snapshot.ObjectInfo) error) func(snapshot.ObjectInfo) error {
	return func(info snapshot.ObjectInfo) error {
		s.m.listed.Inc()
		return fn(info)
	}
}

// Delete implements snapshot.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := s.Store.Delete(ctx, key)
	s.done(OpDelete, start, err)
	return err
}

// countingBody counts the bytes read from an object's body.
type countingBody struct {
	rc io.ReadCloser
	c  prometheus.Counter
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.c.Add(float64(n))
	}
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }
