package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/client/internal/blobstore"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Blobs: photos and files attached to records (wire/blob.go has the
// protocol, client/internal/blobstore the files on the device).
//
// Attach stores a blob on the device, durably, offline, and returns the
// reference the app puts into a record. A push uploads the pending blobs
// an outgoing patch references before it sends the patch (a patch is never
// sent ahead of its blobs), resuming an interrupted upload where the server
// says it stopped. After a sync, the blobs the new records reference are
// downloaded at once if the org's policy says they are small enough
// (EagerBlobBytes), the others when the app asks for them (Blob). Downloads
// resume from what is on the device. Downloaded and uploaded blobs form a
// cache of Options.BlobCacheBytes, evicted least recently used first;
// pending blobs are never evicted.

// BlobDir is the directory of blobs inside a client's state directory.
const BlobDir = "blobs"

// DefaultBlobCacheBytes is the default size limit of the blob cache.
const DefaultBlobCacheBytes = 256 << 20

// blobState is the client's blob store and the downloads it owes.
type blobState struct {
	store *blobstore.Store
	// dlMu serialises downloads: one writer per partial file.
	dlMu sync.Mutex
	mu   sync.Mutex
	// eager are the blobs synced records reference, to fetch after the
	// sync if the policy says so; scanAll asks for every record's.
	eager   map[string]wire.BlobRef
	scanAll bool
}

func (c *Client) openBlobs() error {
	st, err := blobstore.Open(filepath.Join(c.dir, BlobDir))
	if err != nil {
		return err
	}
	c.blobs.store = st
	c.st.mu.Lock()
	c.st.blobs = st
	c.st.mu.Unlock()
	return nil
}

// removeBlobs deletes the blobs of the state directory dir (Wipe).
func removeBlobs(dir string) error {
	if err := os.RemoveAll(filepath.Join(dir, BlobDir)); err != nil {
		return fmt.Errorf("remove client blobs: %w", err)
	}
	return nil
}

// Attach stores data as a blob on this device and returns its reference,
// to put into a record (as the value of any field). The blob is durable
// when Attach returns, and uploaded by the push that sends the first patch
// referencing it. mime may be empty. A blob over the organization's limit
// (as last learned from the server) is refused and nothing is kept.
func (c *Client) Attach(data []byte, mime string) (wire.BlobRef, error) {
	return c.attach(bytes.NewReader(data), mime)
}

// AttachFile is Attach with the bytes of the file at path.
func (c *Client) AttachFile(path, mime string) (wire.BlobRef, error) {
	f, err := os.Open(path)
	if err != nil {
		return wire.BlobRef{}, fmt.Errorf("attach: %w", err)
	}
	defer f.Close()
	return c.attach(f, mime)
}

func (c *Client) attach(r io.Reader, mime string) (wire.BlobRef, error) {
	m, err := c.blobs.store.Put(r, mime, c.Policy().MaxBlobBytes)
	if err != nil {
		return wire.BlobRef{}, fmt.Errorf("attach: %w", err)
	}
	c.emitStatus()
	return wire.BlobRef{Blob: wire.BlobPrefix + m.Hex, Bytes: m.Bytes, Mime: m.Mime}, nil
}

// Blob returns the bytes of the blob id ("sha256:<hex>", the $blob of a
// reference), downloading it (resuming a partial download) if it is not
// on this device. Offline, a blob not on the device fails with
// ErrOfflineMode or ErrNoConnection.
func (c *Client) Blob(ctx context.Context, id string) ([]byte, error) {
	path, err := c.BlobFile(ctx, id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", id, err)
	}
	return b, nil
}

// BlobFile is Blob, answering the path of the file that holds the blob
// (read it, never change it; it may be evicted by a later download).
func (c *Client) BlobFile(ctx context.Context, id string) (string, error) {
	hexd, err := wire.ParseBlobID(id)
	if err != nil {
		return "", fmt.Errorf("blob: %v: %w", err, ErrInvalid)
	}
	if f, err := c.blobs.store.Open(hexd); err == nil {
		f.Close()
		return c.blobs.store.Path(hexd), nil
	}
	if err := c.fetchBlob(ctx, hexd, ""); err != nil {
		return "", err
	}
	return c.blobs.store.Path(hexd), nil
}

// sendWithBlobs is push's step for one patch: upload the pending blobs its
// edits reference, then send it (sendPatch). A blob stays pending until
// a patch referencing it is answered: sending the patch again uploads it
// again (a request, if the server has it), which refreshes the server's
// grant, so gc keeps the blob for a patch that is slow to follow. If the
// server no longer has a blob a patch references (409 blob_missing: gc
// took it while the patch waited), the blob is marked pending again and
// the next push uploads it; if this device lost it too, the edits that
// reference it are blocked.
func (c *Client) sendWithBlobs(ctx context.Context, p *inflightPatch, edits []*edit, res *SyncResult) error {
	if sent, err := c.uploadBlobsFor(ctx, p, edits); err != nil || !sent {
		return err // !sent: an edit was blocked, the patch is formed again
	}
	if err := c.sendPatch(ctx, p, edits, res); err != nil {
		return c.blobMissing(err, edits)
	}
	for _, e := range edits {
		for _, h := range blobsOf(e.PatchOp()) {
			if err := c.blobs.store.MarkUploaded(h); err != nil {
				return fmt.Errorf("push: %w", err)
			}
		}
	}
	c.emitStatus()
	return nil
}

// blobIDPattern finds the blob IDs a blob_missing answer names.
var blobIDPattern = regexp.MustCompile(wire.BlobPrefix + `[0-9a-f]{64}`)

// blobMissing handles a patch the server refused for a blob it does not
// have (see sendWithBlobs); other errors pass through.
func (c *Client) blobMissing(err error, edits []*edit) error {
	var he *HTTPError
	if !errors.As(err, &he) || he.Code != wire.CodeBlobMissing {
		return err
	}
	for _, id := range blobIDPattern.FindAllString(he.Message, -1) {
		h := id[len(wire.BlobPrefix):]
		if c.blobs.store.Verify(h) == nil {
			if merr := c.blobs.store.MarkPending(h); merr != nil {
				return fmt.Errorf("push: %w", merr)
			}
			continue
		}
		if berr := c.blockEditsReferencing(edits, h, "the server no longer has it and this device does not either; attach it again"); berr != nil {
			return berr
		}
	}
	c.emitStatus()
	return err // the patch was dropped (patchRefused): formed again next push
}

// uploadBlobsFor uploads the pending blobs that the edits of patch p
// reference: the hook push calls before it sends a patch. An error leaves
// the patch unsent. A blob the server refuses as too large (413: the
// org's limit, unknown when it was attached) blocks the edits that
// reference it, as a record over the limit would (they stay queued, see
// Client.Blocked), and the patch in flight is dropped to be formed again
// without them: then ok is false.
func (c *Client) uploadBlobsFor(ctx context.Context, p *inflightPatch, edits []*edit) (ok bool, err error) {
	for _, e := range edits {
		for _, h := range pendingBlobsOf(c.blobs.store, e.PatchOp()) {
			m, err := c.blobs.store.Get(h)
			if err != nil || !m.Pending {
				continue // uploaded for an earlier edit
			}
			err = c.uploadBlob(ctx, m)
			var he *HTTPError
			switch {
			case errors.As(err, &he) && he.Status == http.StatusRequestEntityTooLarge:
				return false, c.blockBlobEdits(p, edits, h, he.Message)
			case errors.Is(err, blobstore.ErrNotExist):
				// Its file was removed behind our back: no retry brings it.
				return false, c.blockBlobEdits(p, edits, h, "the blob's file is missing on this device; attach it again")
			case errors.As(err, &he) && he.Code == wire.CodeBlobMismatch && c.blobs.store.Verify(h) != nil:
				// The server hashed other bytes because ours are damaged
				// (else the network was, and the next push sends it again).
				return false, c.blockBlobEdits(p, edits, h, "the blob's file is damaged on this device; attach it again")
			}
			if err != nil {
				return false, fmt.Errorf("push: upload blob %s%s: %w", wire.BlobPrefix, h, err)
			}
		}
	}
	return true, nil
}

// blobsOf lists the blobs op references.
func blobsOf(op diff.Op) []string {
	var out []string
	for _, raw := range [][]byte{op.Value, op.Patch} {
		if len(raw) == 0 {
			continue
		}
		canon, err := snapshot.CanonicalJSON(raw)
		if err != nil {
			continue
		}
		refs, _ := wire.BlobRefs(canon)
		out = append(out, refs...)
	}
	return out
}

// pendingBlobsOf lists the blobs op references that are pending here.
func pendingBlobsOf(st *blobstore.Store, op diff.Op) []string {
	var out []string
	for _, h := range blobsOf(op) {
		if m, err := st.Get(h); err == nil && m.Pending {
			out = append(out, h)
		}
	}
	return out
}

// blockBlobEdits blocks the edits of a patch that reference blob h, which
// cannot be uploaded (why), and drops the patch in flight.
func (c *Client) blockBlobEdits(p *inflightPatch, edits []*edit, h, why string) error {
	if err := c.blockEditsReferencing(edits, h, why); err != nil {
		return err
	}
	if err := c.completePatchX(p.ID, 0, nil, nil, nil); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	return c.refreshBlocked()
}

// blockEditsReferencing blocks the edits that reference blob h (why).
func (c *Client) blockEditsReferencing(edits []*edit, h, why string) error {
	reason := fmt.Sprintf("blob %s%s: %s", wire.BlobPrefix, h, why)
	for _, e := range edits {
		if slices.Contains(blobsOf(e.PatchOp()), h) {
			if err := c.blockEdit(e.Seq, reason); err != nil {
				return fmt.Errorf("push: %w", err)
			}
		}
	}
	return c.refreshBlocked()
}

// uploadBlob sends a pending blob (tus: create, then PATCH from the
// offset the server has) and marks it uploaded.
func (c *Client) uploadBlob(ctx context.Context, m blobstore.Meta) error {
	meta := "blob " + base64.StdEncoding.EncodeToString([]byte(wire.BlobPrefix+m.Hex))
	if m.Mime != "" {
		meta += ",mime " + base64.StdEncoding.EncodeToString([]byte(m.Mime))
	}
	hdr := http.Header{wire.HeaderTusResumable: {wire.TusVersion}, wire.HeaderUploadLength: {strconv.FormatInt(m.Bytes, 10)},
		wire.HeaderUploadMetadata: {meta}}
	resp, err := c.blobDo(ctx, "upload blob", http.MethodPost, "/v1/blobs", nil, 0, hdr)
	if err != nil {
		return err
	}
	off, err := uploadOffsetOf(resp)
	if err != nil {
		return err
	}
	if off < m.Bytes {
		if err := c.patchBlob(ctx, m, off); err != nil {
			return err
		}
	}
	return nil // still pending: sendWithBlobs marks it once the patch is answered
}

// patchBlob sends the blob's bytes from off in one PATCH; the server keeps
// whatever arrives, so an interrupted one resumes there.
func (c *Client) patchBlob(ctx context.Context, m blobstore.Meta, off int64) error {
	f, err := c.blobs.store.Open(m.Hex)
	if err != nil {
		return err
	}
	defer f.Close()
	n := m.Bytes - off
	hdr := http.Header{wire.HeaderTusResumable: {wire.TusVersion}, wire.HeaderUploadOffset: {strconv.FormatInt(off, 10)},
		"Content-Type": {wire.ContentTypeOffset}}
	body := func() io.ReadCloser { return io.NopCloser(io.NewSectionReader(f, off, n)) }
	if compresses(f, off, n) {
		// Compressed when it helps: offsets stay those of the raw bytes.
		hdr.Set("Content-Encoding", "zstd")
		body = func() io.ReadCloser { return zstdStream(io.NewSectionReader(f, off, n)) }
		n = -1
	}
	resp, err := c.blobDo(ctx, "upload blob", http.MethodPatch, "/v1/blobs/uploads/"+m.Hex, body, n, hdr)
	if err != nil {
		return err
	}
	got, err := uploadOffsetOf(resp)
	if err != nil {
		return err
	}
	if got != m.Bytes {
		return &serverError{op: "upload blob", err: fmt.Errorf("upload at %d of %d bytes after the last PATCH", got, m.Bytes)}
	}
	return nil
}

// compresses reads a sample of the bytes to send and tells whether they
// are worth compressing (wire.BlobCompresses).
func compresses(f io.ReaderAt, off, n int64) bool {
	if n < 4<<10 {
		return false
	}
	sample := make([]byte, min(n, wire.BlobSampleBytes))
	k, _ := f.ReadAt(sample, off)
	return wire.BlobCompresses(sample[:k])
}

// zstdStream compresses r on the fly; closing the answer stops the
// encoder.
func zstdStream(r io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		enc, err := zstd.NewWriter(pw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err == nil {
			_, err = io.Copy(enc, r)
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func uploadOffsetOf(resp *http.Response) (int64, error) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	off, err := strconv.ParseInt(resp.Header.Get(wire.HeaderUploadOffset), 10, 64)
	if err != nil || off < 0 {
		return 0, &serverError{op: "upload blob", err: fmt.Errorf("answer without a valid Upload-Offset")}
	}
	return off, nil
}

// blobDo sends a request whose body (n bytes, opened by body; nil for
// none) is streamed from a file, not held in memory; otherwise as request.
func (c *Client) blobDo(ctx context.Context, op, method, path string, body func() io.ReadCloser, n int64, hdr http.Header) (*http.Response, error) {
	if c.OfflineMode() {
		return nil, fmt.Errorf("%s: %w", op, ErrOfflineMode)
	}
	base := c.ServerURL()
	if base == "" {
		return nil, fmt.Errorf("%s: %w", op, ErrNoServer)
	}
	tok, err := c.bearer(ctx, false, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.sendStream(ctx, op, method, base+path, body, n, hdr, tok)
	var he *HTTPError
	if c.tok.provider != nil && errors.As(err, &he) && he.Status == http.StatusUnauthorized {
		if tok, err = c.bearer(ctx, true, tok); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		resp, err = c.sendStream(ctx, op, method, base+path, body, n, hdr, tok)
	}
	return resp, err
}

// sendStream sends one request whose body is streamed (see blobDo). A
// body the transport stops taking for RequestTimeoutMillis (the server
// stopped reading) ends the request as a lost connection.
func (c *Client) sendStream(ctx context.Context, op, method, u string, body func() io.ReadCloser, n int64, hdr http.Header, tok string) (*http.Response, error) {
	rctx, abort := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, method, u, nil)
	if err != nil {
		abort()
		return nil, fmt.Errorf("%s: server URL %q: %w", op, c.ServerURL(), err)
	}
	var sent *sentCounter
	var watch *stallWatch
	if body != nil {
		sent = &sentCounter{}
		watch = newStallWatch(c.opts.requestTimeout(), abort, true)
		defer watch.stop()
		open := func() io.ReadCloser {
			rc := body()
			return struct {
				io.Reader
				io.Closer
			}{&progressBody{r: &countedBody{r: rc, n: &sent.n}, w: watch}, rc}
		}
		req.Body = open()
		req.GetBody = func() (io.ReadCloser, error) { return open(), nil }
		req.ContentLength = n
		if n > expectContinueOver || n < 0 {
			req.Header.Set("Expect", "100-continue")
		}
	}
	resp, err := c.roundTrip(rctx, op, req, hdr, tok, sent)
	if err != nil {
		abort()
		if watch != nil && watch.stalled() && ctx.Err() == nil {
			return nil, &netError{op: op, err: fmt.Errorf("the server took no data for %v", watch.idle)}
		}
		return nil, err
	}
	resp.Body = abortOnClose{resp.Body, abort}
	return resp, nil
}

// abortOnClose releases a request's context when its answer is closed.
type abortOnClose struct {
	io.ReadCloser
	abort context.CancelFunc
}

func (b abortOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.abort()
	return err
}
