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
	url      string
	up, down atomic.Int64
	cutUpAt  atomic.Int64 // >0: close every connection once up reaches it
	mu       sync.Mutex
	conns    []net.Conn
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
			go p.pipe(s, c, &p.up, true)
			go p.pipe(c, s, &p.down, false)
		}
	}()
	return p
}

func (p *countingProxy) pipe(dst, src net.Conn, n *atomic.Int64, up bool) {
	buf := make([]byte, 4096)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if up {
				if cut := p.cutUpAt.Load(); cut > 0 && n.Load()+int64(k) >= cut {
					k = int(cut - n.Load())
					dst.Write(buf[:k])
					n.Add(int64(k))
					p.cutUpAt.Store(0)
					p.closeAll()
					return
				}
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
