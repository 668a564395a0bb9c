// Package bench measures deltasync end to end: it generates a data set,
// serves it from a real server on loopback, and runs the edit scenarios of
// a work-management app through the wire, counting every byte that crosses
// it (headers included) in each direction.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/wire"
)

// Options configure Run.
type Options struct {
	Size    int64  // data set size in bytes of NDJSON
	Seed    int64  // data and scenario seed
	Dir     string // store directory (a temporary one if empty)
	Log     io.Writer
	Compare bool // also compress each new stream with zstd -3 (the comparison column)
}

// Scenario is one row of the report.
type Scenario struct {
	Name        string  `json:"name"`
	Ops         int     `json:"ops"`
	UpBytes     int64   `json:"up_bytes"`     // the patch request, all of it
	DownBytes   int64   `json:"down_bytes"`   // the sync from the previous version, all of it
	FullBytes   int64   `json:"full_bytes"`   // a full download of the new version
	ZstdBytes   int64   `json:"zstd3_bytes"`  // zstd -3 of the new canonical stream
	ApplyMillis float64 `json:"apply_millis"` // patch request round trip
	Version     uint64  `json:"version"`
}

// Report is the result of Run.
type Report struct {
	Size            int64      `json:"size"`
	Records         int        `json:"records"`
	StreamBytes     int64      `json:"stream_bytes"`
	BuildMBps       float64    `json:"build_mb_per_s"`
	ZstdMBps        float64    `json:"zstd3_mb_per_s"`
	BuildRatio      float64    `json:"build_to_zstd3"`
	InitialSync     int64      `json:"initial_sync_bytes"`
	InitialZstd     int64      `json:"initial_zstd3_bytes"`
	Scenarios       []Scenario `json:"scenarios"`
	TotalSeconds    float64    `json:"seconds"`
	ServerReplicas  int        `json:"server_replicas"`
	StoreDescriptor string     `json:"store"`
}

const (
	org, user = "bench", "alice"
	jwtSecret = "bench-jwt-secret-0123456789abcdef0123"
)

// counter counts the bytes a connection reads and writes.
type counter struct{ up, down atomic.Int64 }

type countingConn struct {
	net.Conn
	c *counter
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.down.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.up.Add(int64(n))
	return n, err
}

// Run executes the benchmark.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	dir := o.Dir
	store, err := fsstore.New(dir)
	if err != nil {
		return nil, err
	}
	secret := []byte("bench-chunk-secret")
	rep := &Report{Size: o.Size, ServerReplicas: 1, StoreDescriptor: "file://" + dir}

	logf("generating %d bytes of data (seed %d)", o.Size, o.Seed)
	recs := gen.Dataset(gen.Options{Size: o.Size, Seed: o.Seed})
	stream := streamOf(recs)
	rep.Records, rep.StreamBytes = len(recs), int64(len(stream))

	// Build throughput, against single-threaded zstd -3 of the same stream.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	z := enc.EncodeAll(stream, nil)
	zsec := time.Since(t0).Seconds()
	rep.ZstdMBps = float64(len(stream)) / 1e6 / zsec
	rep.InitialZstd = int64(len(z))
	logf("building version 1")
	bo := snapshot.DefaultBuildOptions()
	bo.Org, bo.User, bo.Secret = org, user, secret
	t0 = time.Now()
	if _, _, err := diff.BuildVersion(ctx, store, bo, gen.NewSource(recs)); err != nil {
		return nil, err
	}
	bsec := time.Since(t0).Seconds()
	rep.BuildMBps = float64(len(stream)) / 1e6 / bsec
	rep.BuildRatio = zsec / bsec

	// A real server on loopback.
	so := server.DefaultOptions()
	so.Store, so.JWTSecret, so.ChunkSecret = store, []byte(jwtSecret), secret
	so.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	so.MaxPatchBytes, so.MaxPatchOps = 64<<20, 100_000
	srv, err := server.New(so)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	base := "http://" + ln.Addr().String()
	admin, _ := server.MintToken([]byte(jwtSecret), server.Claims{Admin: true}, time.Hour)
	tok, _ := server.MintToken([]byte(jwtSecret), server.Claims{Org: org, User: user}, time.Hour)
	c := &client{base: base, tok: tok}
	if _, _, err := c.do(ctx, "PUT", "/v1/admin/orgs/"+org, admin, []byte(`{"offline_mode":true,"max_patch_ops":100000}`), ""); err != nil {
		return nil, err
	}

	logf("initial sync")
	full, err := c.sync(ctx, 0, 1)
	if err != nil {
		return nil, err
	}
	rep.InitialSync = full

	cur, version := recs, uint64(1)
	for _, sc := range gen.Scenarios(o.Seed) {
		next := sc.Apply(cur)
		p := patchFor(fmt.Sprintf("bench-%s-%d", sc.Name, o.Seed), version, cur, next)
		body, _ := json.Marshal(p)
		body = enc.EncodeAll(body, nil)
		t0 := time.Now()
		resp, up, err := c.do(ctx, "POST", "/v1/patches", tok, body, "zstd")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sc.Name, err)
		}
		apply := time.Since(t0)
		var pr wire.PatchResponse
		if err := json.Unmarshal(resp, &pr); err != nil {
			return nil, fmt.Errorf("%s: patch answer: %w", sc.Name, err)
		}
		row := Scenario{Name: sc.Name, Ops: len(p.Ops), UpBytes: up, ApplyMillis: float64(apply.Microseconds()) / 1000, Version: pr.Version}
		if row.DownBytes, err = c.sync(ctx, version, pr.Version); err != nil {
			return nil, fmt.Errorf("%s: %w", sc.Name, err)
		}
		if row.FullBytes, err = c.sync(ctx, 0, pr.Version); err != nil {
			return nil, fmt.Errorf("%s: %w", sc.Name, err)
		}
		if o.Compare {
			row.ZstdBytes = int64(len(enc.EncodeAll(streamOf(next), nil)))
		}
		logf("%-24s up %8d  down %8d", sc.Name, row.UpBytes, row.DownBytes)
		rep.Scenarios = append(rep.Scenarios, row)
		cur, version = next, pr.Version
	}
	row, _, err := runBlobScenario(ctx, c, enc, o.Seed, version, cur, o.Compare) // blob.go
	if err != nil {
		return nil, err
	}
	logf("%-24s up %8d  down %8d", row.Name, row.UpBytes, row.DownBytes)
	rep.Scenarios = append(rep.Scenarios, row)
	rep.TotalSeconds = time.Since(start).Seconds()
	return rep, nil
}

// countedClient returns an HTTP client whose connections (one per request)
// count every byte in both directions.
func countedClient() (*http.Client, *counter) {
	cnt := &counter{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{conn, cnt}, nil
		},
		DisableCompression: true,
		DisableKeepAlives:  true,
	}
	return &http.Client{Transport: tr}, cnt
}

type client struct {
	base, tok string
}

// do sends one request on a fresh connection and counts its bytes.
func (c *client) do(ctx context.Context, method, path, tok string, body []byte, encoding string) ([]byte, int64, error) {
	hc, cnt := countedClient()
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != 200 {
		return nil, 0, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return data, cnt.up.Load(), nil
}

// sync downloads the delta from one version to another and returns the
// bytes that came down the wire (status line and headers included).
func (c *client) sync(ctx context.Context, from, to uint64) (int64, error) {
	hc, cnt := countedClient()
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/v1/sync?from=%d&to=%d", c.base, from, to), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.tok)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("sync %d..%d: %d %s", from, to, resp.StatusCode, b)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return cnt.down.Load(), nil
}

// patchFor expresses the change from cur to next as a client would send it:
// a merge of the changed top-level fields of an edited object, a put of a
// new record, a delete of a removed one.
func patchFor(id string, base uint64, cur, next []gen.Record) *diff.Patch {
	p := &diff.Patch{ID: id, Base: base}
	i, j := 0, 0
	for i < len(cur) || j < len(next) {
		switch {
		case j >= len(next) || i < len(cur) && cur[i].Key < next[j].Key:
			p.Ops = append(p.Ops, diff.Op{Op: diff.OpDelete, Key: cur[i].Key})
			i++
		case i >= len(cur) || next[j].Key < cur[i].Key:
			p.Ops = append(p.Ops, diff.Op{Op: diff.OpPut, Key: next[j].Key, Value: next[j].Value})
			j++
		default:
			if !bytes.Equal(cur[i].Value, next[j].Value) {
				p.Ops = append(p.Ops, editOp(cur[i], next[j]))
			}
			i++
			j++
		}
	}
	return p
}

func editOp(old, new gen.Record) diff.Op {
	var a, b map[string]json.RawMessage
	if json.Unmarshal(old.Value, &a) != nil || json.Unmarshal(new.Value, &b) != nil {
		return diff.Op{Op: diff.OpPut, Key: new.Key, Value: new.Value}
	}
	mp := map[string]json.RawMessage{}
	for k, v := range b {
		if !bytes.Equal(a[k], v) {
			mp[k] = v
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			mp[k] = json.RawMessage("null")
		}
	}
	patch, _ := json.Marshal(mp)
	return diff.Op{Op: diff.OpMerge, Key: new.Key, Patch: patch}
}

func streamOf(recs []gen.Record) []byte {
	var b []byte
	for _, r := range recs {
		b = snapshot.AppendRecord(b, r.Key, r.Value)
	}
	return b
}
