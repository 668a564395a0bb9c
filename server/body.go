package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

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
	return s.decodeAll(raw, limit)
}

// newBodyDecoder makes the shared decoder of readBody (decodeAll): it
// decodes into the caller's buffer and stops at its capacity, so its
// memory is the buffer's whatever window a frame claims (up to
// streamWindowMax, the largest any decoder here takes); streamed bodies
// (bodyReader) use their own decoders.
func newBodyDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderMaxMemory(streamWindowMax),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderConcurrency(0))
}

// decodeAll decodes a zstd body held in memory, up to limit decoded bytes,
// into a buffer sized by what it decodes to: the shared decoder writes
// into the output itself (no window buffer) and stops at the buffer's
// capacity, so a frame claiming a large window costs nothing and a bomb
// at most the limit. The buffer starts at the frame's content size, or a
// guess from the body's size; a decode that fails in it is tried once more
// in the limit plus one block, where a body decoding past the limit ends
// a block past it (413) and any other failure is the body's (400).
func (s *Server) decodeAll(raw []byte, limit int64) ([]byte, error) {
	final := limit + maxZstdBlock
	size := min(final, max(int64(len(raw))*4, 64<<10))
	var h zstd.Header
	if h.Decode(raw) == nil && h.HasFCS {
		if h.FrameContentSize > uint64(limit) {
			return nil, tooLarge(limit)
		}
		size = max(int64(h.FrameContentSize), 1)
	}
	for {
		out, err := s.zdec.DecodeAll(raw, make([]byte, 0, size))
		switch {
		case int64(len(out)) > limit:
			return nil, tooLarge(limit)
		case err != nil && size < final:
			size = final
			continue
		case err != nil:
			return nil, zstdError(err, limit, raw, streamWindowMax)
		}
		return out, nil
	}
}

// maxZstdBlock is the most one zstd block decodes to (128 KiB), with the
// decoder's copy slack.
const maxZstdBlock = 128<<10 + 64

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
		return nil, bodyReadError(err)
	}
	return buf.Bytes(), nil
}

// bodyReadError is a failure to read a request body: the *httpError it
// carries (a limit), or a 400.
func bodyReadError(err error) error {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	return &httpError{Status: fasthttp.StatusBadRequest, Code: wire.CodeBadRequest,
		Message: "reading request body: " + err.Error(), Err: err}
}

// bodyReader opens the request body as a stream for large uploads (NDJSON
// data sets, blobs), decoding "Content-Encoding: zstd" on the fly with
// decoder memory from the server's budget (decodemem.go). Reading more
// than limit decoded bytes fails with a 413 *httpError; a corrupt zstd
// stream or a broken connection fails with a 400 one, so a handler can
// return a read error as it is. Close it when done.
func (s *Server) bodyReader(ctx *fasthttp.RequestCtx, req *request, limit int64) (io.ReadCloser, error) {
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
	if req.User == "" { // an admin's upload (a data set): trusted, unbounded
		return s.zstdReader(req.Ctx, src, limit)
	}
	release, err := s.decoders.claim(ctx, req, 5, "compressed uploads")
	if err != nil {
		return nil, err
	}
	rc, err := s.zstdReader(req.Ctx, src, limit)
	if err != nil {
		release()
		return nil, err
	}
	return &slotBody{ReadCloser: rc, release: release}, nil
}

// slotBody gives its user slot back when closed.
type slotBody struct {
	io.ReadCloser
	release func()
}

func (b *slotBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// zstdReader decodes the zstd stream src with a decoder of the class of
// its first frame's window, failing with a 413 *httpError past limit
// decoded bytes, a 400 one when src is not valid zstd, and a 503 one when
// the server's decoder memory stays taken (decodemem.go).
func (s *Server) zstdReader(ctx context.Context, src io.Reader, limit int64) (io.ReadCloser, error) {
	window, head, err := frameWindow(src)
	if err != nil {
		return nil, bodyReadError(err)
	}
	c := classFor(window)
	if c == nil {
		return nil, zstdError(zstd.ErrWindowSizeExceeded, limit, head, streamWindowMax)
	}
	release, err := s.decodeMem.acquire(ctx, c)
	if err != nil {
		return nil, err
	}
	dec, _ := c.pool.Get().(*zstd.Decoder)
	if dec == nil {
		dec, err = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(c.window),
			zstd.WithDecoderMaxMemory(streamWindowMax))
		if err != nil {
			release()
			return nil, fmt.Errorf("zstd decoder: %w", err)
		}
	}
	z := &zstdBody{dec: dec, class: c, release: release, limit: limit, head: head}
	if err := dec.Reset(io.MultiReader(bytes.NewReader(head), src)); err != nil {
		z.Close()
		return nil, zstdError(err, limit, head, c.window)
	}
	z.out = limitReader{r: dec, n: limit, limit: limit}
	return z, nil
}

// zstdBody is a streamed zstd body; Close returns its decoder to its
// class's pool and its memory to the budget.
type zstdBody struct {
	dec     *zstd.Decoder
	class   *windowClass
	release func()
	out     limitReader
	limit   int64
	head    []byte // the first frame's header, for errors
}

func (z *zstdBody) Read(p []byte) (int, error) {
	if z.dec == nil {
		return 0, errors.New("read after close")
	}
	n, err := z.out.Read(p)
	if err == nil || err == io.EOF {
		return n, err
	}
	var he *httpError
	switch {
	case errors.As(err, &he):
	case errors.Is(err, zstd.ErrWindowSizeExceeded):
		err = badRequest("invalid zstd body: a frame asks for a window over the %d bytes of the decoder its first frame's window took", z.class.window)
	default:
		err = zstdError(err, z.limit, z.head, z.class.window)
	}
	return n, err
}

func (z *zstdBody) Close() error {
	if z.dec != nil {
		_ = z.dec.Reset(nil) // releases src; the decoder is reusable
		z.class.pool.Put(z.dec)
		z.dec = nil
		z.release()
	}
	return nil
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
