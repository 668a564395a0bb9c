package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/wire"
)

// blobScenario is the name of the row that adds a 2 MiB photo as a blob
// (issue 14): uploaded with tus, referenced by a new record, downloaded by
// the other device. Up counts the upload and the patch, down the sync and
// the blob's download.
const blobScenario = "add-2MiB-blob"

// blobBytes is the photo's size: random bytes, as a JPEG is to zstd.
const blobBytes = 2 << 20

// runBlobScenario runs the blob row on top of version and returns it.
func runBlobScenario(ctx context.Context, c *client, enc *zstd.Encoder, seed int64, version uint64, cur []gen.Record, compare bool) (Scenario, []gen.Record, error) {
	raw := make([]byte, blobBytes)
	r := rand.New(rand.NewPCG(uint64(seed), 0xb10b))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(raw)
	id := wire.BlobID(sum)
	row := Scenario{Name: blobScenario, Ops: 1}
	t0 := time.Now()
	up, err := c.uploadBlob(ctx, id, raw)
	if err != nil {
		return row, nil, err
	}
	ref, _ := json.Marshal(wire.BlobRef{Blob: id, Bytes: blobBytes, Mime: "image/jpeg"})
	rec := gen.Record{Key: fmt.Sprintf("attachments/blob-%d", seed), Value: fmt.Appendf(nil, `{"name":"photo.jpg","photo":%s}`, ref)}
	p := &diff.Patch{ID: fmt.Sprintf("bench-%s-%d", blobScenario, seed), Base: version,
		Ops: []diff.Op{{Op: "put", Key: rec.Key, Value: rec.Value}}}
	body, _ := json.Marshal(p)
	resp, pup, err := c.do(ctx, "POST", "/v1/patches", c.tok, enc.EncodeAll(body, nil), "zstd")
	if err != nil {
		return row, nil, fmt.Errorf("%s: %w", blobScenario, err)
	}
	row.ApplyMillis = float64(time.Since(t0).Microseconds()) / 1000
	var pr wire.PatchResponse
	if err := json.Unmarshal(resp, &pr); err != nil {
		return row, nil, fmt.Errorf("%s: patch answer: %w", blobScenario, err)
	}
	row.UpBytes, row.Version = up+pup, pr.Version
	get, err := c.getBlob(ctx, id)
	if err != nil {
		return row, nil, err
	}
	d, err := c.sync(ctx, version, pr.Version, wire.DeltaFormat)
	if err != nil {
		return row, nil, err
	}
	full, err := c.sync(ctx, 0, pr.Version, wire.DeltaFormat)
	if err != nil {
		return row, nil, err
	}
	// Down is the sync's breakdown; the blob's download is the rest of
	// DownBytes.
	row.Down, row.SyncMillis = d.breakdown, d.millis
	row.DownBytes, row.FullBytes = d.total+get, full.total+get
	if compare {
		row.ZstdBytes = int64(len(enc.EncodeAll(raw, nil)))
	}
	next := append(append([]gen.Record(nil), cur...), rec)
	return row, next, nil
}

// uploadBlob sends a blob with tus (create, one PATCH) and returns the
// bytes sent up, headers included.
func (c *client) uploadBlob(ctx context.Context, id string, raw []byte) (int64, error) {
	meta := "blob " + base64.StdEncoding.EncodeToString([]byte(id))
	_, up1, err := c.doHeaders(ctx, "POST", "/v1/blobs", nil, map[string]string{
		wire.HeaderTusResumable: wire.TusVersion, wire.HeaderUploadLength: strconv.Itoa(len(raw)), wire.HeaderUploadMetadata: meta})
	if err != nil {
		return 0, err
	}
	_, up2, err := c.doHeaders(ctx, "PATCH", "/v1/blobs/uploads/"+id[len(wire.BlobPrefix):], raw, map[string]string{
		wire.HeaderTusResumable: wire.TusVersion, wire.HeaderUploadOffset: "0", "Content-Type": wire.ContentTypeOffset})
	return up1 + up2, err
}

// getBlob downloads a blob and returns the bytes that came down.
func (c *client) getBlob(ctx context.Context, id string) (int64, error) {
	_, cnt, err := c.doCount(ctx, "GET", "/v1/blobs/"+id, nil, nil)
	if err != nil {
		return 0, err
	}
	return cnt.down.Load(), nil
}

func (c *client) doHeaders(ctx context.Context, method, path string, body []byte, hdr map[string]string) ([]byte, int64, error) {
	b, cnt, err := c.doCount(ctx, method, path, body, hdr)
	if err != nil {
		return nil, 0, err
	}
	return b, cnt.up.Load(), nil
}

// doCount sends one request on a fresh connection; any 2xx is success.
func (c *client) doCount(ctx context.Context, method, path string, body []byte, hdr map[string]string) ([]byte, *counter, error) {
	hc, cnt := countedClient()
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return data, cnt, nil
}
