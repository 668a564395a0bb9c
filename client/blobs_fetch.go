package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/wire"
)

func httpErrorOf(op string, status int, raw []byte) *HTTPError {
	he := &HTTPError{Op: op, Status: status}
	var eb wire.ErrorBody
	if json.Unmarshal(raw, &eb) == nil {
		he.Code, he.Message = eb.Error.Code, eb.Error.Message
	}
	return he
}

// fetchBlob downloads blob hexd into the cache, resuming from the part on
// the device (a Range request), checks it against its name, and evicts
// least recently used cached blobs past the cache limit.
func (c *Client) fetchBlob(ctx context.Context, hexd, mime string) error {
	c.blobs.dlMu.Lock()
	defer c.blobs.dlMu.Unlock()
	if _, err := c.blobs.store.Get(hexd); err == nil {
		return nil // fetched meanwhile
	}
	off := c.blobs.store.PartialSize(hexd)
	hdr := http.Header{"Accept-Encoding": {"zstd"}} // whole answers, when it helps
	if off > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	rctx, abort := context.WithCancel(ctx) // the request, ended by a stalled body
	defer abort()
	resp, err := c.request(rctx, "download blob", http.MethodGet, "/v1/blobs/"+wire.BlobPrefix+hexd, nil, nil, hdr)
	var he *HTTPError
	if errors.As(err, &he) && he.Status == http.StatusRequestedRangeNotSatisfiable && off > 0 {
		// The part on the device is longer than the blob: start over.
		hdr.Del("Range")
		resp, err = c.request(rctx, "download blob", http.MethodGet, "/v1/blobs/"+wire.BlobPrefix+hexd, nil, nil, hdr)
		off = 0
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		off = 0
	} else if !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(off, 10)+"-") {
		return &serverError{op: "download blob", err: fmt.Errorf("asked from byte %d, got Content-Range %q", off, resp.Header.Get("Content-Range"))}
	}
	idle := newIdleReader(resp.Body, c.opts.requestTimeout(), abort)
	defer idle.stop()
	cr := &countingReader{r: idle}
	src := io.Reader(cr)
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "zstd") {
		dec, err := zstd.NewReader(cr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(blobDecoderMemory),
			zstd.WithDecoderMaxWindow(blobDecoderWindow))
		if err != nil {
			return fmt.Errorf("download blob: %w", err)
		}
		defer dec.Close()
		src = dec
	} else if resp.Header.Get("Content-Encoding") != "" {
		return &serverError{op: "download blob", err: fmt.Errorf("unexpected Content-Encoding %q", resp.Header.Get("Content-Encoding"))}
	}
	_, err = c.blobs.store.AppendPartial(hexd, off, src)
	c.addBytes(cr.take(), 0)
	if err != nil {
		if cr.err != nil {
			return &netError{op: "download blob", err: fmt.Errorf("interrupted: %w", cr.err)}
		}
		return fmt.Errorf("download blob: %w", err)
	}
	if mime == "" {
		mime = resp.Header.Get("X-Blob-Mime")
	}
	if err := c.blobs.store.FinishPartial(hexd, mime); err != nil {
		return fmt.Errorf("download blob: %w", err)
	}
	_, err = c.blobs.store.Evict(c.opts.BlobCacheBytes, hexd)
	return err
}

// blobDecoderMemory and blobDecoderWindow bound the zstd window a
// downloaded blob may ask for, which the decoder allocates up front: the
// server compresses with zstd's default 8 MiB window, so a bigger claim
// (a 2 KB answer could make the phone allocate 64 MiB) is refused.
const (
	blobDecoderMemory = 64 << 20
	blobDecoderWindow = 8 << 20
)

// noteSyncedBlobs remembers the blobs that the records an install put
// reference, for the eager downloads after it: of a delta the records it
// changed, of a full sync those whose values the install saw mention a
// blob (Installed.Marked; every record if it could not tell). It reads the
// records as they are now, after the install.
func (c *Client) noteSyncedBlobs(in *state.Installed) {
	keys, all := in.Keys, in.AllKeys
	if in.Full {
		keys, all = in.Marked, in.MarkedAll
	}
	c.blobs.mu.Lock()
	defer c.blobs.mu.Unlock()
	if all {
		c.blobs.scanAll = true
		return
	}
	if len(keys) == 0 {
		return
	}
	recs, err := c.GetMany(keys)
	if err != nil {
		c.blobs.scanAll = true // read them all after the sync instead
		return
	}
	for _, r := range recs {
		refs, _ := wire.BlobRefsOf(r.Value)
		for _, ref := range refs {
			if c.blobs.eager == nil {
				c.blobs.eager = map[string]wire.BlobRef{}
			}
			c.blobs.eager[ref.Blob] = ref
		}
	}
}

// fetchEagerBlobs downloads the blobs noted since the last call that the
// org's policy says to fetch at once (EagerBlobBytes, by the size the
// reference states) and that fit in the cache. A blob the server will not
// give (gone, or not this user's) is skipped; a network failure leaves the
// rest for the next sync.
func (c *Client) fetchEagerBlobs(ctx context.Context) error {
	limit := c.Policy().EagerBlobBytes
	todo := c.takeEager()
	for id, r := range todo {
		hexd, err := wire.ParseBlobID(id)
		if err != nil || limit <= 0 || r.Bytes <= 0 || r.Bytes > limit {
			continue
		}
		if _, err := c.blobs.store.Get(hexd); err == nil {
			continue
		}
		if c.blobs.store.CachedBytes()+r.Bytes > c.opts.BlobCacheBytes {
			continue
		}
		err = c.fetchBlob(ctx, hexd, r.Mime)
		if errors.Is(err, ErrNoConnection) || errors.Is(err, ErrServer) || errors.Is(err, ErrOfflineMode) || ctx.Err() != nil {
			c.blobs.mu.Lock()
			for id, r := range todo {
				if c.blobs.eager == nil {
					c.blobs.eager = map[string]wire.BlobRef{}
				}
				c.blobs.eager[id] = r
			}
			c.blobs.mu.Unlock()
			return err
		}
		delete(todo, id)
	}
	return nil
}

// takeEager returns and clears the noted blobs; after a full sync, those
// every record references.
func (c *Client) takeEager() map[string]wire.BlobRef {
	c.blobs.mu.Lock()
	todo, all := c.blobs.eager, c.blobs.scanAll
	c.blobs.eager, c.blobs.scanAll = nil, false
	c.blobs.mu.Unlock()
	if todo == nil {
		todo = map[string]wire.BlobRef{}
	}
	if all {
		c.Scan("", func(_ string, value []byte) bool {
			refs, _ := wire.BlobRefsOf(value)
			for _, r := range refs {
				todo[r.Blob] = r
			}
			return true
		})
	}
	return todo
}
