package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// maxChecksummedParts bounds a PATCH with an Upload-Checksum: it is held
// in memory until its checksum is verified, at most this many parts.
const maxChecksummedParts = 4

// patchBlobUpload handles PATCH /v1/blobs/uploads/{hex} (tus append).
func (s *Server) patchBlobUpload(ctx *fasthttp.RequestCtx, req *request) error {
	setTus(ctx)
	hexd := req.Param("hex")
	if err := wire.ValidBlobHex(hexd); err != nil {
		return badRequest("%v", err)
	}
	if ct, _, _ := strings.Cut(string(ctx.Request.Header.ContentType()), ";"); strings.TrimSpace(ct) != wire.ContentTypeOffset {
		return errorf(fasthttp.StatusUnsupportedMediaType, wire.CodeBadRequest, "a PATCH body must be %s", wire.ContentTypeOffset)
	}
	off, err := strconv.ParseInt(string(ctx.Request.Header.Peek(wire.HeaderUploadOffset)), 10, 64)
	if err != nil || off < 0 {
		return badRequest("Upload-Offset must be a byte offset")
	}
	sum, err := parseUploadChecksum(string(ctx.Request.Header.Peek(wire.HeaderUploadChecksum)))
	if err != nil {
		return err
	}
	info, err := s.readUploadInfo(req.Ctx, req.Org, req.User, hexd)
	if err != nil {
		return err
	}
	parts, err := s.uploadParts(req.Ctx, req.Org, req.User, hexd)
	if err != nil {
		return err
	}
	if len(parts) >= s.maxUploadParts(info.Length) {
		return conflict("the upload of blob %s%s is in %d parts, the most for its length: create it again (POST /v1/blobs) to start it over",
			wire.BlobPrefix, hexd, len(parts))
	}
	if cur := contiguous(parts); off != cur {
		return conflict("Upload-Offset is %d but the upload is at %d: ask for the offset (HEAD) and resume there", off, cur)
	}
	n, err := s.appendUpload(ctx, req, hexd, off, info.Length-off, sum)
	if err != nil {
		return err
	}
	if off+n == info.Length {
		if err := s.finishUpload(req.Ctx, req.Org, req.User, hexd, info.Length); err != nil {
			return err
		}
	}
	ctx.Response.Header.Set(wire.HeaderUploadOffset, strconv.FormatInt(off+n, 10))
	ctx.SetStatusCode(fasthttp.StatusNoContent)
	return nil
}

// parseUploadChecksum reads tus's Upload-Checksum ("sha256 <base64>");
// nil if absent. Only sha256 is supported.
func parseUploadChecksum(v string) ([]byte, error) {
	if v == "" {
		return nil, nil
	}
	alg, b64, _ := strings.Cut(strings.TrimSpace(v), " ")
	if alg != "sha256" {
		return nil, badRequest("Upload-Checksum algorithm %q is not supported (use sha256)", alg)
	}
	sum, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	if err != nil || len(sum) != sha256.Size {
		return nil, badRequest("Upload-Checksum must be sha256 and a base64 SHA-256 digest")
	}
	return sum, nil
}

// appendUpload stores a PATCH body at off, at most left bytes (more is a
// 413), and returns how many bytes it stored.
func (s *Server) appendUpload(ctx *fasthttp.RequestCtx, req *request, hexd string, off, left int64, sum []byte) (int64, error) {
	if cl := ctx.Request.Header.ContentLength(); cl > 0 && int64(cl) > left && !bytes.EqualFold(ctx.Request.Header.Peek(fasthttp.HeaderContentEncoding), []byte("zstd")) {
		return 0, errorf(fasthttp.StatusRequestEntityTooLarge, wire.CodeTooLarge, "the upload has %d bytes left, the body has %d", left, cl)
	}
	if left == 0 {
		return 0, nil
	}
	body, err := s.bodyReader(ctx, req, left)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	if sum != nil {
		return s.storeChecksummed(req, hexd, off, body, sum, left)
	}
	return s.storeStreamed(req.Ctx, req.Org, req.User, hexd, off, body)
}

// storeStreamed stores body in parts as it arrives. If the body breaks
// off, what arrived is stored before the error is returned: the client
// resumes after it.
func (s *Server) storeStreamed(ctx context.Context, org, user, hexd string, off int64, body io.Reader) (int64, error) {
	buf := make([]byte, s.opts.BlobPartBytes)
	var n int64
	for {
		m, rerr := io.ReadFull(body, buf)
		if m > 0 {
			if err := s.putPart(ctx, org, user, hexd, off+n, buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return n, nil
		case rerr != nil:
			return n, rerr
		}
	}
}

// storeChecksummed reads the whole body, checks it against sum (tus
// checksum extension: 460 on a mismatch, nothing stored), then stores it.
func (s *Server) storeChecksummed(req *request, hexd string, off int64, body io.Reader, sum []byte, left int64) (int64, error) {
	most := min(left, int64(maxChecksummedParts*s.opts.BlobPartBytes))
	b, err := io.ReadAll(io.LimitReader(body, most+1))
	if err != nil {
		return 0, err
	}
	if int64(len(b)) > most {
		return 0, errorf(fasthttp.StatusRequestEntityTooLarge, wire.CodeTooLarge,
			"a PATCH with Upload-Checksum may carry at most %d bytes here", most)
	}
	if got := sha256.Sum256(b); !bytes.Equal(got[:], sum) {
		return 0, errorf(tusStatusChecksumMismatch, wire.CodeBlobMismatch, "the body does not match its Upload-Checksum: nothing stored, send it again")
	}
	var n int64
	for len(b) > 0 {
		k := min(len(b), s.opts.BlobPartBytes)
		if err := s.putPart(req.Ctx, req.Org, req.User, hexd, off+n, b[:k]); err != nil {
			return n, err
		}
		n, b = n+int64(k), b[k:]
	}
	return n, nil
}

func (s *Server) putPart(ctx context.Context, org, user, hexd string, off int64, b []byte) error {
	_, err := s.store.Put(ctx, snapshot.BlobPartKey(org, user, hexd, off), bytes.NewReader(b), int64(len(b)))
	return err
}

// finishUpload turns a complete upload into the blob: it checks that the
// parts hash to the blob's name (else it discards them: 460), writes the
// content (create-only: another user may have stored it already), grants
// the uploader, and removes the parts.
func (s *Server) finishUpload(ctx context.Context, org, user, hexd string, length int64) error {
	parts, err := s.uploadParts(ctx, org, user, hexd)
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, newPartsReader(ctx, s.store, parts, length)); err != nil {
		return fmt.Errorf("read back upload of blob %s: %w", hexd, err)
	}
	if got := fmt.Sprintf("%x", h.Sum(nil)); got != hexd {
		if err := s.deleteUpload(ctx, org, user, hexd); err != nil {
			return err
		}
		return errorf(tusStatusChecksumMismatch, wire.CodeBlobMismatch,
			"the %d bytes uploaded hash to sha256:%s, not to the blob's name sha256:%s: upload discarded, send it again", length, got, hexd)
	}
	_, err = s.store.PutIfAbsent(ctx, snapshot.BlobKey(org, hexd), newPartsReader(ctx, s.store, parts, length), length)
	if err != nil && !errors.Is(err, snapshot.ErrExist) {
		return fmt.Errorf("store blob %s: %w", hexd, err)
	}
	if err := s.putGrant(ctx, org, user, hexd); err != nil {
		return err
	}
	return s.deleteUpload(ctx, org, user, hexd)
}

// partsReader reads an upload's parts (sorted by offset) as one stream of
// length bytes, skipping what overlapping parts repeat.
type partsReader struct {
	ctx    context.Context
	store  snapshot.Getter
	parts  []blobPart
	pos    int64 // bytes returned so far
	length int64
	cur    io.ReadCloser
}

func newPartsReader(ctx context.Context, st snapshot.Getter, parts []blobPart, length int64) *partsReader {
	return &partsReader{ctx: ctx, store: st, parts: parts, length: length}
}

func (r *partsReader) Read(p []byte) (int, error) {
	for {
		if r.pos >= r.length {
			r.closeCur()
			return 0, io.EOF
		}
		if r.cur == nil {
			if err := r.open(); err != nil {
				return 0, err
			}
		}
		n, err := r.cur.Read(p[:min(int64(len(p)), r.length-r.pos)])
		r.pos += int64(n)
		if err == io.EOF {
			r.closeCur()
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
}

// open opens the rest of the part that holds byte pos.
func (r *partsReader) open() error {
	for len(r.parts) > 0 {
		p := r.parts[0]
		r.parts = r.parts[1:]
		if p.off > r.pos {
			return fmt.Errorf("upload has a gap at byte %d: %w", r.pos, snapshot.ErrCorrupt)
		}
		if end := p.off + p.size; end > r.pos {
			rc, err := r.store.GetRange(r.ctx, p.key, r.pos-p.off, min(end, r.length)-r.pos)
			if err != nil {
				return err
			}
			r.cur = rc
			return nil
		}
	}
	return fmt.Errorf("upload ends at byte %d of %d: %w", r.pos, r.length, io.ErrUnexpectedEOF)
}

func (r *partsReader) closeCur() {
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
}

// maxUploadBreaks is how many parts an upload may have beyond those its
// length needs: one more each time a PATCH ends (or its connection breaks)
// short of a whole part. Every request of an upload lists its parts, so
// without a bound a client sending a byte per PATCH would cost a LIST of
// every part so far per request (quadratic) and an object per byte. An
// honest client sends the rest of the blob in one PATCH; it needs as many
// only if its connection breaks this often on one blob, and then creating
// the upload again starts it over (startBlobUpload).
const maxUploadBreaks = 1024

// maxUploadParts is the most parts an upload of length bytes may have.
func (s *Server) maxUploadParts(length int64) int {
	part := int64(s.opts.BlobPartBytes)
	return int((length+part-1)/part) + maxUploadBreaks
}
