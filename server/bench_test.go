package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
)

// Requests per second of the real handlers against a bare fasthttp handler
// returning the same bytes, in the same run (report the ratio):
//
//	go test -run '^$' -bench 'Poll|Chunk' -benchtime 2s ./server

func benchServe(b *testing.B, h fasthttp.RequestHandler) *fasthttp.HostClient {
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown() })
	return &fasthttp.HostClient{Addr: "x", Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConns: 64}
}

func benchGet(b *testing.B, c *fasthttp.HostClient, path, tok string, wantBody int) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.SetRequestURI("http://x" + path)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 || len(resp.Body()) != wantBody {
				b.Fatalf("%v %d %d", err, resp.StatusCode(), len(resp.Body()))
			}
		}
	})
}

type benchEnv struct {
	c     *fasthttp.HostClient
	tok   string
	head  uint64
	chunk snapshot.ChunkRef
	poll  []byte // the up-to-date answer
	raw   []byte // the chunk's bytes
}

func newBenchEnv(b *testing.B) *benchEnv {
	ctx := context.Background()
	store, err := fsstore.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	secret := []byte("bench-chunk-secret")
	bo := snapshot.DefaultBuildOptions()
	bo.Org, bo.User, bo.Secret = "acme", "alice", secret
	res, _, err := diff.BuildVersion(ctx, store, bo, gen.NewSource(gen.Dataset(gen.Options{Size: 8 << 20, Seed: 1})))
	if err != nil {
		b.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Store, opts.JWTSecret, opts.ChunkSecret = store, testSecret, secret
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.updateOrgSettings(ctx, "acme", settingsUpdate{OfflineMode: ptr(true)}); err != nil {
		b.Fatal(err)
	}
	e := &benchEnv{c: benchServe(b, s.Handler()), head: 1, chunk: res.Manifest.Chunks[3]}
	e.tok, _ = MintToken(testSecret, Claims{Org: "acme", User: "alice"}, time.Hour)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	for _, p := range []string{"/v1/sync?from=1", "/v1/chunks/" + e.chunk.ID.String()} {
		req.SetRequestURI("http://x" + p)
		req.Header.Set("Authorization", "Bearer "+e.tok)
		if err := e.c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			b.Fatalf("%s: %v %d %s", p, err, resp.StatusCode(), resp.Body())
		}
		if e.poll == nil {
			e.poll = append([]byte(nil), resp.Body()...)
		} else {
			e.raw = append([]byte(nil), resp.Body()...)
		}
	}
	return e
}

func bare(body []byte, ct string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType(ct)
		ctx.SetBody(body)
	}
}

func BenchmarkPoll(b *testing.B) {
	e := newBenchEnv(b)
	b.Run("bare", func(b *testing.B) {
		benchGet(b, benchServe(b, bare(e.poll, "application/json")), "/v1/sync?from=1", "", len(e.poll))
	})
	b.Run("deltasync", func(b *testing.B) { benchGet(b, e.c, "/v1/sync?from=1", e.tok, len(e.poll)) })
}

func BenchmarkChunk(b *testing.B) {
	e := newBenchEnv(b)
	path := fmt.Sprintf("/v1/chunks/%s", e.chunk.ID)
	b.Run("bare", func(b *testing.B) {
		benchGet(b, benchServe(b, bare(e.raw, "application/octet-stream")), path, "", len(e.raw))
	})
	b.Run("deltasync", func(b *testing.B) { benchGet(b, e.c, path, e.tok, len(e.raw)) })
}
func ptr[T any](v T) *T { return &v }
