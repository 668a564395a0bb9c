package server

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/semaphore"

	"github.com/deltasync/deltasync/wire"
)

// Streamed zstd bodies (blob uploads, data sets) are decoded as they
// arrive, and a streaming decoder allocates its window up front from the
// frame header: a 13-byte body may claim 64 MiB. Each streamed body takes
// the smallest window class that holds its first frame's window, and the
// classes' memory held by the uploads decoding at once is bounded by
// Options.MaxDecodeMemory: an upload over it waits (decodeMemoryWait) for
// another to finish, then is answered 503 (with Retry-After, as every
// 503). A later frame of the same body with a bigger window than its class
// is refused (400): encoders keep one window for a stream. (Bodies read
// into memory do not need this: decodeAll decodes them into a buffer of
// their decoded size.)

// windowClass is a size of streaming decoder: the largest window it takes,
// and a pool of decoders of that size (their memory stays allocated
// between streams).
type windowClass struct {
	window uint64
	pool   sync.Pool
}

var windowClasses = [...]*windowClass{{window: 1 << 20}, {window: 8 << 20}, {window: streamWindowMax}}

// cost is the memory a decoder of the class holds while it decodes: the
// window's ring (window plus two blocks) and its block buffers.
func (c *windowClass) cost() int64 { return int64(c.window) + 4*maxZstdBlock }

// classFor gives the class of a frame's window, nil past the largest.
func classFor(window uint64) *windowClass {
	for _, c := range windowClasses {
		if window <= c.window {
			return c
		}
	}
	return nil
}

// decodeMemoryWait is how long a streamed body waits for decoder memory.
const decodeMemoryWait = 5 * time.Second

// decoderMemory is the budget of streaming decoders' memory.
type decoderMemory struct {
	sem     *semaphore.Weighted
	max     int64
	wait    time.Duration
	inUse   atomic.Int64
	refused prometheus.Counter
}

func newDecoderMemory(max int64, reg prometheus.Registerer) *decoderMemory {
	m := &decoderMemory{sem: semaphore.NewWeighted(max), max: max, wait: decodeMemoryWait,
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "deltasync_decode_memory_refused_total",
			Help: "Compressed uploads answered 503 because the decoder memory (--max-decode-memory) stayed taken.",
		})}
	reg.MustRegister(m.refused, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "deltasync_decode_memory_bytes",
		Help: "Memory held by the zstd decoders of the compressed uploads decoding now (at most --max-decode-memory).",
	}, func() float64 { return float64(m.inUse.Load()) }))
	return m
}

// frameWindow reads the first frame header of src and tells its window
// (the content size for a single-segment frame) and the bytes read, which
// the decoder must see first. A header that does not decode gives window
// 0: the decoder then reports what is wrong.
func frameWindow(src io.Reader) (uint64, []byte, error) {
	head := make([]byte, zstd.HeaderMaxSize)
	n, err := io.ReadFull(src, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return 0, nil, err
	}
	head = head[:n]
	var h zstd.Header
	if h.Decode(head) != nil || h.Skippable {
		return 0, head, nil
	}
	if h.SingleSegment {
		return h.FrameContentSize, head, nil
	}
	return h.WindowSize, head, nil
}

// acquire reserves the memory of a decoder of class c, waiting up to
// m.wait while other streams hold it. It fails with 503 when the wait ends
// (or ctx does), and with 400 when the class alone is more than the budget.
func (m *decoderMemory) acquire(ctx context.Context, c *windowClass) (release func(), err error) {
	cost := c.cost()
	if cost > m.max {
		return nil, badRequest("a zstd window of %d bytes needs more decoder memory than this server allows (%d bytes); compress with a smaller window", c.window, m.max)
	}
	wctx, cancel := context.WithTimeout(ctx, m.wait)
	defer cancel()
	if err := m.sem.Acquire(wctx, cost); err != nil {
		m.refused.Inc()
		return nil, &httpError{Status: fasthttp.StatusServiceUnavailable, Code: wire.CodeUnavailable, Err: err,
			Message: fmt.Sprintf("the server is decoding too many compressed uploads (all %d bytes of its decoder memory are in use); retry", m.max)}
	}
	m.inUse.Add(cost)
	var once sync.Once
	return func() {
		once.Do(func() {
			m.inUse.Add(-cost)
			m.sem.Release(cost)
		})
	}, nil
}
