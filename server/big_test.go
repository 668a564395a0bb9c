package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// countingConn counts every byte read from the server: status line,
// headers and body.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// wireGet sends one GET over a fresh connection and returns the bytes that
// came back, all included.
func wireGet(t *testing.T, e *testEnv, path, tok string) (int64, []byte) {
	t.Helper()
	conn, err := e.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	cc := countingConn{conn, &n}
	defer cc.Close()
	fmt.Fprintf(cc, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", path, tok)
	body, err := io.ReadAll(bufio.NewReader(cc))
	if err != nil {
		t.Fatal(err)
	}
	return n.Load(), body
}

// TestBigWireBytes checks the wire budget on a 64 MB generated data set:
// a one-record edit costs under 2 KB including headers and manifest delta,
// and the initial sync at most 1.10x zstd -3 of the canonical stream.
func TestBigWireBytes(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("64 MB acceptance test: run without -race/-short (scripts/test does)")
	}
	ctx := context.Background()
	store := memstore.New()
	secret := []byte("big-test-chunk-secret")
	opts := snapshot.DefaultBuildOptions()
	opts.Org, opts.User, opts.Secret = "acme", "alice", secret
	recs := gen.Dataset(gen.Options{Size: 64 << 20, Seed: 1})
	if _, _, err := diff.BuildVersion(ctx, store, opts, gen.NewSource(recs)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := diff.BuildVersion(ctx, store, opts, gen.NewSource(gen.EditOneField(recs, 7))); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, envConfig{store: store, opts: func(o *Options) { o.ChunkSecret = secret }})
	e.enableOrg("acme")
	tok := userToken(t, "acme", "alice")

	full, _ := wireGet(t, e, "/v1/sync?from=0&to=1", tok)
	var stream []byte
	for _, r := range recs {
		stream = snapshot.AppendRecord(stream, r.Key, r.Value)
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	z := int64(len(enc.EncodeAll(stream, nil)))
	t.Logf("initial sync: %d bytes on the wire; zstd -3 of the stream: %d (%.3fx)", full, z, float64(full)/float64(z))
	if float64(full) > 1.10*float64(z) {
		t.Errorf("initial sync %d bytes > 1.10 x zstd -3 (%d)", full, z)
	}

	edit, _ := wireGet(t, e, "/v1/sync?from=1", tok)
	t.Logf("one-record edit: %d bytes on the wire", edit)
	if edit >= 2048 {
		t.Errorf("one-record edit cost %d bytes on the wire, want < 2 KB", edit)
	}
}
