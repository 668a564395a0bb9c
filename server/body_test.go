package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
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
// stream, with a limit of testBodyLimit (and 3x the patch limit, to take
// readBody's streaming path for zstd).
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
	s.handle(fasthttp.MethodPost, "/test/stream", "test_stream", authNone, func(ctx *fasthttp.RequestCtx, _ *request) error {
		rc, err := s.bodyReader(ctx, testBodyLimit)
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
