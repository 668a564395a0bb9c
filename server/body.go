package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/wire"
)

// streamWindowMax caps the zstd window of a streamed body: the memory a
// client can make one decoder allocate, whatever the body limit.
const streamWindowMax = 64 << 20

// encoding is a request's Content-Encoding.
type encoding int

const (
	encIdentity encoding = iota
	encZstd
)

func requestEncoding(ctx *fasthttp.RequestCtx) (encoding, error) {
	return headerEncoding(&ctx.Request.Header)
}

func headerEncoding(h *fasthttp.RequestHeader) (encoding, error) {
	v := bytes.TrimSpace(h.Peek(fasthttp.HeaderContentEncoding))
	switch {
	case len(v) == 0, bytes.EqualFold(v, []byte("identity")):
		return encIdentity, nil
	case bytes.EqualFold(v, []byte("zstd")):
		return encZstd, nil
	}
	return 0, errorf(fasthttp.StatusUnsupportedMediaType, wire.CodeBadRequest,
		"unsupported Content-Encoding %q (use zstd or none)", v)
}

// wireLimit bounds the bytes on the wire of a body whose decoded size is
// bounded by limit: zstd can expand incompressible data slightly (3 bytes
// per 128 KiB block plus the frame header).
func wireLimit(enc encoding, limit int64) int64 {
	if enc == encZstd {
		return limit + limit>>10 + 64
	}
	return limit
}

// readBody reads the whole request body into memory, decoding
// "Content-Encoding: zstd", and enforces limit on the decoded size (and a
// matching bound on the wire size). Over the limit it fails with 413
// too_large, as soon as Content-Length or the bytes read show it; a
// truncated or corrupt zstd body fails with 400, an unknown encoding with
// 415. Use it for bodies up to a few MiB (patches, admin JSON); use
// bodyReader to stream larger ones.
func (s *Server) readBody(ctx *fasthttp.RequestCtx, limit int64) ([]byte, error) {
	enc, err := requestEncoding(ctx)
	if err != nil {
		return nil, err
	}
	if enc == encZstd && limit > s.opts.MaxPatchBytes {
		// The shared decoder's memory cap is the patch limit; bigger
		// limits go through a streaming decoder.
		rc, err := s.bodyReader(ctx, limit)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := readAllBody(rc, ctx.Request.Header.ContentLength(), limit)
		if err == nil {
			watchAfterBody(ctx)
		}
		return b, err
	}
	wl := wireLimit(enc, limit)
	if cl := ctx.Request.Header.ContentLength(); int64(cl) > wl {
		return nil, tooLarge(limit)
	}
	var raw []byte
	if st := ctx.RequestBodyStream(); st != nil {
		raw, err = readAllBody(&limitReader{r: st, n: wl, limit: limit}, ctx.Request.Header.ContentLength(), wl)
		if err != nil {
			return nil, err
		}
	} else {
		raw = ctx.PostBody()
		if int64(len(raw)) > wl {
			return nil, tooLarge(limit)
		}
	}
	watchAfterBody(ctx)
	if enc == encIdentity {
		return raw, nil
	}
	out, err := s.zdec.DecodeAll(raw, nil)
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
		// The shared decoder's memory is capped at the patch limit, and a
		// streaming encoder's window (8 MiB by default) may exceed it: a
		// streaming decoder finds out whether the body is too large,
		// not zstd, or fine after all.
		return s.decodeStreamed(raw, limit)
	}
	if err != nil {
		return nil, zstdError(err, limit, raw, uint64(s.opts.MaxPatchBytes))
	}
	if int64(len(out)) > limit {
		return nil, tooLarge(limit)
	}
	return out, nil
}

// decodeStreamed decodes a zstd body held in memory with a streaming
// decoder, up to limit decoded bytes.
func (s *Server) decodeStreamed(raw []byte, limit int64) ([]byte, error) {
	rc, err := s.zstdReader(bytes.NewReader(raw), limit)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return readAllBody(rc, -1, limit)
}

// zstdError maps a failure to decode a zstd body: 413 when the body
// decodes to more than limit bytes, or its frame header says it will; 400
// for anything else, such as bytes that are not zstd, a truncated frame, or
// a frame asking for a window bigger than maxWindow (the decoder's memory
// cap; no well-behaved client needs one). head is the start of the body, for
// the frame header.
func zstdError(err error, limit int64, head []byte, maxWindow uint64) error {
	if !errors.Is(err, zstd.ErrDecoderSizeExceeded) && !errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return &httpError{Status: fasthttp.StatusBadRequest, Code: wire.CodeBadRequest,
			Message: "corrupt or truncated zstd body: " + err.Error(), Err: err}
	}
	var h zstd.Header
	if h.Decode(head) == nil && !h.Skippable {
		if h.HasFCS && h.FrameContentSize > uint64(limit) {
			return tooLarge(limit)
		}
		window := h.WindowSize
		if h.SingleSegment {
			window = h.FrameContentSize
		}
		if window > maxWindow {
			return &httpError{Status: fasthttp.StatusBadRequest, Code: wire.CodeBadRequest, Err: err,
				Message: fmt.Sprintf("invalid zstd body: its frame asks for a %d-byte window, over the %d bytes this server decodes with", window, maxWindow)}
		}
	}
	// A sound header, so the decoded bytes outgrew the decoder's limit.
	return tooLarge(limit)
}

// readAllBody reads r to the end; sizeHint (a Content-Length, -1 if
// unknown) presizes the buffer, up to max.
func readAllBody(r io.Reader, sizeHint int, max int64) ([]byte, error) {
	n := int64(sizeHint)
	if n < 0 || n > max {
		n = min(max, 64<<10)
	}
	buf := bytes.NewBuffer(make([]byte, 0, n+1))
	if _, err := buf.ReadFrom(r); err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return nil, he
		}
		return nil, &httpError{Status: fasthttp.StatusBadRequest, Code: wire.CodeBadRequest,
			Message: "reading request body: " + err.Error(), Err: err}
	}
	return buf.Bytes(), nil
}

// bodyReader opens the request body as a stream for large uploads (NDJSON
// data sets), decoding "Content-Encoding: zstd" on the fly. Reading more
// than limit decoded bytes fails with a 413 *httpError; a corrupt zstd
// stream or a broken connection fails with a 400 one, so a handler can
// return a read error as it is. Close it when done.
func (s *Server) bodyReader(ctx *fasthttp.RequestCtx, limit int64) (io.ReadCloser, error) {
	enc, err := requestEncoding(ctx)
	if err != nil {
		return nil, err
	}
	wl := wireLimit(enc, limit)
	if cl := ctx.Request.Header.ContentLength(); int64(cl) > wl {
		return nil, tooLarge(limit)
	}
	var src io.Reader
	if st := ctx.RequestBodyStream(); st != nil {
		src = st
	} else {
		src = bytes.NewReader(ctx.PostBody())
	}
	src = &limitReader{r: src, n: wl, limit: limit}
	if enc == encIdentity {
		return io.NopCloser(src), nil
	}
	return s.zstdReader(src, limit)
}

// zstdReader decodes the zstd stream src, failing with a 413 *httpError
// past limit decoded bytes and a 400 one when src is not valid zstd.
func (s *Server) zstdReader(src io.Reader, limit int64) (io.ReadCloser, error) {
	head := &headReader{r: src}
	dec, _ := streamDecoders.Get().(*zstd.Decoder)
	var err error
	if dec == nil {
		dec, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxMemory(streamWindowMax))
		if err != nil {
			return nil, fmt.Errorf("zstd decoder: %w", err)
		}
	}
	if err := dec.Reset(head); err != nil {
		streamDecoders.Put(dec)
		return nil, zstdError(err, limit, head.b, streamWindowMax)
	}
	return &zstdBody{dec: dec, out: limitReader{r: dec, n: limit, limit: limit}, limit: limit, head: head}, nil
}

// streamDecoders pools single-goroutine streaming decoders; unlike the
// shared DecodeAll decoder they hold per-stream state.
var streamDecoders sync.Pool

type zstdBody struct {
	dec   *zstd.Decoder
	out   limitReader
	limit int64
	head  *headReader
}

func (z *zstdBody) Read(p []byte) (int, error) {
	if z.dec == nil {
		return 0, errors.New("read after close")
	}
	n, err := z.out.Read(p)
	if err != nil && err != io.EOF {
		var he *httpError
		if !errors.As(err, &he) {
			err = zstdError(err, z.limit, z.head.b, streamWindowMax)
		}
	}
	return n, err
}

func (z *zstdBody) Close() error {
	if z.dec != nil {
		_ = z.dec.Reset(nil) // releases src; the decoder is reusable
		streamDecoders.Put(z.dec)
		z.dec = nil
	}
	return nil
}

// headReader keeps the first bytes read through it: the zstd frame header,
// for zstdError.
type headReader struct {
	r io.Reader
	b []byte
}

func (h *headReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if k := min(n, zstd.HeaderMaxSize-len(h.b)); k > 0 {
		h.b = append(h.b, p[:k]...)
	}
	return n, err
}

// limitReader reads at most n bytes from r and fails with a 413 (naming
// limit, the caller-visible limit) if there are more.
type limitReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		return 0, tooLarge(l.limit)
	}
	if int64(len(p)) > l.n+1 {
		p = p[:l.n+1]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n + int(l.n), tooLarge(l.limit)
	}
	return n, err
}

// decodeJSON decodes exactly one JSON value from body into v, rejecting
// unknown fields and trailing data, with a 400 describing the problem.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if err == io.EOF {
			return badRequest("empty body, expected JSON")
		}
		return &httpError{Status: fasthttp.StatusBadRequest, Code: wire.CodeBadRequest, Message: "invalid JSON: " + err.Error(), Err: err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("invalid JSON: trailing data after the value")
	}
	return nil
}
