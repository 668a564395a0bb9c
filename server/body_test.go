package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/wire"
)

const testBodyLimit = 1000

type bodyEcho struct {
	N   int    `json:"n"`
	Sum string `json:"sum"`
}

func echoBody(b []byte) bodyEcho {
	h := sha256.Sum256(b)
	return bodyEcho{N: len(b), Sum: hex.EncodeToString(h[:])}
}

// bodyRoutes registers test routes reading their body in memory and as a
// stream, with a limit of testBodyLimit (and in memory 3x the patch
// limit).
func bodyRoutes(s *Server) {
	s.handle(fasthttp.MethodPost, "/test/body", "test_body", authNone, func(ctx *fasthttp.RequestCtx, _ *request) error {
		b, err := s.readBody(ctx, testBodyLimit)
		if err != nil {
			return err
		}
		writeJSON(ctx, 200, echoBody(b))
		return nil
	})
	s.handle(fasthttp.MethodPost, "/test/bigbody", "test_bigbody", authNone, func(ctx *fasthttp.RequestCtx, _ *request) error {
		b, err := s.readBody(ctx, 3*s.opts.MaxPatchBytes)
		if err != nil {
			return err
		}
		writeJSON(ctx, 200, echoBody(b))
		return nil
	})
	s.handle(fasthttp.MethodPost, "/test/stream", "test_stream", authNone, func(ctx *fasthttp.RequestCtx, req *request) error {
		rc, err := s.bodyReader(ctx, req, testBodyLimit)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		writeJSON(ctx, 200, echoBody(b))
		return nil
	})
}

func zstdBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// zstdStreamBytes compresses with the streaming encoder, which does not
// record the content size in the frame header.
func zstdStreamBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRequestBodies(t *testing.T) {
	e := newTestEnv(t, envConfig{
		opts:  func(o *Options) { o.MaxPatchBytes = 64 << 10 },
		setup: bodyRoutes,
	})
	exact := bytes.Repeat([]byte("x"), testBodyLimit)
	over := bytes.Repeat([]byte("x"), testBodyLimit+1)
	random := make([]byte, testBodyLimit)
	for i := range random {
		random[i] = byte(i*7919 + i>>3)
	}
	zExact := zstdBytes(t, random)
	bomb := zstdStreamBytes(t, make([]byte, 4<<20)) // 4 MiB of zeros in a few hundred bytes
	big := bytes.Repeat([]byte("0123456789abcdef"), 10<<10)
	zstdEnc := withHeader("Content-Encoding", "zstd")

	tests := []struct {
		name     string
		paths    []string
		body     []byte
		opts     []reqOpt
		want     int
		wantBody []byte // decoded body the handler must see, for 200
		wantCode string
	}{
		{"identity at limit", []string{"/test/body", "/test/stream"}, exact, nil, 200, exact, ""},
		{"identity over limit", []string{"/test/body", "/test/stream"}, over, nil, 413, nil, wire.CodeTooLarge},
		{"chunked at limit", []string{"/test/body", "/test/stream"}, nil, []reqOpt{withStream(exact)}, 200, exact, ""},
		{"chunked over limit", []string{"/test/body", "/test/stream"}, nil, []reqOpt{withStream(over)}, 413, nil, wire.CodeTooLarge},
		{"explicit identity", []string{"/test/body", "/test/stream"}, exact, []reqOpt{withHeader("Content-Encoding", "identity")}, 200, exact, ""},
		{"empty", []string{"/test/body", "/test/stream"}, []byte{}, nil, 200, []byte{}, ""},
		{"zstd", []string{"/test/body", "/test/stream", "/test/bigbody"}, zExact, []reqOpt{zstdEnc}, 200, random, ""},
		{"zstd chunked", []string{"/test/body", "/test/stream", "/test/bigbody"}, nil, []reqOpt{zstdEnc, withStream(zExact)}, 200, random, ""},
		{"zstd without content size", []string{"/test/body", "/test/stream"}, zstdStreamBytes(t, random), []reqOpt{zstdEnc}, 200, random, ""},
		{"zstd decodes over limit", []string{"/test/body", "/test/stream"}, zstdBytes(t, over), []reqOpt{zstdEnc}, 413, nil, wire.CodeTooLarge},
		{"zstd bomb", []string{"/test/body", "/test/stream", "/test/bigbody"}, bomb, []reqOpt{zstdEnc}, 413, nil, wire.CodeTooLarge},
		{"zstd truncated", []string{"/test/body", "/test/stream", "/test/bigbody"}, zExact[:len(zExact)/2], []reqOpt{zstdEnc}, 400, nil, wire.CodeBadRequest},
		{"zstd corrupt", []string{"/test/body", "/test/stream", "/test/bigbody"}, append([]byte{0x28, 0xb5, 0x2f, 0xfd}, bytes.Repeat([]byte{0xff}, 64)...), []reqOpt{zstdEnc}, 400, nil, wire.CodeBadRequest},
		{"plain data labelled zstd", []string{"/test/body", "/test/stream"}, []byte(`{"ops":[]}`), []reqOpt{zstdEnc}, 400, nil, wire.CodeBadRequest},
		{"gzip unsupported", []string{"/test/body", "/test/stream"}, exact, []reqOpt{withHeader("Content-Encoding", "gzip")}, 415, nil, wire.CodeBadRequest},
		{"big zstd over patch limit", []string{"/test/bigbody"}, zstdBytes(t, big), []reqOpt{zstdEnc}, 200, big, ""},
	}
	for _, tc := range tests {
		for _, path := range tc.paths {
			t.Run(tc.name+path, func(t *testing.T) {
				r := e.do("POST", path, tc.body, tc.opts...)
				if r.status != tc.want {
					t.Fatalf("status = %d, want %d (%s)", r.status, tc.want, r.body)
				}
				if tc.want != 200 {
					if got := r.errBody(t).Code; got != tc.wantCode {
						t.Errorf("code = %q, want %q", got, tc.wantCode)
					}
					return
				}
				var got bodyEcho
				if err := json.Unmarshal(r.body, &got); err != nil {
					t.Fatal(err)
				}
				if want := echoBody(tc.wantBody); got != want {
					t.Errorf("handler saw %+v, want %+v", got, want)
				}
			})
		}
	}
	// The connection stays usable after rejected bodies.
	if r := e.do("POST", "/test/body", exact); r.status != 200 {
		t.Errorf("after rejections: status %d", r.status)
	}
}

func TestDecodeJSON(t *testing.T) {
	type T struct {
		A int    `json:"a"`
		B string `json:"b"`
	}
	tests := []struct {
		in      string
		want    T
		wantErr bool
	}{
		{`{"a":1,"b":"x"}`, T{1, "x"}, false},
		{" {\"a\":2}\n", T{A: 2}, false},
		{`{"a":1,"c":2}`, T{}, true},
		{`{"a":"1"}`, T{}, true},
		{`{"a":1}{"a":2}`, T{}, true},
		{`{"a":1} x`, T{}, true},
		{``, T{}, true},
		{`{`, T{}, true},
	}
	for _, tc := range tests {
		var got T
		err := decodeJSON([]byte(tc.in), &got)
		if (err != nil) != tc.wantErr {
			t.Errorf("decodeJSON(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err != nil {
			if he := classify(err); he.Status != 400 || !strings.HasPrefix(he.Message, "") {
				t.Errorf("decodeJSON(%q) status %d, want 400", tc.in, he.Status)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("decodeJSON(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// windowFrame is a zstd frame whose header claims a window of the given
// size (a power of two, 1 KiB..2 GiB) and no content size, holding b in
// one raw block: what a hostile client sends to make a decoder reserve the
// window.
func windowFrame(window uint64, b []byte) []byte {
	f := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte(bits.Len64(window)-1-10) << 3}
	h := uint32(len(b))<<3 | 1 // last, raw
	return append(append(f, byte(h), byte(h>>8), byte(h>>16)), b...)
}

// TestSmallBodyCannotClaimABigWindow: a body read into memory (patches,
// admin JSON) is decoded into a buffer sized by what it decodes to, never
// by the window its frame header claims: a 13-byte body claiming a 64 MiB
// window made the server allocate 64 MiB per request.
func TestSmallBodyCannotClaimABigWindow(t *testing.T) {
	e := newTestEnv(t, envConfig{setup: bodyRoutes})
	body := windowFrame(64<<20, []byte("{}"))
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for _, path := range []string{"/test/body", "/test/bigbody"} {
		r := e.do("POST", path, body, withHeader("Content-Encoding", "zstd"))
		if r.status != 200 {
			t.Fatalf("%s: status %d (%s)", path, r.status, r.body)
		}
	}
	runtime.ReadMemStats(&m1)
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 16<<20 {
		t.Errorf("two 13-byte bodies claiming a 64 MiB window allocated %d MiB", alloc>>20)
	}
	// Past the largest window any decoder here takes: refused unread.
	r := e.do("POST", "/test/body", windowFrame(128<<20, []byte("{}")), withHeader("Content-Encoding", "zstd"))
	if r.status != 400 || !strings.Contains(string(r.body), "window") {
		t.Errorf("128 MiB window: status %d (%s), want 400 naming the window", r.status, r.body)
	}
}

// stallUpload opens a streamed zstd upload to /test/stream whose first
// frame claims window and sends its first bytes only: a client holding a
// decoder as long as it likes. Closing the answer ends the upload.
func stallUpload(t *testing.T, e *testEnv, window uint64) net.Conn {
	return stallRequest(t, e, "POST /test/stream", window, nil)
}

// stallRequest sends request line, headers and the first bytes of a
// chunked zstd body whose frame claims window, and no more.
func stallRequest(t *testing.T, e *testEnv, line string, window uint64, headers map[string]string) net.Conn {
	t.Helper()
	c, err := e.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	first := windowFrame(window, bytes.Repeat([]byte("x"), 100))[:6+3+20] // header, block header, some of the block
	var h strings.Builder
	for k, v := range headers {
		fmt.Fprintf(&h, "%s: %s\r\n", k, v)
	}
	fmt.Fprintf(c, "%s HTTP/1.1\r\nHost: deltasync.test\r\nContent-Encoding: zstd\r\nTransfer-Encoding: chunked\r\n%s\r\n%x\r\n%s\r\n", line, h.String(), len(first), first)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitDecodeMemory waits until the server's decoder memory in use is want.
func waitDecodeMemory(t *testing.T, s *Server, want int64) {
	t.Helper()
	for i := 0; s.decodeMem.inUse.Load() != want; i++ {
		if i == 1000 {
			t.Fatalf("decoder memory in use %d, want %d", s.decodeMem.inUse.Load(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamedUploadsShareTheDecoderMemory: a streaming zstd decoder holds
// its frame's window for as long as its upload lasts, so the decoders of
// the uploads decoding at once share a budget (MaxDecodeMemory): past it an
// upload waits, then gets 503 with Retry-After, and goes through once
// another upload ends. A window whose decoder alone is over the budget is
// refused at once.
func TestStreamedUploadsShareTheDecoderMemory(t *testing.T) {
	small := windowClasses[0].cost() // a 1 MiB window's decoder
	var s *Server
	e := newTestEnv(t, envConfig{
		opts: func(o *Options) { o.MaxDecodeMemory = 2*small + small/2 },
		setup: func(srv *Server) {
			s = srv
			bodyRoutes(srv)
			srv.decodeMem.wait = 100 * time.Millisecond
		},
	})
	zstdEnc := withHeader("Content-Encoding", "zstd")
	body := windowFrame(1<<20, []byte("{}"))
	first := stallUpload(t, e, 1<<20)
	stallUpload(t, e, 1<<20)
	waitDecodeMemory(t, s, 2*small)

	r := e.do("POST", "/test/stream", body, zstdEnc)
	if r.status != 503 || r.errBody(t).Code != wire.CodeUnavailable || r.header["Retry-After"] == "" {
		t.Fatalf("upload past the decoder memory: status %d, Retry-After %q (%s), want 503 with Retry-After", r.status, r.header["Retry-After"], r.body)
	}
	// Bodies read into memory do not take decoder memory.
	if r := e.do("POST", "/test/body", body, zstdEnc); r.status != 200 {
		t.Errorf("in-memory body while the decoders are taken: status %d (%s)", r.status, r.body)
	}
	first.Close()
	waitDecodeMemory(t, s, small)
	if r := e.do("POST", "/test/stream", body, zstdEnc); r.status != 200 {
		t.Errorf("upload after another ended: status %d (%s)", r.status, r.body)
	}
	waitDecodeMemory(t, s, small)
	r = e.do("POST", "/test/stream", windowFrame(8<<20, []byte("{}")), zstdEnc)
	if r.status != 400 || !strings.Contains(r.errBody(t).Message, "smaller window") {
		t.Errorf("window whose decoder is over the budget: status %d (%s), want 400", r.status, r.body)
	}
	if got := testutil.ToFloat64(s.decodeMem.refused); got != 1 {
		t.Errorf("deltasync_decode_memory_refused_total = %v, want 1", got)
	}
}

// FuzzDecodeAll: a zstd body read into memory decodes to exactly what an
// unbounded decoder gives when that fits the limit, is 413 when that is
// longer than the limit, and 400 when it does not decode; never anything
// else, whatever window or content size its frames claim.
func FuzzDecodeAll(f *testing.F) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc.EncodeAll([]byte(`{"ops":[]}`), nil))
	f.Add(enc.EncodeAll(bytes.Repeat([]byte("ab"), 800), nil))
	f.Add(windowFrame(64<<20, []byte("{}")))
	f.Add(windowFrame(1<<10, bytes.Repeat([]byte("x"), 1500)))
	var buf bytes.Buffer
	w, _ := zstd.NewWriter(&buf)
	w.Write(bytes.Repeat([]byte("z"), 5000))
	w.Close()
	f.Add(buf.Bytes())
	zdec, err := newBodyDecoder()
	if err != nil {
		f.Fatal(err)
	}
	// The reference takes every window the server does; a body it finds
	// over its memory (64 MiB) is over the limit too.
	ref, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(streamWindowMax), zstd.WithDecoderConcurrency(1))
	if err != nil {
		f.Fatal(err)
	}
	s := &Server{zdec: zdec}
	const limit = 1000
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := s.decodeAll(raw, limit)
		want, rerr := ref.DecodeAll(raw, nil)
		if errors.Is(rerr, zstd.ErrDecoderSizeExceeded) {
			want, rerr = make([]byte, limit+1), nil
		}
		var he *httpError
		switch {
		case err == nil:
			if rerr != nil || !bytes.Equal(out, want) {
				t.Fatalf("decoded %d bytes; an unbounded decoder gives %d (%v)", len(out), len(want), rerr)
			}
		case !errors.As(err, &he) || (he.Status != 400 && he.Status != 413):
			t.Fatalf("error %v, want a 400 or 413", err)
		case rerr == nil && len(want) <= limit:
			t.Fatalf("refused (%v) a body that decodes to %d bytes", err, len(want))
		case rerr == nil && he.Status != 413:
			t.Fatalf("a body that decodes to %d bytes is %d, want 413", len(want), he.Status)
		}
	})
}
