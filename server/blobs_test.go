package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
	"github.com/deltasync/deltasync/wire"
)

// blobOf returns random bytes and their blob digest.
func blobOf(t testing.TB, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

func blobMeta(hexd string) reqOpt {
	return withHeader(wire.HeaderUploadMetadata, "blob "+base64.StdEncoding.EncodeToString([]byte(wire.BlobPrefix+hexd))+
		",mime "+base64.StdEncoding.EncodeToString([]byte("image/jpeg")))
}

// createUpload POSTs the creation of an upload of n bytes of blob hexd.
func (e *testEnv) createUpload(tok, hexd string, n int) response {
	e.t.Helper()
	return e.do("POST", "/v1/blobs", nil, withToken(tok), blobMeta(hexd),
		withHeader(wire.HeaderTusResumable, wire.TusVersion), withHeader(wire.HeaderUploadLength, strconv.Itoa(n)))
}

func (e *testEnv) patchUpload(tok, hexd string, off int, body []byte, opts ...reqOpt) response {
	e.t.Helper()
	opts = append([]reqOpt{withToken(tok), withHeader(wire.HeaderUploadOffset, strconv.Itoa(off)),
		withHeader("Content-Type", wire.ContentTypeOffset), withHeader(wire.HeaderTusResumable, wire.TusVersion)}, opts...)
	return e.do("PATCH", "/v1/blobs/uploads/"+hexd, body, opts...)
}

func (e *testEnv) uploadOffset(tok, hexd string) (int, int) {
	e.t.Helper()
	r := e.do("HEAD", "/v1/blobs/uploads/"+hexd, nil, withToken(tok))
	if r.status != 200 {
		e.t.Fatalf("HEAD upload: %d %s", r.status, r.body)
	}
	off, _ := strconv.Atoi(r.header[wire.HeaderUploadOffset])
	n, _ := strconv.Atoi(r.header[wire.HeaderUploadLength])
	return off, n
}

// uploadBlob uploads b whole and checks the answers.
func (e *testEnv) uploadBlob(tok string, b []byte, hexd string) {
	e.t.Helper()
	r := e.createUpload(tok, hexd, len(b))
	if r.status != 201 && r.status != 200 {
		e.t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r.status == 200 {
		return
	}
	off, _ := strconv.Atoi(r.header[wire.HeaderUploadOffset])
	r = e.patchUpload(tok, hexd, off, b[off:])
	if r.status != 204 || r.header[wire.HeaderUploadOffset] != strconv.Itoa(len(b)) {
		e.t.Fatalf("patch: %d %v %s", r.status, r.header, r.body)
	}
}

func (e *testEnv) getBlob(tok, hexd string, opts ...reqOpt) response {
	e.t.Helper()
	return e.do("GET", "/v1/blobs/"+wire.BlobPrefix+hexd, nil, append([]reqOpt{withToken(tok)}, opts...)...)
}

func blobEnv(t *testing.T, st snapshot.Store) (*testEnv, string) {
	if st == nil {
		return blobEnvOpts(t, nil)
	}
	e := newTestEnv(t, envConfig{store: st, opts: func(o *Options) { o.BlobPartBytes = 64 << 10; o.SettingsTTL = 0 }})
	e.client.MaxResponseBodySize = 64 << 20
	e.enableOrg("acme")
	return e, userToken(t, "acme", "alice")
}

func blobEnvOpts(t *testing.T, opts func(*Options)) (*testEnv, string) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) {
		o.BlobPartBytes = 64 << 10
		o.SettingsTTL = 0
		if opts != nil {
			opts(o)
		}
	}})
	e.client.MaxResponseBodySize = 64 << 20
	e.enableOrg("acme")
	return e, userToken(t, "acme", "alice")
}

// TestBlobRoundTripAndRange: an uploaded blob reads back byte-identical,
// whole and from an offset (a resumed download), on every real store.
func TestBlobRoundTripAndRange(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) {
		e, tok := blobEnv(t, st)
		b, h := blobOf(t, 300_000)
		e.uploadBlob(tok, b, h)
		r := e.getBlob(tok, h)
		if r.status != 200 || !bytes.Equal(r.body, b) {
			t.Fatalf("GET: %d, %d bytes, equal %v", r.status, len(r.body), bytes.Equal(r.body, b))
		}
		r = e.getBlob(tok, h, withHeader("Range", "bytes=123456-"))
		if r.status != 206 || !bytes.Equal(r.body, b[123456:]) || r.header["Content-Range"] != fmt.Sprintf("bytes 123456-%d/%d", len(b)-1, len(b)) {
			t.Fatalf("ranged GET: %d %q, equal %v", r.status, r.header["Content-Range"], bytes.Equal(r.body, b[123456:]))
		}
		if r := e.getBlob(tok, h, withHeader("Range", "bytes=300000-")); r.status != 416 {
			t.Errorf("range past the end: %d, want 416", r.status)
		}
		// Creating it again: nothing to send.
		if r := e.createUpload(tok, h, len(b)); r.status != 200 || r.header[wire.HeaderUploadOffset] != strconv.Itoa(len(b)) {
			t.Errorf("create again: %d %v", r.status, r.header)
		}
		// The parts are gone once the blob is stored.
		n := 0
		st.List(t.Context(), "acme/alice/uploads/", func(snapshot.ObjectInfo) error { n++; return nil })
		if n != 0 {
			t.Errorf("%d upload objects left after the upload finished", n)
		}
	})
}

// brokenBody yields n bytes of b and then fails, as a connection that
// breaks mid-upload.
type brokenBody struct {
	b []byte
	n int
}

func (r *brokenBody) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("connection lost")
	}
	k := copy(p[:min(len(p), r.n)], r.b)
	r.b, r.n = r.b[k:], r.n-k
	return k, nil
}

// TestBlobUploadResumesAfterBrokenConnection: a PATCH whose connection
// breaks halfway keeps what arrived (not only whole parts), and the resumed
// upload sends only the rest.
func TestBlobUploadResumesAfterBrokenConnection(t *testing.T) {
	eachRealStore(t, func(t *testing.T, st snapshot.Store) { resumeAfterBrokenConnection(t, st) })
}

func resumeAfterBrokenConnection(t *testing.T, st snapshot.Store) {
	e, tok := blobEnv(t, st)
	b, h := blobOf(t, 1_000_000)
	if r := e.createUpload(tok, h, len(b)); r.status != 201 || r.header["Location"] != "/v1/blobs/uploads/"+h {
		t.Fatalf("create: %d %v %s", r.status, r.header, r.body)
	}
	half := 500_001
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	req.Header.SetMethod("PATCH")
	req.SetRequestURI("http://deltasync.test/v1/blobs/uploads/" + h)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set(wire.HeaderUploadOffset, "0")
	req.Header.SetContentType(wire.ContentTypeOffset)
	req.SetBodyStream(&brokenBody{b: b, n: half}, len(b))
	if err := e.client.DoTimeout(req, resp, 10*time.Second); err == nil {
		t.Fatalf("the broken PATCH succeeded: %d", resp.StatusCode())
	}
	// The client's write buffer may hold back the last few KiB it read;
	// everything that reached the server counts, not only whole parts.
	const clientBuffer = 8 << 10
	deadline := time.Now().Add(10 * time.Second)
	off := 0
	for time.Now().Before(deadline) {
		if off, _ = e.uploadOffset(tok, h); off >= half-clientBuffer {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if off < half-clientBuffer || off > half || off%(64<<10) == 0 {
		t.Fatalf("offset after the break %d, want what arrived of the %d bytes sent (not whole 64 KiB parts)", off, half)
	}
	if r := e.patchUpload(tok, h, 0, b); r.status != 409 {
		t.Errorf("PATCH at a stale offset: %d, want 409", r.status)
	}
	e.patchUpload(tok, h, off, b[off:])
	if r := e.getBlob(tok, h); !bytes.Equal(r.body, b) {
		t.Fatalf("resumed blob differs: %d, %d bytes", r.status, len(r.body))
	}
}

// TestBlobHashIsNoCapability: another user (and another org) cannot read
// a blob by its hash: 404, the same answer as for a hash nobody uploaded;
// nor get it by creating an upload of it, nor by referencing it in a patch.
// Once the backend puts a reference into their data set, they can.
func TestBlobHashIsNoCapability(t *testing.T) {
	e, alice := blobEnv(t, nil)
	bob := userToken(t, "acme", "bob")
	b, h := blobOf(t, 10_000)
	e.uploadBlob(alice, b, h)
	_, nobody := blobOf(t, 10)
	for name, hexd := range map[string]string{"stored": h, "never uploaded": nobody} {
		r := e.getBlob(bob, hexd)
		if r.status != 404 {
			t.Fatalf("%s: bob reads alice's blob: %d", name, r.status)
		}
		if d := r.errBody(t); d.Message != "no blob sha256:"+hexd+" among yours" {
			t.Errorf("%s: message %q tells more than not found", name, d.Message)
		}
	}
	if r := e.createUpload(bob, h, len(b)); r.status != 201 {
		t.Errorf("bob's creation of a stored blob: %d, want 201 (he must send the bytes)", r.status)
	}
	if r := e.getBlob(bob, h); r.status != 404 {
		t.Errorf("after creating an upload, bob reads: %d", r.status)
	}
	ref := fmt.Sprintf(`{"id":"p1","base":0,"ops":[{"op":"put","key":"forms/1","value":{"photo":{"$blob":"sha256:%s","bytes":%d}}}]}`, h, len(b))
	r := e.do("POST", "/v1/patches", []byte(ref), withToken(bob))
	if r.status != 409 || r.errBody(t).Code != wire.CodeBlobMissing {
		t.Fatalf("bob's patch referencing alice's blob: %d %s, want 409 blob_missing", r.status, r.body)
	}
	if r := e.getBlob(userToken(t, "other", "alice"), h); r.status != 404 && r.status != 403 {
		t.Errorf("another org's alice reads it: %d", r.status)
	}
	// The backend shares it with bob: now his data set references it.
	e.upload("acme", "bob", []gen.Record{{Key: "forms/1", Value: []byte(`{"photo":{"$blob":"sha256:` + h + `","bytes":10000}}`)}})
	if r := e.getBlob(bob, h); r.status != 200 || !bytes.Equal(r.body, b) {
		t.Fatalf("bob reads the blob his data set references: %d", r.status)
	}
	// And the backend reads any blob of its org.
	if r := e.do("GET", "/v1/admin/orgs/acme/blobs/sha256:"+h, nil, withToken(adminToken(t))); r.status != 200 || !bytes.Equal(r.body, b) {
		t.Errorf("admin read: %d", r.status)
	}
	if r := e.do("GET", "/v1/admin/orgs/acme/blobs/sha256:"+h, nil, withToken(alice)); r.status != 403 {
		t.Errorf("a user on the admin route: %d, want 403", r.status)
	}
}

// TestBlobPatchNeedsUpload: a patch that references a blob is applied
// only once the blob is uploaded.
func TestBlobPatchNeedsUpload(t *testing.T) {
	e, tok := blobEnv(t, nil)
	b, h := blobOf(t, 5000)
	patch := []byte(fmt.Sprintf(`{"id":"p1","base":0,"ops":[{"op":"put","key":"forms/1","value":{"photo": {"bytes":5000, "$blob":"sha256:%s"}}}]}`, h))
	if r := e.do("POST", "/v1/patches", patch, withToken(tok)); r.status != 409 {
		t.Fatalf("patch before the upload: %d %s", r.status, r.body)
	}
	e.uploadBlob(tok, b, h)
	if r := e.do("POST", "/v1/patches", patch, withToken(tok)); r.status != 200 {
		t.Fatalf("patch after the upload: %d %s", r.status, r.body)
	}
}

// TestBlobWrongBytesDiscarded: bytes that do not hash to the blob's name
// are never stored as the blob (460, the upload starts over); a PATCH whose
// Upload-Checksum does not match stores nothing.
func TestBlobWrongBytesDiscarded(t *testing.T) {
	e, tok := blobEnv(t, nil)
	b, h := blobOf(t, 200_000)
	e.createUpload(tok, h, len(b))
	bad := bytes.Clone(b)
	bad[199_999] ^= 1
	if r := e.patchUpload(tok, h, 0, bad); r.status != 460 || r.errBody(t).Code != wire.CodeBlobMismatch {
		t.Fatalf("wrong bytes: %d %s", r.status, r.body)
	}
	if _, err := e.store.Stat(t.Context(), snapshot.BlobKey("acme", h)); !errors.Is(err, snapshot.ErrNotExist) {
		t.Fatalf("wrong bytes stored as the blob: %v", err)
	}
	if r := e.getBlob(tok, h); r.status != 404 {
		t.Errorf("GET after a mismatch: %d", r.status)
	}
	e.createUpload(tok, h, len(b))
	sum := sha256.Sum256(b[:1000])
	ck := withHeader(wire.HeaderUploadChecksum, "sha256 "+base64.StdEncoding.EncodeToString(sum[:]))
	bad[10] ^= 1
	if r := e.patchUpload(tok, h, 0, bad[:1000], ck); r.status != 460 {
		t.Fatalf("checksum mismatch: %d %s", r.status, r.body)
	}
	if off, _ := e.uploadOffset(tok, h); off != 0 {
		t.Fatalf("offset %d after a checksum mismatch, want 0", off)
	}
	if r := e.patchUpload(tok, h, 0, b[:1000], ck); r.status != 204 {
		t.Fatalf("checksummed PATCH: %d %s", r.status, r.body)
	}
	e.patchUpload(tok, h, 1000, b[1000:])
	if r := e.getBlob(tok, h); !bytes.Equal(r.body, b) {
		t.Fatalf("blob after checksummed upload differs")
	}
}

// TestBlobLimitsByHeaders: a blob over the org's limit is refused at
// creation, and a PATCH body over it before a byte of it is read.
func TestBlobLimitsByHeaders(t *testing.T) {
	e, tok := blobEnv(t, nil)
	r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"max_blob_bytes":100000}`), withToken(adminToken(t)))
	if r.status != 200 {
		t.Fatalf("settings: %d %s", r.status, r.body)
	}
	_, h := blobOf(t, 10)
	if r := e.createUpload(tok, h, 100_001); r.status != 413 {
		t.Errorf("creation over the org's limit: %d, want 413", r.status)
	}
	// A raw request announcing a body over the limit gets its 413 before
	// sending it (Expect: 100-continue).
	conn, err := e.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PATCH /v1/blobs/uploads/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: %s\r\nUpload-Offset: 0\r\nContent-Length: 100001\r\nExpect: 100-continue\r\n\r\n", h, tok, wire.ContentTypeOffset)
	status := readStatus(t, conn)
	if status != 413 {
		t.Errorf("PATCH announcing too much: %d, want 413 before the body", status)
	}
	var pol struct{ Policy wire.Policy }
	if r := e.do("GET", "/v1/status", nil, withToken(tok)); r.status == 200 {
		json.Unmarshal(r.body, &pol)
		if pol.Policy.MaxBlobBytes != 100000 || pol.Policy.EagerBlobBytes != 100000 {
			t.Errorf("policy blob limits %d, eager %d", pol.Policy.MaxBlobBytes, pol.Policy.EagerBlobBytes)
		}
	}
}

func readStatus(t *testing.T, conn net.Conn) int {
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := resp.Header.Read(bufio.NewReader(conn)); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return resp.StatusCode()
}

// TestBlobRefsInChangeFeed: the backend sees the blobs a change set's new
// values reference in the feed entry, and reads them by the admin route.
func TestBlobRefsInChangeFeed(t *testing.T) {
	e, tok := blobEnvOpts(t, func(o *Options) { o.FeedSettle = time.Millisecond })
	b, h := blobOf(t, 1000)
	e.uploadBlob(tok, b, h)
	patch := []byte(fmt.Sprintf(`{"id":"p1","base":0,"ops":[{"op":"put","key":"forms/1","value":{"photo":{"$blob":"sha256:%s","bytes":1000}}}]}`, h))
	if r := e.do("POST", "/v1/patches", patch, withToken(tok)); r.status != 200 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	var feed struct {
		Entries []struct{ Blobs []string }
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(feed.Entries) == 0 && time.Now().Before(deadline) { // past the feed's settle time
		r := e.do("GET", "/v1/admin/changes", nil, withToken(adminToken(t)))
		if err := json.Unmarshal(r.body, &feed); err != nil || r.status != 200 {
			t.Fatalf("feed: %d %s", r.status, r.body)
		}
	}
	var got []string
	for _, en := range feed.Entries {
		got = append(got, en.Blobs...)
	}
	if len(got) != 1 || got[0] != "sha256:"+h {
		t.Fatalf("blobs in the feed: %v, want [sha256:%s]", got, h)
	}
}

// TestBlobUploadEdgeCases: an empty blob is finished at creation; bad
// requests get their 4xx and store nothing.
func TestBlobUploadEdgeCases(t *testing.T) {
	e, tok := blobEnv(t, nil)
	empty := sha256.Sum256(nil)
	eh := hex.EncodeToString(empty[:])
	if r := e.createUpload(tok, eh, 0); r.status != 201 || r.header[wire.HeaderUploadOffset] != "0" {
		t.Fatalf("empty blob: %d %v %s", r.status, r.header, r.body)
	}
	if r := e.getBlob(tok, eh); r.status != 200 || len(r.body) != 0 {
		t.Fatalf("GET empty blob: %d, %d bytes", r.status, len(r.body))
	}
	b, h := blobOf(t, 1000)
	cases := []struct {
		name   string
		r      response
		status int
	}{
		{"no metadata", e.do("POST", "/v1/blobs", nil, withToken(tok), withHeader(wire.HeaderUploadLength, "10")), 400},
		{"no length", e.do("POST", "/v1/blobs", nil, withToken(tok), blobMeta(h)), 400},
		{"negative length", e.createUpload(tok, h, -1), 400},
		{"bad id", e.do("POST", "/v1/blobs", nil, withToken(tok), withHeader(wire.HeaderUploadLength, "10"),
			withHeader(wire.HeaderUploadMetadata, "blob "+base64.StdEncoding.EncodeToString([]byte("sha256:XYZ")))), 400},
		{"patch before create", e.patchUpload(tok, h, 0, b), 404},
		{"head before create", e.do("HEAD", "/v1/blobs/uploads/"+h, nil, withToken(tok)), 404},
		{"bad hex", e.patchUpload(tok, "abc", 0, b), 400},
		{"get bad id", e.do("GET", "/v1/blobs/sha1:abc", nil, withToken(tok)), 400},
		{"no token", e.do("GET", "/v1/blobs/sha256:"+h, nil), 401},
	}
	for _, c := range cases {
		if c.r.status != c.status {
			t.Errorf("%s: %d %s, want %d", c.name, c.r.status, c.r.body, c.status)
		}
	}
	e.createUpload(tok, h, len(b))
	if r := e.patchUpload(tok, h, 0, b, withHeader("Content-Type", "application/octet-stream")); r.status != 415 {
		t.Errorf("wrong Content-Type: %d, want 415", r.status)
	}
	if r := e.patchUpload(tok, h, 0, append(bytes.Clone(b), 'x')); r.status != 413 {
		t.Errorf("body past the length: %d, want 413", r.status)
	}
	if r := e.patchUpload(tok, h, 0, []byte("x"), withHeader(wire.HeaderUploadChecksum, "md5 abc")); r.status != 400 {
		t.Errorf("unknown checksum algorithm: %d, want 400", r.status)
	}
	if off, _ := e.uploadOffset(tok, h); off != 0 {
		t.Errorf("refused PATCHes moved the offset to %d", off)
	}
}

// TestBlobStrangerCostsNoDataSetReads: asking again and again for a blob
// of the org one may not read reads one's data set once per head version,
// not once per request.
func TestBlobStrangerCostsNoDataSetReads(t *testing.T) {
	e, alice := blobEnv(t, nil)
	bob := userToken(t, "acme", "bob")
	e.upload("acme", "bob", gen.Dataset(gen.Options{Size: 64 << 10, Seed: 3}))
	b, h := blobOf(t, 1000)
	e.uploadBlob(alice, b, h)
	e.getBlob(bob, h)
	before := e.store.Calls(storetest.OpGetRange)
	for range 5 {
		if r := e.getBlob(bob, h); r.status != 404 {
			t.Fatalf("bob reads alice's blob: %d", r.status)
		}
	}
	if n := e.store.Calls(storetest.OpGetRange) - before; n != 0 {
		t.Errorf("5 refused reads read packs %d times, want 0", n)
	}
}

// TestPatchReferencingBlobsCostsBoundedStoreRequests: each blob a patch
// references costs store requests (its grant and its content), and a
// patch may reference as many as fit in its body (110,000 in 8 MiB), on
// every retry too. So a patch may reference at most maxPatchBlobRefs
// distinct blobs (413: the client splits), and a grant written within
// the last minute is not written again.
func TestPatchReferencingBlobsCostsBoundedStoreRequests(t *testing.T) {
	f := storetest.Wrap(memstore.New())
	var grantPuts atomic.Int32
	f.Before = func(_ context.Context, op storetest.Op, key string) error {
		if op.IsWrite() && strings.Contains(key, "/blobs/") {
			grantPuts.Add(1)
		}
		return nil
	}
	var aged atomic.Bool // grants read as an hour old
	f.StatFunc = func(ctx context.Context, key string) (snapshot.ObjectInfo, error) {
		info, err := f.Store.Stat(ctx, key)
		if err == nil && aged.Load() && strings.Contains(key, "/blobs/") {
			info.ModTime = info.ModTime.Add(-time.Hour)
		}
		return info, err
	}
	e := newTestEnv(t, envConfig{store: f, opts: func(o *Options) { o.SettingsTTL = 0 }, setup: func(srv *Server) {
		srv.maxPatchBlobRefs = 3
	}})
	e.enableOrg("acme")
	tok := userToken(t, "acme", "alice")
	var refs []string
	for range 4 {
		b, h := blobOf(t, 100)
		e.uploadBlob(tok, b, h)
		refs = append(refs, fmt.Sprintf(`{"$blob":"sha256:%s","bytes":100}`, h))
	}
	patch := func(id string, refs []string) []byte {
		return fmt.Appendf(nil, `{"id":%q,"base":0,"ops":[{"op":"put","key":"forms/1","value":{"photos":[%s]}}]}`, id, strings.Join(refs, ","))
	}
	grantPuts.Store(0)
	if r := e.do("POST", "/v1/patches", patch("four", refs), withToken(tok)); r.status != 413 || r.errBody(t).Code != wire.CodeTooLarge {
		t.Fatalf("a patch referencing 4 blobs, 3 allowed: %d %s, want 413", r.status, r.body)
	}
	if n := grantPuts.Load(); n != 0 {
		t.Errorf("the refused patch wrote %d grants", n)
	}
	if r := e.do("POST", "/v1/patches", patch("three", refs[:3]), withToken(tok)); r.status != 200 {
		t.Fatalf("a patch referencing 3 blobs: %d %s", r.status, r.body)
	}
	if n := grantPuts.Load(); n != 0 {
		t.Errorf("referencing blobs uploaded a moment ago rewrote %d grants", n)
	}
	// An old grant is refreshed, so gc keeps the blob until the commit.
	aged.Store(true)
	if r := e.do("POST", "/v1/patches", patch("one", refs[3:]), withToken(tok)); r.status != 200 {
		t.Fatalf("a patch referencing 1 blob: %d %s", r.status, r.body)
	}
	if n := grantPuts.Load(); n != 1 {
		t.Errorf("referencing a blob with an hour-old grant wrote %d grants, want 1", n)
	}
}

// TestOneUserDecodesAtMostTwoUploads: one token trickling compressed
// uploads could hold all of the server's decoder memory, and every other
// user's compressed uploads would wait on it; a user has at most
// maxDecodersPerUser decoding at once (429 with Retry-After past it).
func TestOneUserDecodesAtMostTwoUploads(t *testing.T) {
	e, tok := blobEnv(t, nil)
	var blobs [][]byte
	var hexes []string
	for range maxDecodersPerUser + 1 {
		b, h := blobOf(t, 5000)
		if r := e.createUpload(tok, h, len(b)); r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		blobs, hexes = append(blobs, b), append(hexes, h)
	}
	headers := map[string]string{"Authorization": "Bearer " + tok, wire.HeaderUploadOffset: "0",
		"Content-Type": wire.ContentTypeOffset, wire.HeaderTusResumable: wire.TusVersion}
	var held []net.Conn
	for _, h := range hexes[:maxDecodersPerUser] {
		held = append(held, stallRequest(t, e, "PATCH /v1/blobs/uploads/"+h, 1<<20, headers))
	}
	waitDecodeMemory(t, e.s, maxDecodersPerUser*windowClasses[0].cost())
	last := hexes[maxDecodersPerUser]
	body := zstdStreamBytes(t, blobs[maxDecodersPerUser])
	r := e.patchUpload(tok, last, 0, body, withHeader("Content-Encoding", "zstd"))
	if r.status != 429 || r.errBody(t).Code != wire.CodeRateLimited || r.header["Retry-After"] == "" {
		t.Fatalf("a third compressed upload: %d %s, want 429 with Retry-After", r.status, r.body)
	}
	// Another user is not held up.
	other := userToken(t, "acme", "bob")
	b, h := blobOf(t, 5000)
	if r := e.createUpload(other, h, len(b)); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := e.patchUpload(other, h, 0, zstdStreamBytes(t, b), withHeader("Content-Encoding", "zstd")); r.status != 204 {
		t.Fatalf("another user's compressed upload: %d %s", r.status, r.body)
	}
	held[0].Close()
	waitDecodeMemory(t, e.s, (maxDecodersPerUser-1)*windowClasses[0].cost())
	if r := e.patchUpload(tok, last, 0, body, withHeader("Content-Encoding", "zstd")); r.status != 204 {
		t.Fatalf("the third upload once one ended: %d %s", r.status, r.body)
	}
}
