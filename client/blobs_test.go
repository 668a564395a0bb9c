package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// countingProxy is a TCP proxy in front of the test server that counts
// every byte each way (headers included) and can cut the connections once
// a number of bytes went up.
type countingProxy struct {
	url       string
	up, down  atomic.Int64
	cutUpAt   atomic.Int64 // >0: close every connection once up reaches it
	cutDownAt atomic.Int64 // the same for bytes down
	mu        sync.Mutex
	conns     []net.Conn
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{url: "http://" + ln.Addr().String()}
	t.Cleanup(func() { ln.Close(); p.closeAll() })
	addr := target[len("http://"):]
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go p.pipe(s, c, &p.up, &p.cutUpAt)
			go p.pipe(c, s, &p.down, &p.cutDownAt)
		}
	}()
	return p
}

func (p *countingProxy) pipe(dst, src net.Conn, n, cutAt *atomic.Int64) {
	buf := make([]byte, 4096)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if cut := cutAt.Load(); cut > 0 && n.Load()+int64(k) >= cut {
				k = int(cut - n.Load())
				dst.Write(buf[:k])
				n.Add(int64(k))
				cutAt.Store(0)
				p.closeAll()
				return
			}
			dst.Write(buf[:k])
			n.Add(int64(k))
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *countingProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func randomFile(t *testing.T, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	path := filepath.Join(t.TempDir(), "photo.jpg")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, b
}

// proxiedClient opens a client of user that talks to ts through p.
func (ts *testServer) proxiedClient(user string, p *countingProxy) *Client {
	ts.t.Helper()
	c := ts.client(user, nil)
	if err := c.SetServer(p.url, ts.token(user)); err != nil {
		ts.t.Fatal(err)
	}
	return c
}

// TestBlobAcceptanceThroughProxy is issue 14's first acceptance: a 3 MB
// random file attached offline, synced, and fetched by a second device
// costs at most 1.02x the file plus 2 KB each way, counted by a proxy,
// and arrives byte-identical.
func TestBlobAcceptanceThroughProxy(t *testing.T) {
	ts := newTestServer(t)
	p := newCountingProxy(t, ts.url)
	const size = 3_000_000
	path, data := randomFile(t, size)
	a := ts.proxiedClient("alice", p)
	if _, err := a.Sync(context.Background()); err != nil { // offline mode needs one sync
		t.Fatal(err)
	}
	p.up.Store(0)
	p.down.Store(0)
	if err := a.SetOfflineMode(true); err != nil {
		t.Fatal(err)
	}
	ref, err := a.AttachFile(path, "image/jpeg")
	if err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.PendingBlobs != 1 || st.PendingBlobBytes != size {
		t.Fatalf("status after attach: %d pending blobs, %d bytes", st.PendingBlobs, st.PendingBlobBytes)
	}
	rec := fmt.Sprintf(`{"title":"broken pipe","photo":{"$blob":%q,"bytes":%d,"mime":"image/jpeg"}}`, ref.Blob, ref.Bytes)
	if err := a.Put("forms/1", []byte(rec)); err != nil {
		t.Fatal(err)
	}
	a.SetOfflineMode(false)
	if _, err := a.Sync(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if st := a.Status(); st.PendingBlobs != 0 || st.PendingBlobBytes != 0 || st.PendingEdits != 0 {
		t.Fatalf("after sync: %d pending blobs (%d bytes), %d edits", st.PendingBlobs, st.PendingBlobBytes, st.PendingEdits)
	}
	most := int64(size*1.02) + 2048
	up := p.up.Load()
	t.Logf("device 1: %d bytes up, %d down for a %d-byte file", up, p.down.Load(), size)
	if up > most {
		t.Errorf("bytes up %d > %d", up, most)
	}

	p.up.Store(0)
	p.down.Store(0)
	b := ts.proxiedClient("alice", p)
	if _, err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := b.Blob(context.Background(), ref.Blob)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("second device's copy differs")
	}
	down := p.down.Load()
	t.Logf("device 2: %d bytes down, %d up", down, p.up.Load())
	if down > most {
		t.Errorf("bytes down %d > %d", down, most)
	}
}

// TestBlobUploadInterruptedAtHalfResumes is issue 14's second acceptance:
// an upload cut at 50% and resumed sends at most 55% more.
func TestBlobUploadInterruptedAtHalfResumes(t *testing.T) {
	ts := newTestServer(t)
	p := newCountingProxy(t, ts.url)
	const size = 3_000_000
	_, data := randomFile(t, size)
	a := ts.proxiedClient("alice", p)
	ref, err := a.Attach(data, "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Put("forms/1", []byte(fmt.Sprintf(`{"file":{"$blob":%q,"bytes":%d}}`, ref.Blob, ref.Bytes))); err != nil {
		t.Fatal(err)
	}
	p.cutUpAt.Store(size / 2)
	if _, err := a.Sync(context.Background()); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("sync through a cut connection: %v, want ErrNoConnection", err)
	}
	if st := a.Status(); st.PendingBlobs != 1 || st.PendingEdits != 1 {
		t.Fatalf("after the cut: %d pending blobs, %d edits (the patch must wait for its blob)", st.PendingBlobs, st.PendingEdits)
	}
	// The server stores what arrived once its handler sees the break.
	waitFor(t, func() bool { return ts.uploadOffset("alice", ref.Blob) > size/2-64<<10 })
	before := p.up.Load()
	if _, err := a.Sync(context.Background()); err != nil {
		t.Fatalf("resumed sync: %v", err)
	}
	more := p.up.Load() - before
	t.Logf("resumed upload sent %d bytes (%.1f%% of the file)", more, 100*float64(more)/size)
	if more > size*55/100 {
		t.Errorf("resume sent %d bytes, more than 55%% of %d", more, size)
	}
	c := ts.client("alice", nil)
	if _, err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Blob(context.Background(), ref.Blob); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after the resumed upload: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// uploadOffset is how many bytes of the upload of blob id the server
// holds (the sum of its parts).
func (ts *testServer) uploadOffset(user, id string) int64 {
	ts.t.Helper()
	h, _ := wire.ParseBlobID(id)
	var n int64
	ts.store.List(context.Background(), testOrg+"/"+user+"/uploads/"+h+"/", func(oi snapshot.ObjectInfo) error {
		if _, ok := snapshot.ParseBlobPartKey(oi.Key); ok {
			n += oi.Size
		}
		return nil
	})
	return n
}

// attachAndSync attaches n random bytes on a new device of alice, puts a
// record referencing them, syncs, and returns the bytes and the reference.
func (ts *testServer) attachAndSync(key string, n int) ([]byte, wire.BlobRef) {
	ts.t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	a := ts.client("alice", nil)
	ref, err := a.Attach(data, "")
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := a.Put(key, []byte(fmt.Sprintf(`{"file":{"$blob":%q,"bytes":%d}}`, ref.Blob, ref.Bytes))); err != nil {
		ts.t.Fatal(err)
	}
	if _, err := a.Sync(context.Background()); err != nil {
		ts.t.Fatal(err)
	}
	return data, ref
}

// TestBlobEagerOrLazyByPolicy: a sync downloads the blobs its records
// reference up to the org's eager_blob_bytes (readable offline after), and
// leaves bigger ones to Blob.
func TestBlobEagerOrLazyByPolicy(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"eager_blob_bytes":100000}`)
	small, sref := ts.attachAndSync("forms/small", 100_000)
	_, bref := ts.attachAndSync("forms/big", 100_001)
	b := ts.client("alice", nil)
	if _, err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.SetOfflineMode(true); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Blob(context.Background(), sref.Blob); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("small blob offline after sync: %v", err)
	}
	if _, err := b.Blob(context.Background(), bref.Blob); !errors.Is(err, ErrOfflineMode) {
		t.Fatalf("big blob offline: %v, want ErrOfflineMode (it is fetched on demand)", err)
	}
	b.SetOfflineMode(false)
	if _, err := b.Blob(context.Background(), bref.Blob); err != nil {
		t.Fatalf("big blob on demand: %v", err)
	}
	// A delta sync (not the first, full one) fetches the new small blob too.
	small2, sref2 := ts.attachAndSync("forms/small2", 50_000)
	if _, err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.SetOfflineMode(true); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Blob(context.Background(), sref2.Blob); err != nil || !bytes.Equal(got, small2) {
		t.Fatalf("small blob of a delta sync, offline: %v", err)
	}
}

// TestBlobDownloadResumes: a download cut halfway resumes from what the
// device holds (a Range request), and the cache keeps at most its limit,
// evicting the least recently used blob.
func TestBlobDownloadResumes(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"eager_blob_bytes":1}`)
	data, ref := ts.attachAndSync("forms/1", 2_000_000)
	p := newCountingProxy(t, ts.url)
	b := ts.proxiedClient("alice", p)
	if _, err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.down.Store(0)
	p.cutDownAt.Store(1_000_000)
	if _, err := b.Blob(context.Background(), ref.Blob); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("cut download: %v, want ErrNoConnection", err)
	}
	p.down.Store(0)
	got, err := b.Blob(context.Background(), ref.Blob)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("resumed download: %v", err)
	}
	if d := p.down.Load(); d > 1_000_000+4096 {
		t.Errorf("resumed download took %d bytes, want about the second half", d)
	}
}

// TestBlobCacheEvictsLeastRecentlyUsed: downloads beyond BlobCacheBytes
// evict the least recently used downloaded blob, never a pending one.
func TestBlobCacheEvictsLeastRecentlyUsed(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"eager_blob_bytes":1}`)
	_, r1 := ts.attachAndSync("forms/1", 60_000)
	_, r2 := ts.attachAndSync("forms/2", 60_000)
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = ts.url, ts.token("alice")
	opts.BlobCacheBytes = 100_000
	b, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pending, err := b.Attach(make([]byte, 150_000), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := b.Sync(ctx); err != nil { // eager_blob_bytes 1: nothing downloaded
		t.Fatal(err)
	}
	if _, err := b.Blob(ctx, r1.Blob); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Blob(ctx, r2.Blob); err != nil {
		t.Fatal(err)
	}
	if err := b.SetOfflineMode(true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Blob(ctx, r1.Blob); !errors.Is(err, ErrOfflineMode) {
		t.Errorf("the least recently used blob is still cached: %v", err)
	}
	if _, err := b.Blob(ctx, r2.Blob); err != nil {
		t.Errorf("the newest download was evicted: %v", err)
	}
	if _, err := b.Blob(ctx, pending.Blob); err != nil {
		t.Errorf("the pending blob was evicted: %v", err)
	}
}

// TestBlobCompressedWhenItHelps: a blob that compresses (a CSV export)
// travels zstd-compressed both ways and arrives byte-identical; random
// bytes (a photo) travel raw, as the acceptance test measures.
func TestBlobCompressedWhenItHelps(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"eager_blob_bytes":1}`)
	p := newCountingProxy(t, ts.url)
	var csv bytes.Buffer
	for i := 0; csv.Len() < 1_000_000; i++ {
		fmt.Fprintf(&csv, "%d,task %d,open,2026-12-%02d,assigned to user %d\n", i, i, i%28+1, i%97)
	}
	a := ts.proxiedClient("alice", p)
	ref, err := a.Attach(csv.Bytes(), "text/csv")
	if err != nil {
		t.Fatal(err)
	}
	a.Put("exports/1", []byte(fmt.Sprintf(`{"file":{"$blob":%q,"bytes":%d}}`, ref.Blob, ref.Bytes)))
	if _, err := a.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if up := p.up.Load(); up > int64(csv.Len())/4 {
		t.Errorf("%d bytes up for a %d-byte CSV: not compressed", up, csv.Len())
	}
	b := ts.proxiedClient("alice", p)
	if _, err := b.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.down.Store(0)
	got, err := b.Blob(context.Background(), ref.Blob)
	if err != nil || !bytes.Equal(got, csv.Bytes()) {
		t.Fatalf("download: %v, equal %v", err, bytes.Equal(got, csv.Bytes()))
	}
	if down := p.down.Load(); down > int64(csv.Len())/4 {
		t.Errorf("%d bytes down for a %d-byte CSV: not compressed", down, csv.Len())
	}
	t.Logf("a %d-byte CSV: %d bytes down", csv.Len(), p.down.Load())
}

// TestBlobOverOrgLimitBlocksItsEdit: a blob attached before the client
// knew the org's limit, and over it, blocks the edits that reference it
// (kept queued, listed by Blocked) while the other edits go through; once
// the limit is known, Attach refuses such a blob at once.
func TestBlobOverOrgLimitBlocksItsEdit(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"max_blob_bytes":100000}`)
	a := ts.client("alice", nil)
	ref, err := a.Attach(make([]byte, 150_000), "")
	if err != nil {
		t.Fatalf("attach before the policy is known: %v", err)
	}
	a.Put("forms/1", []byte(fmt.Sprintf(`{"photo":{"$blob":%q,"bytes":%d}}`, ref.Blob, ref.Bytes)))
	a.Put("forms/2", []byte(`{"note":"no photo"}`))
	a.Sync(context.Background())
	st := a.Status()
	if st.PendingEdits != 1 || st.BlockedEdits != 1 {
		t.Fatalf("after sync: %d pending, %d blocked; want the photo's edit blocked, the other applied", st.PendingEdits, st.BlockedEdits)
	}
	if bl := a.Blocked(); len(bl) != 1 || bl[0].Key != "forms/1" || !strings.Contains(bl[0].Reason, ref.Blob) {
		t.Fatalf("Blocked = %+v", bl)
	}
	if !strings.Contains(ts.export("alice"), "no photo") {
		t.Fatal("the edit without a blob did not reach the server")
	}
	if _, err := a.Attach(make([]byte, 100_001), ""); err == nil {
		t.Fatal("Attach over the known limit accepted")
	}
}

// TestBlobFileLostBlocksItsEdit: a pending blob whose file was removed
// behind the client's back blocks the edits that reference it instead of
// stopping every push.
func TestBlobFileLostBlocksItsEdit(t *testing.T) {
	ts := newTestServer(t)
	a := ts.client("alice", nil)
	ref, _ := a.Attach([]byte("a photo that will vanish"), "")
	h, _ := wire.ParseBlobID(ref.Blob)
	a.Put("forms/1", []byte(fmt.Sprintf(`{"photo":{"$blob":%q,"bytes":%d}}`, ref.Blob, ref.Bytes)))
	a.Put("forms/2", []byte(`{"note":"fine"}`))
	if err := os.Remove(filepath.Join(a.Dir(), BlobDir, h)); err != nil {
		t.Fatal(err)
	}
	a.Sync(context.Background())
	if bl := a.Blocked(); len(bl) != 1 || bl[0].Key != "forms/1" || !strings.Contains(bl[0].Reason, "missing") {
		t.Fatalf("Blocked = %+v", bl)
	}
	if !strings.Contains(ts.export("alice"), "fine") {
		t.Fatal("the other edit did not go through")
	}
}

// TestBlobDamagedOnDeviceBlocksItsEdit: a pending blob whose file no longer
// hashes to its name is refused by the server (460) and then blocks its
// edits instead of being sent again and again.
func TestBlobDamagedOnDeviceBlocksItsEdit(t *testing.T) {
	ts := newTestServer(t)
	a := ts.client("alice", nil)
	ref, _ := a.Attach([]byte("a photo that will rot"), "")
	h, _ := wire.ParseBlobID(ref.Blob)
	a.Put("forms/1", []byte(fmt.Sprintf(`{"photo":{"$blob":%q,"bytes":%d}}`, ref.Blob, ref.Bytes)))
	if err := os.WriteFile(filepath.Join(a.Dir(), BlobDir, h), []byte("a photo that will ROT"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Sync(context.Background())
	if bl := a.Blocked(); len(bl) != 1 || !strings.Contains(bl[0].Reason, "damaged") {
		t.Fatalf("Blocked = %+v", bl)
	}
}

// TestWipeRemovesBlobs: Wipe removes the blobs with the rest of the state.
func TestWipeRemovesBlobs(t *testing.T) {
	ts := newTestServer(t)
	dir := t.TempDir()
	a := ts.client("alice", nil, dir)
	if _, err := a.Attach([]byte("a private photo"), ""); err != nil {
		t.Fatal(err)
	}
	if err := a.Wipe(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, BlobDir)); !os.IsNotExist(err) {
		t.Fatalf("blobs left after Wipe: %v", err)
	}
}

// TestBlobGoneFromServerIsUploadedAgain: an edit that references a blob
// the server no longer has (gc took it while the edit waited; here it is
// deleted by hand) is answered 409 blob_missing; the client marks the blob
// pending again and the next sync uploads it and applies the edit.
func TestBlobGoneFromServerIsUploadedAgain(t *testing.T) {
	ts := newTestServer(t)
	a := ts.client("alice", nil)
	data := []byte("a photo used twice")
	ref, _ := a.Attach(data, "")
	put := func(key string) {
		if err := a.Put(key, []byte(fmt.Sprintf(`{"photo":{"$blob":%q,"bytes":%d}}`, ref.Blob, ref.Bytes))); err != nil {
			t.Fatal(err)
		}
	}
	put("forms/1")
	if _, err := a.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.PendingBlobs != 0 {
		t.Fatalf("%d pending blobs after the patch was applied", st.PendingBlobs)
	}
	h, _ := wire.ParseBlobID(ref.Blob)
	ctx := context.Background()
	ts.store.Delete(ctx, snapshot.BlobKey(testOrg, h))
	ts.store.Delete(ctx, snapshot.BlobGrantKey(testOrg, "alice", h))
	put("forms/2")
	_, err := a.Sync(ctx)
	var he *HTTPError
	if !errors.As(err, &he) || he.Code != wire.CodeBlobMissing {
		t.Fatalf("sync with the blob gone: %v, want blob_missing", err)
	}
	if st := a.Status(); st.PendingBlobs != 1 || st.PendingEdits != 1 {
		t.Fatalf("after blob_missing: %d pending blobs, %d edits", st.PendingBlobs, st.PendingEdits)
	}
	if _, err := a.Sync(ctx); err != nil {
		t.Fatalf("second sync: %v", err)
	}
	if st := a.Status(); st.PendingBlobs != 0 || st.PendingEdits != 0 {
		t.Fatalf("after the second sync: %d pending blobs, %d edits", st.PendingBlobs, st.PendingEdits)
	}
	if !strings.Contains(ts.export("alice"), `"forms/2"`) {
		t.Fatal("the edit did not reach the server")
	}
	if _, err := ts.store.Stat(ctx, snapshot.BlobKey(testOrg, h)); err != nil {
		t.Fatalf("the blob is not on the server again: %v", err)
	}
}
