package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Server is the deltasync HTTP service. It keeps no state of its own beyond
// caches: every replica on one store answers alike.
type Server struct {
	opts     Options
	store    snapshot.Store
	log      *slog.Logger
	verifier *verifier
	router   router
	metrics  *metrics
	settings *settingsCache
	zdec     *zstd.Decoder // shared; DecodeAll is safe for concurrent use
	// decodeMem bounds the streaming decoders' memory (decodemem.go).
	decodeMem *decoderMemory
	// maxPatchBlobRefs bounds the distinct blobs one patch references:
	// defaultMaxPatchBlobRefs, lowered by tests.
	maxPatchBlobRefs int
	http             *fasthttp.Server

	// baseCtx parents every Request.Ctx; it is cancelled when a shutdown
	// runs out of time (or after it completed), never when it starts.
	baseCtx    context.Context
	cancelBase context.CancelFunc
	// stopping closes when Shutdown starts, for long polls to return early.
	stopping     chan struct{}
	stoppingOnce sync.Once

	reqIDPrefix string
	reqIDSeq    atomic.Uint64

	secretState
	manifests *manifestCache
	heads     *headCache
	chunks    *chunkCache
	headRefs  headRefs     // blobs_read.go
	limiter   *userLimiter // nil: no limit
	packs     userSlots    // delta packs being sent, per user (sync.go)
	decoders  userSlots    // compressed uploads decoding, per user (body.go)
	replays   userSlots    // patches being applied, per user (patches.go)

	guards   *guardMetrics
	maxConns int          // Options.MaxConns, or the default derived from RLIMIT_NOFILE
	peers    *peerWatcher // notices clients leaving mid-request (lifecycle)

	backend  *backendMetrics // admin patches, consumers, webhooks, validation
	orgFeeds *orgFeeds       // per-org feed long polls wait here (orgfeedhub.go)
	// orgFeedReads shares the reads of an org's feed long polls (orgfeed.go).
	orgFeedReads singleflight.Group
	hooks        *http.Client   // calls orgs' backends (hooks.go)
	workerOnce   sync.Once      // starts the feed worker (feedworker.go)
	workerDone   sync.WaitGroup // Shutdown waits for it

	hub       *hub     // long polls wait here (hub.go)
	watcher   *watcher // started by the first long poll (watcher.go)
	watchOnce sync.Once
	// Reads shared by concurrent requests: a user's head for long polls
	// (at most maxPollHeadReads at once, headSlots), an org's settings.
	headReads     sharedReads
	headSlots     chan struct{}
	settingsLoads singleflight.Group
}

// New builds a Server from opts (validated with opts.Validate).
func New(opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	v, err := newVerifier(&opts)
	if err != nil {
		return nil, err
	}
	zdec, err := newBodyDecoder()
	if err != nil {
		return nil, fmt.Errorf("server: zstd decoder: %w", err)
	}
	var prefix [6]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		return nil, fmt.Errorf("server: request id prefix: %w", err)
	}
	m := newMetrics()
	guards := newGuardMetrics(m.reg)
	store, err := wrapStore(&opts, guards, m.reg)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{
		opts:             opts,
		store:            store,
		log:              opts.logger(),
		verifier:         v,
		metrics:          m,
		guards:           guards,
		backend:          newBackendMetrics(m.reg),
		maxConns:         opts.MaxConns,
		settings:         newSettingsCache(opts.SettingsTTL, opts.Now),
		zdec:             zdec,
		decodeMem:        newDecoderMemory(opts.MaxDecodeMemory, m.reg),
		maxPatchBlobRefs: defaultMaxPatchBlobRefs,
		packs:            userSlots{max: maxPacksPerUser},
		decoders:         userSlots{max: maxDecodersPerUser},
		replays:          userSlots{max: maxPatchesPerUser},
		stopping:         make(chan struct{}),
		reqIDPrefix:      hex.EncodeToString(prefix[:]),
		manifests:        newManifestCache(256),
		chunks:           &chunkCache{max: 64 << 20, items: map[chunkKey][]byte{}},
		limiter:          newUserLimiter(opts.RateLimit, opts.RateBurst),
		heads:            &headCache{ttl: opts.HeadCacheTTL, items: map[string]headEntry{}},
	}
	if s.maxConns == 0 {
		s.maxConns = DefaultMaxConns()
	}
	s.hub = newHub(opts.HubIdleGrace, m.reg)
	s.peers = newPeerWatcher()
	s.headSlots = make(chan struct{}, maxPollHeadReads)
	s.watcher = newWatcher(s.store, s.hub, opts.Watch, s.log, s.checkVersion)
	s.watcher.onSettings = s.settings.drop
	if bytes.Equal(opts.JWTSecret, []byte(DevJWTSecret)) {
		s.log.Warn("serving with the public development JWT secret: anyone can act as any user or admin")
	}
	s.orgFeeds = newOrgFeeds(opts.feedSettle(), m.reg)
	s.watcher.onEntry = s.orgFeeds.news
	s.hooks = hookClient(opts.Backend.HookTimeout, opts.Backend.HooksAllowPrivate)
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.routes()
	s.http = s.newHTTPServer()
	return s, nil
}

// newHTTPServer configures the fasthttp server.
func (s *Server) newHTTPServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               s.Handler(),
		ErrorHandler:          s.parseError,
		Name:                  "deltasync",
		NoDefaultServerHeader: true,
		// fasthttp's ReadTimeout covers the headers (a new connection's
		// wait for its first byte, then the headers from that byte);
		// headerReceived gives the body Options.ReadTimeout of its own.
		ReadTimeout: s.opts.HeaderTimeout,
		// The request line and headers must fit in the read buffer (431
		// past it: parseError), which every connection keeps.
		ReadBufferSize: s.maxHeaderBytes(),
		WriteTimeout:   s.opts.WriteTimeout,
		IdleTimeout:    s.opts.IdleTimeout,
		// Request bodies are streamed so that limits are enforced per route
		// (admission by Content-Length, then readBody/bodyReader) with a
		// 413; fasthttp's own limit would answer 400. With streaming,
		// fasthttp hands a body over its limit to the handler rather than
		// refuse it, so the limit only sizes its first read.
		StreamRequestBody:  true,
		MaxRequestBodySize: int(max(s.opts.MaxPatchBytes, s.opts.MaxDatasetBytes, s.opts.MaxBlobBytes)),
		// Admission before the body: see admission.go. Multipart forms
		// are not parsed ahead (fasthttp would read a whole one first).
		HeaderReceived:               s.headerReceived,
		ExpectHandler:                s.expectContinue,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		// A connection keeps no write buffer between answers (4 KB
		// each: a held long poll's connection has answered before), and
		// a new one no read buffer until its first byte (issue 10).
		// fasthttp then closes a silent new connection without an
		// answer; the listener's conn answers it 408 (conn.Read).
		ReduceMemoryUsage: true,
		Logger:            fasthttpLogger{s.log},
	}
}

// Serve answers requests on ln until Shutdown. It returns nil after Shutdown.
// Connections are accepted within the limits of Options (see listener),
// and running out of file descriptors never ends it.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("deltasync server listening", slog.String("addr", ln.Addr().String()))
	s.logGuards()
	s.startFeedWorker()
	silent := func() { s.metrics.observe("malformed", fasthttp.StatusRequestTimeout, 0, 0) }
	return s.http.Serve(newListener(ln, s.maxConns, s.opts.MaxConnsPerIP, s.log, s.guards, silent))
}

// ListenAndServe listens on opts.Addr and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("server: listen: %w", err)
	}
	return s.Serve(ln)
}

// Shutdown stops accepting connections and waits for in-flight requests to
// finish, or for ctx to end. Long polls return early. If ctx ends first,
// the store I/O of the remaining requests is cancelled and ctx's error is
// returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stoppingOnce.Do(func() { close(s.stopping) })
	err := s.http.ShutdownWithContext(ctx)
	s.workerDone.Wait() // it stops as soon as stopping closes
	s.peers.close()
	s.cancelBase()
	return err
}

// stoppingCh closes when a shutdown begins; handlers that wait (long polls)
// select on it to answer at once.
func (s *Server) stoppingCh() <-chan struct{} { return s.stopping }

// Handler returns the request handler, for serving on a custom fasthttp
// server or an in-memory listener in tests.
func (s *Server) Handler() fasthttp.RequestHandler { return s.serveHTTP }

// serveHTTP is the dispatcher every request goes through: request id,
// admission (routing, auth, the body's announced length: see admit), the
// handler, error answers, metrics and the access log.
func (s *Server) serveHTTP(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	s.metrics.inFlight.Inc()
	a, ok := admittedRequest(ctx) // by expectContinue, before the body was sent
	if !ok {
		a = &admitted{req: s.newRequest(ctx)}
	}
	req := a.req
	req.longPoll = longPollRequest(ctx) // see stack.go

	defer func() {
		if p := recover(); p != nil {
			s.log.LogAttrs(s.baseCtx, slog.LevelError, "handler panic",
				slog.String("request_id", req.ID), slog.String("route", req.Route), slog.Any("panic", p))
			writeErrorBody(ctx, fasthttp.StatusInternalServerError, wire.CodeInternal, "internal error")
		}
		req.deep(func() { s.finish(ctx, req, start) })
	}()

	if !ok {
		var r *route
		var err error
		req.deep(func() { r, err = s.admit(ctx, req) })
		if err != nil {
			req.deep(func() { s.writeError(ctx, req, err) })
			return
		}
		a.route = r
	}
	s.run(ctx, req, a.route)
}

// run runs the route's handler under a context of the request's own,
// cancelled if the client leaves while the handler works (see lifecycle).
func (s *Server) run(ctx *fasthttp.RequestCtx, req *request, r *route) {
	var life *lifecycle
	req.deep(func() {
		life = s.begin(ctx, req)
		if !hasBody(&ctx.Request.Header) {
			life.watch()
		}
	})
	defer req.deep(life.handlerDone)
	if err := r.h(ctx, req); err != nil {
		req.deep(func() { s.writeError(ctx, req, err) })
	}
}

// finish records metrics and writes the access log line.
func (s *Server) finish(ctx *fasthttp.RequestCtx, req *request, start time.Time) {
	d := time.Since(start)
	status := ctx.Response.StatusCode()
	// A streamed body is written after the handler returns (and must not
	// be touched here: Body() would read it all); setBodyStream counts its
	// bytes as they go out. The log shows its announced length, -1 if unknown.
	var n int64
	if ctx.Response.IsBodyStream() {
		n = int64(ctx.Response.Header.ContentLength())
		s.metrics.observe(req.Route, status, d, 0)
	} else {
		n = int64(len(ctx.Response.Body()))
		s.metrics.observe(req.Route, status, d, n)
	}
	s.metrics.inFlight.Dec()
	// Successful requests are counted by the metrics; their access log
	// lines are Debug, so that polling clients do not flood the log (and
	// a disabled level costs nothing). Errors are logged at Info.
	level := slog.LevelDebug
	if status >= 400 {
		level = slog.LevelInfo
	}
	if !s.log.Enabled(s.baseCtx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", req.ID),
		slog.String("method", string(ctx.Method())),
		slog.String("path", string(ctx.Path())),
		slog.String("route", req.Route),
		slog.Int("status", status),
		slog.Duration("duration", d),
		slog.Int64("bytes", n),
		slog.String("remote", ctx.RemoteIP().String()),
	}
	if req.Org != "" {
		attrs = append(attrs, slog.String("org", req.Org), slog.String("user", req.User))
	}
	s.log.LogAttrs(s.baseCtx, level, "request", attrs...)
}

// maxHeaderBytes is Options.MaxHeaderBytes or its default.
func (s *Server) maxHeaderBytes() int {
	if s.opts.MaxHeaderBytes == 0 {
		return DefaultMaxHeaderBytes
	}
	return int(s.opts.MaxHeaderBytes)
}

// parseError answers requests fasthttp could not parse, still in JSON.
func (s *Server) parseError(ctx *fasthttp.RequestCtx, err error) {
	status, code, msg := fasthttp.StatusBadRequest, wire.CodeBadRequest, "malformed request: "+withoutRequestEcho(err.Error())
	var ne net.Error
	var small *fasthttp.ErrSmallBuffer
	switch {
	case err == fasthttp.ErrBodyTooLarge:
		status, code = fasthttp.StatusRequestEntityTooLarge, wire.CodeTooLarge
	case errors.As(err, &small):
		status, code = fasthttp.StatusRequestHeaderFieldsTooLarge, wire.CodeTooLarge
		msg = fmt.Sprintf("request line and headers larger than %d bytes (the bearer token included)", s.maxHeaderBytes())
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		status, msg = fasthttp.StatusRequestTimeout, "no complete request within the time allowed"
	}
	writeErrorBody(ctx, status, code, msg)
	s.metrics.observe("malformed", status, 0, 0)
}

const (
	headerRequestID = "X-Request-ID"
	maxRequestIDLen = 64
)

// requestID keeps a client's X-Request-ID if, after dropping every byte
// outside [A-Za-z0-9._:-] and truncating to 64 bytes, anything is left (so
// log lines can never be forged or blown up), and makes one otherwise.
func (s *Server) requestID(in []byte) string {
	var b [maxRequestIDLen]byte
	n := 0
	for _, c := range in {
		if n == len(b) {
			break
		}
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-' {
			b[n] = c
			n++
		}
	}
	if n > 0 {
		return string(b[:n])
	}
	return s.reqIDPrefix + "-" + strconv.FormatUint(s.reqIDSeq.Add(1), 36)
}

// fasthttpLogger routes fasthttp's internal messages to slog.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn("fasthttp: " + withoutRequestEcho(fmt.Sprintf(format, args...)))
}

// withoutRequestEcho cuts from a fasthttp error the copy of the request it
// may carry ("buffer size=N, contents: ..."; a request line quoted with
// what follows it): the copy holds the headers, the bearer token among
// them (and whatever a proxy in front added), which must reach neither the
// client's answer nor the logs. The cause stays.
func withoutRequestEcho(msg string) string {
	if i := strings.Index(msg, ": buffer size="); i >= 0 {
		msg = msg[:i]
	}
	// A quoted copy shows its line ends escaped; a raw one as they are.
	for _, eol := range []string{`\r`, `\n`, "\r", "\n"} {
		if i := strings.Index(msg, eol); i >= 0 {
			msg = msg[:i] + " (rest of the request left out)"
		}
	}
	if len(msg) > 300 {
		msg = strings.ToValidUTF8(msg[:300], "") + "..."
	}
	return msg
}
