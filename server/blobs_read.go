package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// getBlob handles GET /v1/blobs/{id}: a blob the caller uploaded or their
// data set references, whole or from a Range (a resumed download).
func (s *Server) getBlob(ctx *fasthttp.RequestCtx, req *request) error {
	hexd, err := wire.ParseBlobID(req.Param("id"))
	if err != nil {
		return badRequest("%v", err)
	}
	if err := s.authorizeBlobRead(req, hexd); err != nil {
		return err
	}
	return s.serveBlob(ctx, req, req.Org, hexd)
}

// adminGetBlob handles GET /v1/admin/orgs/{org}/blobs/{id}: the backend
// reads any blob of an org it administers.
func (s *Server) adminGetBlob(ctx *fasthttp.RequestCtx, req *request) error {
	org, err := adminOrg(req)
	if err != nil {
		return err
	}
	hexd, err := wire.ParseBlobID(req.Param("id"))
	if err != nil {
		return badRequest("%v", err)
	}
	return s.serveBlob(ctx, req, org, hexd)
}

// blobNotFound is the answer for a blob the caller may not read, whether
// or not it exists: a hash alone reveals nothing.
func blobNotFound(hexd string) error {
	return notFound("no blob %s%s among yours", wire.BlobPrefix, hexd)
}

// authorizeBlobRead lets the caller read blob hexd if they have a grant
// for it, or if it is stored and their head version references it (then
// a grant is written, so the data set is read once).
func (s *Server) authorizeBlobRead(req *request, hexd string) error {
	_, err := s.store.Stat(req.Ctx, snapshot.BlobGrantKey(req.Org, req.User, hexd))
	if err == nil {
		return nil
	}
	if !errors.Is(err, snapshot.ErrNotExist) {
		return err
	}
	return s.grantFromHead(req, hexd)
}

// grantFromHead writes the caller's grant for blob hexd, which they have
// none for, if it is stored and their head version references it (the
// rare path of a blob put there by the backend, or uploaded by another
// user); else the blob is not found.
func (s *Server) grantFromHead(req *request, hexd string) error {
	// The content must exist before the data set is read: a stranger's
	// guesses cost one Stat each.
	if err := s.blobStored(req, hexd); err != nil {
		return err
	}
	ok, err := s.headReferences(req, hexd)
	if err != nil {
		return err
	}
	if !ok {
		return blobNotFound(hexd)
	}
	return s.putGrant(req.Ctx, req.Org, req.User, hexd)
}

// blobStored checks that the content of blob hexd is stored (404 if not).
func (s *Server) blobStored(req *request, hexd string) error {
	if _, err := s.store.Stat(req.Ctx, snapshot.BlobKey(req.Org, hexd)); err != nil {
		if errors.Is(err, snapshot.ErrNotExist) {
			return blobNotFound(hexd)
		}
		return err
	}
	return nil
}

// headRefs remembers, per user, the blobs their head version references,
// read once per head version: asking for blobs of the org one may not read
// costs a Stat, not a read of the data set, until the head moves, however
// many different blobs one asks for. Bounded: it forgets everything when
// it would hold more than maxHeadRefs users and references together (a
// data set referencing more is read again each time, as it had to be).
type headRefs struct {
	mu   sync.Mutex
	sets map[string]headRefSet // org/user
	n    int                   // users and references held
}

type headRefSet struct {
	head uint64
	refs map[string]bool
}

const maxHeadRefs = 1 << 18

func (c *headRefs) get(user string, head uint64) (map[string]bool, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	set, ok := c.sets[user]
	return set.refs, ok && set.head == head
}

func (c *headRefs) put(user string, head uint64, refs map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(refs) > maxHeadRefs {
		return
	}
	if old, ok := c.sets[user]; ok {
		c.n -= 1 + len(old.refs)
	}
	if c.sets == nil || c.n+1+len(refs) > maxHeadRefs {
		c.sets, c.n = map[string]headRefSet{}, 0
	}
	c.sets[user] = headRefSet{head: head, refs: refs}
	c.n += 1 + len(refs) // a user's entry counts too
}

// headReferences reports whether the caller's newest version has a record
// that references blob hexd. It reads the whole data set once per head
// version (headRefs): the rare path of a blob put there by the backend, or
// uploaded by another user.
func (s *Server) headReferences(req *request, hexd string) (bool, error) {
	head, err := snapshot.Head(req.Ctx, s.store, req.Org, req.User)
	if err != nil || head == 0 {
		return false, err
	}
	s.noteHead(req.Org, req.User, head)
	user := req.Org + "/" + req.User
	if refs, ok := s.headRefs.get(user, head); ok {
		return refs[hexd], nil
	}
	cm, err := s.cachedManifest(req.Ctx, req.Org, req.User, head)
	if err != nil {
		return false, err
	}
	secret, err := s.secret(req.Ctx)
	if err != nil {
		return false, err
	}
	refs := map[string]bool{}
	err = snapshot.NewReader(s.store, cm.m, secret).Records(req.Ctx, func(_, value []byte) error {
		hs, _ := wire.BlobRefs(value) // a value that is no JSON references nothing
		for _, h := range hs {
			refs[h] = true
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	s.headRefs.put(user, head, refs)
	return refs[hexd], nil
}

// checkPatchBlobs refuses (409 blob_missing) a patch that references a
// blob its user may not read: upload first, then reference. So a
// reference in a data set always proves a right to read the blob. Each
// blob costs store requests (its grant, refreshed, and its content), so a
// patch may reference at most s.maxPatchBlobRefs distinct blobs (413 over
// it: the client splits), and a grant written less than grantFresh ago is
// not written again.
func (s *Server) checkPatchBlobs(req *request, p *diff.Patch) error {
	type ref struct {
		op  int
		hex string
	}
	var refs []ref
	seen := map[string]bool{}
	for i, op := range p.Ops {
		for _, raw := range [][]byte{op.Value, op.Patch} {
			if len(raw) == 0 {
				continue
			}
			canon, err := snapshot.CanonicalJSON(raw)
			if err != nil {
				continue // Apply refuses it with its reason
			}
			hs, _ := wire.BlobRefs(canon)
			for _, h := range hs {
				if !seen[h] {
					seen[h] = true
					refs = append(refs, ref{op: i, hex: h})
				}
			}
		}
	}
	if len(refs) > s.maxPatchBlobRefs {
		return errorf(fasthttp.StatusRequestEntityTooLarge, wire.CodeTooLarge,
			"the patch references %d blobs, at most %d per patch: send fewer edits per patch", len(refs), s.maxPatchBlobRefs)
	}
	for _, r := range refs {
		err := s.referenceBlob(req, r.hex)
		var he *httpError
		if errors.As(err, &he) && he.Status == fasthttp.StatusNotFound {
			op := p.Ops[r.op]
			return errorf(fasthttp.StatusConflict, wire.CodeBlobMissing,
				"op %d (key %q) references blob %s%s, which you have not uploaded: upload it first", r.op, op.Key, wire.BlobPrefix, r.hex)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// defaultMaxPatchBlobRefs is the most distinct blobs one patch may
// reference (checkPatchBlobs).
const defaultMaxPatchBlobRefs = 1000

// grantFresh is how old a grant may be and still not be written again when
// a patch references its blob: gc keeps a blob whose grant is younger than
// its grace period (an hour by default, and always far longer than this
// plus a replay).
const grantFresh = time.Minute

// referenceBlob lets a patch reference blob hexd: the caller may read it
// (a grant, or grantFromHead), its content is stored, and their grant is young, so
// that gc keeps the blob between this check and the patch's commit (see
// package gc).
func (s *Server) referenceBlob(req *request, hexd string) error {
	info, err := s.store.Stat(req.Ctx, snapshot.BlobGrantKey(req.Org, req.User, hexd))
	switch {
	case err == nil && time.Since(info.ModTime) < grantFresh:
	case err == nil:
		if err := s.putGrant(req.Ctx, req.Org, req.User, hexd); err != nil {
			return err
		}
	case errors.Is(err, snapshot.ErrNotExist):
		return s.grantFromHead(req, hexd) // it checks the content is stored
	default:
		return err
	}
	return s.blobStored(req, hexd)
}

// feedEntry is a change-feed entry as the admin route answers it: with
// the blobs its new values reference, so the backend sees them without
// parsing every value (and fetches them through the admin blob route).
type feedEntry struct {
	diff.FeedEntry
	Blobs []string `json:"blobs,omitempty"` // blob IDs, "sha256:<hex>"
}

func withBlobRefs(entries []diff.FeedEntry) []feedEntry {
	out := make([]feedEntry, len(entries))
	for i, e := range entries {
		out[i].FeedEntry = e
		if e.ChangeSet == nil {
			continue
		}
		// The new values, and a patch's ops (the first version of a data
		// set lists no changes). A full build lists neither.
		var values [][]byte
		for _, c := range e.ChangeSet.Changes {
			values = append(values, c.New)
		}
		if p := e.ChangeSet.Patch; p != nil {
			for _, op := range p.Ops {
				values = append(values, op.Value, op.Patch)
			}
		}
		out[i].Blobs = blobIDsOf(values)
	}
	return out
}

// blobIDsOf lists the blobs canonical JSON values reference, once each.
func blobIDsOf(values [][]byte) []string {
	var ids []string
	seen := map[string]bool{}
	for _, v := range values {
		refs, _ := wire.BlobRefs(v)
		for _, h := range refs {
			if !seen[h] {
				seen[h] = true
				ids = append(ids, wire.BlobPrefix+h)
			}
		}
	}
	return ids
}

// serveBlob answers blob hexd of org, whole or the Range asked for.
func (s *Server) serveBlob(ctx *fasthttp.RequestCtx, req *request, org, hexd string) error {
	key := snapshot.BlobKey(org, hexd)
	info, err := s.store.Stat(req.Ctx, key)
	if errors.Is(err, snapshot.ErrNotExist) {
		return blobNotFound(hexd)
	}
	if err != nil {
		return err
	}
	etag := `"` + wire.BlobPrefix + hexd + `"`
	ctx.Response.Header.Set("ETag", etag)
	ctx.Response.Header.Set("Cache-Control", "private, max-age=31536000, immutable")
	ctx.Response.Header.Set("Accept-Ranges", "bytes")
	if string(ctx.Request.Header.Peek("If-None-Match")) == etag {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return nil
	}
	off, n, partial, err := parseRange(string(ctx.Request.Header.Peek("Range")), info.Size)
	if err != nil {
		ctx.Response.Header.Set("Content-Range", fmt.Sprintf("bytes */%d", info.Size))
		return err
	}
	ctx.SetContentType("application/octet-stream")
	if partial {
		ctx.SetStatusCode(fasthttp.StatusPartialContent)
		ctx.Response.Header.Set("Content-Range", contentRange(off, n, info.Size))
	}
	if n == 0 || ctx.IsHead() {
		ctx.Response.Header.SetContentLength(int(n))
		return nil
	}
	if !partial && acceptsZstd(ctx) {
		if ok, err := s.blobCompresses(req, key, n); err != nil || ok {
			if err == nil {
				s.serveBlobZstd(ctx, req, key, n)
			}
			return err
		}
	}
	rc, err := s.store.GetRange(req.Ctx, key, off, n)
	if err != nil {
		return err
	}
	ctx.SetBodyStream(rc, int(n)) // fasthttp closes rc
	s.metrics.bytesSent.WithLabelValues(req.Route).Add(float64(n))
	return nil
}

func acceptsZstd(ctx *fasthttp.RequestCtx) bool {
	for e := range strings.SplitSeq(string(ctx.Request.Header.Peek(fasthttp.HeaderAcceptEncoding)), ",") {
		if name, _, _ := strings.Cut(strings.TrimSpace(e), ";"); strings.EqualFold(name, "zstd") {
			return true
		}
	}
	return false
}

// blobCompresses reads the start of a blob and tells whether it is worth
// sending compressed (wire.BlobCompresses).
func (s *Server) blobCompresses(req *request, key string, n int64) (bool, error) {
	if n < 4<<10 {
		return false, nil
	}
	rc, err := s.store.GetRange(req.Ctx, key, 0, min(n, wire.BlobSampleBytes))
	if err != nil {
		return false, err
	}
	defer rc.Close()
	sample, err := io.ReadAll(rc)
	if err != nil {
		return false, err
	}
	return wire.BlobCompresses(sample), nil
}

// serveBlobZstd streams a whole blob zstd-compressed (only whole answers
// are: a Range asks for raw bytes). A failure midway cuts the answer,
// which the client's hash check catches.
func (s *Server) serveBlobZstd(ctx *fasthttp.RequestCtx, req *request, key string, n int64) {
	ctx.Response.Header.Set(fasthttp.HeaderContentEncoding, "zstd")
	ctx.Response.Header.Set(fasthttp.HeaderVary, "Accept-Encoding")
	route := req.Route
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		rc, err := s.store.GetRange(req.Ctx, key, 0, n)
		if err != nil {
			s.log.Warn("blob download failed", "key", key, "err", err)
			return
		}
		defer rc.Close()
		cw := &countingWriter{w: w}
		enc, _ := zstd.NewWriter(cw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		if _, err := io.Copy(enc, rc); err != nil {
			s.log.Warn("blob download failed", "key", key, "err", err)
			enc.Close()
			return
		}
		enc.Close()
		s.metrics.bytesSent.WithLabelValues(route).Add(float64(cw.n))
	})
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// parseRange reads a Range header of one range ("bytes=a-", "bytes=a-b",
// "bytes=-n") against an object of size bytes; no header is the whole.
// An unsatisfiable range is a 416.
func parseRange(h string, size int64) (off, n int64, partial bool, err error) {
	if h == "" {
		return 0, size, false, nil
	}
	bad := errorf(fasthttp.StatusRequestedRangeNotSatisfiable, wire.CodeBadRequest, "range %q not satisfiable for %d bytes (one range, bytes=a-b)", h, size)
	spec, ok := strings.CutPrefix(h, "bytes=")
	a, b, ok2 := strings.Cut(spec, "-")
	if !ok || !ok2 || strings.Contains(spec, ",") {
		return 0, 0, false, bad
	}
	if a == "" { // the last b bytes
		k, err := strconv.ParseInt(b, 10, 64)
		if err != nil || k <= 0 || size == 0 { // no byte of an empty blob to send
			return 0, 0, false, bad
		}
		k = min(k, size)
		return size - k, k, true, nil
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false, bad
	}
	end := size - 1
	if b != "" {
		if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
			return 0, 0, false, bad
		}
		end = min(end, size-1)
	}
	return start, end - start + 1, true, nil
}
