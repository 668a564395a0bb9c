package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Blobs: photos and files beside a data set (the protocol is in
// wire/blob.go, the store layout in snapshot/layout.go).
//
// Uploads speak the core of tus 1.0 (creation, HEAD for the offset, PATCH
// to append, the checksum extension for a PATCH that wants one). The
// server keeps no state of its own, so an upload is objects in the store:
// an info object and the parts received so far, each named by its offset.
// A PATCH's body is streamed and stored in parts of at most
// Options.BlobPartBytes as it arrives; if the connection breaks, what did
// arrive is stored too, so a resumed upload sends only the rest. The
// upload is named by the blob's hash: creating it again (after a crash, or
// from another device of the user) finds the parts already there.
//
// The last PATCH reads the parts back, checks that they hash to the blob's
// name, and only then writes the content (create-only: the org's users
// share it) and the user's grant. A blob is read through a grant: the
// uploader's, or one written on the first read by a user whose head
// version references the blob. Patches may reference only blobs their user
// can read, so a reference in a data set is proof of a right to read,
// never a way to get one.

// blobUploadInfo is the info object of an upload in progress.
type blobUploadInfo struct {
	Length      int64  `json:"length"`
	Mime        string `json:"mime,omitempty"`
	CreatedUnix int64  `json:"created_unix"`
}

// maxBlobInfoBytes bounds what is read back from an info object.
const maxBlobInfoBytes = 4 << 10

// tusStatusChecksumMismatch is tus's answer to a PATCH whose body does not
// match its Upload-Checksum (and ours to an upload whose bytes do not hash
// to its name).
const tusStatusChecksumMismatch = 460

func blobRoutes(s *Server) {
	s.handle(fasthttp.MethodPost, "/v1/blobs", "blob_create", authUser, s.createBlobUpload)
	s.handle(fasthttp.MethodGet, "/v1/blobs/uploads/{hex}", "blob_upload_head", authUser, s.headBlobUpload)
	s.handle(fasthttp.MethodPatch, "/v1/blobs/uploads/{hex}", "blob_patch", authUser, s.patchBlobUpload)
	s.handle(fasthttp.MethodGet, "/v1/blobs/{id}", "blob_get", authUser, s.getBlob)
	s.handle(fasthttp.MethodGet, "/v1/admin/orgs/{org}/blobs/{id}", "admin_blob_get", authAdmin, s.adminGetBlob)
}

// setTus adds the tus headers every answer of an upload route carries.
func setTus(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set(wire.HeaderTusResumable, wire.TusVersion)
	ctx.Response.Header.Set("Cache-Control", "no-store")
}

// createBlobUpload handles POST /v1/blobs (tus creation).
func (s *Server) createBlobUpload(ctx *fasthttp.RequestCtx, req *request) error {
	setTus(ctx)
	length, hexd, mime, err := parseBlobCreate(&ctx.Request.Header, req.Policy.MaxBlobBytes)
	if err != nil {
		return err
	}
	if done, err := s.blobAlreadyGranted(req, hexd, length); err != nil || done {
		if err == nil {
			ctx.Response.Header.Set(wire.HeaderUploadOffset, strconv.FormatInt(length, 10))
			ctx.Response.Header.Set(fasthttp.HeaderLocation, "/v1/blobs/"+wire.BlobPrefix+hexd)
			ctx.SetStatusCode(fasthttp.StatusOK)
		}
		return err
	}
	off, err := s.startBlobUpload(req, hexd, length, mime)
	if err != nil {
		return err
	}
	if off == length {
		// Empty, or every byte arrived but the last PATCH's answer was
		// lost before the blob was finished.
		if err := s.finishUpload(req.Ctx, req.Org, req.User, hexd, length); err != nil {
			return err
		}
	}
	ctx.Response.Header.Set(wire.HeaderUploadOffset, strconv.FormatInt(off, 10))
	ctx.Response.Header.Set(fasthttp.HeaderLocation, "/v1/blobs/uploads/"+hexd)
	ctx.SetStatusCode(fasthttp.StatusCreated)
	return nil
}

// parseBlobCreate reads a creation request's Upload-Length and
// Upload-Metadata ("blob" the blob ID, "mime" optional, both base64).
func parseBlobCreate(h *fasthttp.RequestHeader, max int64) (length int64, hexd, mime string, err error) {
	length, perr := strconv.ParseInt(string(h.Peek(wire.HeaderUploadLength)), 10, 64)
	if perr != nil || length < 0 {
		return 0, "", "", badRequest("Upload-Length must be a byte count (deferred lengths are not supported)")
	}
	if max > 0 && length > max {
		return 0, "", "", errorf(fasthttp.StatusRequestEntityTooLarge, wire.CodeTooLarge,
			"blob of %d bytes exceeds the limit of %d bytes", length, max)
	}
	meta, err := parseTusMetadata(string(h.Peek(wire.HeaderUploadMetadata)))
	if err != nil {
		return 0, "", "", err
	}
	hexd, perr = wire.ParseBlobID(meta["blob"])
	if perr != nil {
		return 0, "", "", badRequest("Upload-Metadata must name the blob (blob <base64 of sha256:<hex>>): %v", perr)
	}
	mime = meta["mime"]
	if len(mime) > 255 {
		return 0, "", "", badRequest("mime type longer than 255 bytes")
	}
	return length, hexd, mime, nil
}

// parseTusMetadata decodes tus's Upload-Metadata: comma-separated pairs of
// a key and a base64 value.
func parseTusMetadata(v string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(v) == "" {
		return out, nil
	}
	for pair := range strings.SplitSeq(v, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(pair), " ")
		if k == "" {
			return nil, badRequest("Upload-Metadata has an empty key")
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(val))
		if err != nil {
			return nil, badRequest("Upload-Metadata value of %q is not base64", k)
		}
		out[k] = string(b)
	}
	return out, nil
}

// blobAlreadyGranted reports whether the caller already has blob hexd
// (granted and stored): then there is nothing to upload. A length that
// differs from the stored blob's is refused: a hash names one content.
func (s *Server) blobAlreadyGranted(req *request, hexd string, length int64) (bool, error) {
	if _, err := s.store.Stat(req.Ctx, snapshot.BlobGrantKey(req.Org, req.User, hexd)); err != nil {
		if errors.Is(err, snapshot.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	info, err := s.store.Stat(req.Ctx, snapshot.BlobKey(req.Org, hexd))
	if errors.Is(err, snapshot.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if info.Size != length {
		return false, errorf(fasthttp.StatusConflict, wire.CodeBlobMismatch,
			"blob %s%s has %d bytes, not %d", wire.BlobPrefix, hexd, info.Size, length)
	}
	// Refresh the grant: gc keeps a blob with a young grant, so the patch
	// that will reference it has a grace period to arrive.
	return true, s.putGrant(req.Ctx, req.Org, req.User, hexd)
}

// startBlobUpload creates the upload's info object, or finds the one a
// previous attempt created, and returns the offset reached so far. An
// upload started with another length, or in too many parts to go on
// (maxUploadBreaks), is restarted.
func (s *Server) startBlobUpload(req *request, hexd string, length int64, mime string) (int64, error) {
	info := blobUploadInfo{Length: length, Mime: mime, CreatedUnix: s.opts.now().Unix()}
	b, _ := json.Marshal(info)
	key := snapshot.BlobUploadInfoKey(req.Org, req.User, hexd)
	_, err := s.store.PutIfAbsent(req.Ctx, key, bytes.NewReader(b), int64(len(b)))
	if err == nil {
		return 0, nil
	}
	if !errors.Is(err, snapshot.ErrExist) {
		return 0, err
	}
	old, err := s.readUploadInfo(req.Ctx, req.Org, req.User, hexd)
	if err != nil {
		return 0, err
	}
	if old.Length == length {
		parts, err := s.uploadParts(req.Ctx, req.Org, req.User, hexd)
		if err != nil {
			return 0, err
		}
		if len(parts) < s.maxUploadParts(length) {
			return contiguous(parts), nil
		}
		// Too fragmented to go on (see maxUploadBreaks): start over.
	}
	if err := s.deleteUpload(req.Ctx, req.Org, req.User, hexd); err != nil {
		return 0, err
	}
	if _, err := s.store.Put(req.Ctx, key, bytes.NewReader(b), int64(len(b))); err != nil {
		return 0, err
	}
	return 0, nil
}

func (s *Server) readUploadInfo(ctx context.Context, org, user, hexd string) (blobUploadInfo, error) {
	b, err := snapshot.GetBytes(ctx, s.store, snapshot.BlobUploadInfoKey(org, user, hexd), maxBlobInfoBytes)
	if errors.Is(err, snapshot.ErrNotExist) {
		return blobUploadInfo{}, notFound("no upload of blob %s%s in progress: create it first (POST /v1/blobs)", wire.BlobPrefix, hexd)
	}
	if err != nil {
		return blobUploadInfo{}, err
	}
	var info blobUploadInfo
	if err := json.Unmarshal(b, &info); err != nil || info.Length < 0 {
		return blobUploadInfo{}, &snapshot.ObjectError{Op: "decode upload info", Key: snapshot.BlobUploadInfoKey(org, user, hexd), Err: snapshot.ErrCorrupt}
	}
	return info, nil
}

// blobPart is one stored part of an upload.
type blobPart struct {
	key       string
	off, size int64
}

// uploadParts lists an upload's parts by offset.
func (s *Server) uploadParts(ctx context.Context, org, user, hexd string) ([]blobPart, error) {
	var parts []blobPart
	err := s.store.List(ctx, snapshot.BlobUploadPrefix(org, user, hexd), func(oi snapshot.ObjectInfo) error {
		if off, ok := snapshot.ParseBlobPartKey(oi.Key); ok {
			parts = append(parts, blobPart{key: oi.Key, off: off, size: oi.Size})
		}
		return nil
	})
	return parts, err
}

// contiguous returns how far parts (sorted by offset) cover the upload
// from 0 without a gap. Parts may overlap (two devices of one user sending
// the same blob): the bytes of an overlap are the same if both are honest,
// and the final hash check catches it if not.
func contiguous(parts []blobPart) int64 {
	var end int64
	for _, p := range parts {
		if p.off > end {
			break
		}
		end = max(end, p.off+p.size)
	}
	return end
}

func (s *Server) uploadOffset(ctx context.Context, org, user, hexd string) (int64, error) {
	parts, err := s.uploadParts(ctx, org, user, hexd)
	if err != nil {
		return 0, err
	}
	return contiguous(parts), nil
}

// deleteUpload removes an upload's parts, then its info object.
func (s *Server) deleteUpload(ctx context.Context, org, user, hexd string) error {
	parts, err := s.uploadParts(ctx, org, user, hexd)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := s.store.Delete(ctx, p.key); err != nil {
			return err
		}
	}
	return s.store.Delete(ctx, snapshot.BlobUploadInfoKey(org, user, hexd))
}

// headBlobUpload handles HEAD (and GET) /v1/blobs/uploads/{hex}: the
// offset reached. A finished upload answers its full length.
func (s *Server) headBlobUpload(ctx *fasthttp.RequestCtx, req *request) error {
	setTus(ctx)
	hexd := req.Param("hex")
	if err := wire.ValidBlobHex(hexd); err != nil {
		return badRequest("%v", err)
	}
	info, err := s.readUploadInfo(req.Ctx, req.Org, req.User, hexd)
	var off int64
	if err == nil {
		off, err = s.uploadOffset(req.Ctx, req.Org, req.User, hexd)
	} else if done, gerr := s.blobGrantedSize(req, hexd); gerr == nil && done >= 0 {
		info.Length, off, err = done, done, nil
	}
	if err != nil {
		return err
	}
	ctx.Response.Header.Set(wire.HeaderUploadOffset, strconv.FormatInt(off, 10))
	ctx.Response.Header.Set(wire.HeaderUploadLength, strconv.FormatInt(info.Length, 10))
	ctx.SetStatusCode(fasthttp.StatusOK)
	return nil
}

// blobGrantedSize returns the size of blob hexd if the caller has a grant
// for it and it is stored, else -1.
func (s *Server) blobGrantedSize(req *request, hexd string) (int64, error) {
	if _, err := s.store.Stat(req.Ctx, snapshot.BlobGrantKey(req.Org, req.User, hexd)); err != nil {
		return -1, err
	}
	info, err := s.store.Stat(req.Ctx, snapshot.BlobKey(req.Org, hexd))
	if err != nil {
		return -1, err
	}
	return info.Size, nil
}

func (s *Server) putGrant(ctx context.Context, org, user, hexd string) error {
	_, err := s.store.Put(ctx, snapshot.BlobGrantKey(org, user, hexd), bytes.NewReader(nil), 0)
	return err
}

// contentRange is an answer's Content-Range.
func contentRange(off, n, size int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size)
}
