// Package bench measures deltasync end to end: it generates data sets,
// serves them from a real server on loopback, and runs the edit scenarios
// of two kinds of app through the wire, counting every byte that crosses it
// (headers included) in each direction and saying where the bytes of each
// download went (HTTP headers, transfer framing, pack header, manifest
// delta, chunk payload, pack framing). Beside each figure it puts the
// baselines: zstd -3 of the new stream and, when the zstd binary is
// installed, zstd -19 --patch-from of the old and new NDJSON.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	// Seeds is how many gen seeds (Seed, Seed+1, …) of each family the
	// initial sync is measured on; 3 if 0.
	Seeds int
	// ZstdBinary, when set, is the zstd command that gives the
	// zstd -19 --patch-from column (slow: a minute or two per scenario at
	// 64 MB; two run at a time) and the C zstd -3 of each initial sync's
	// stream.
	ZstdBinary string
	// Parallel is how many patch-from commands run at once (2 if 0).
	Parallel int
}

// Scenario is one row of the report.
type Scenario struct {
	Family      string  `json:"family"`
	Name        string  `json:"name"`
	Ops         int     `json:"ops"`
	UpBytes     int64   `json:"up_bytes"`     // the patch request, all of it
	DownBytes   int64   `json:"down_bytes"`   // the sync from the previous version, all of it
	FullBytes   int64   `json:"full_bytes"`   // a full download of the new version
	ZstdBytes   int64   `json:"zstd3_bytes"`  // zstd -3 of the new canonical stream
	ApplyMillis float64 `json:"apply_millis"` // patch request round trip
	SyncMillis  float64 `json:"sync_millis"`  // the down sync, request to last byte
	Version     uint64  `json:"version"`
	// Down says where DownBytes went.
	Down Download `json:"down_breakdown"`
	// DownFormat2 is the same sync as a client that asks for no format
	// (format 2) gets it.
	DownFormat2 int64 `json:"down_format2_bytes"`
	// PatchFromBytes is zstd -19 --patch-from=OLD NEW of the NDJSON of the
	// two versions (0: not measured).
	PatchFromBytes int64 `json:"zstd19_patch_from_bytes,omitempty"`
}

// Download is where the bytes of one sync went: the parts add up to the
// bytes on the wire.
type Download struct {
	HTTPHeaders int64 `json:"http_headers"`     // status line and headers
	Transfer    int64 `json:"transfer_framing"` // chunked transfer encoding
	wire.PackBytes
}

// InitialSync is a full download of version 1 of one generated data set.
type InitialSync struct {
	Family      string  `json:"family"`
	Seed        int64   `json:"seed"`
	Records     int     `json:"records"`
	StreamBytes int64   `json:"stream_bytes"`
	SyncBytes   int64   `json:"sync_bytes"`
	ZstdBytes   int64   `json:"zstd3_bytes"` // zstd -3 (klauspost/compress, single-threaded) of the canonical stream
	Ratio       float64 `json:"ratio"`       // sync to zstd -3
	// CZstdBytes is the zstd command's -3 of the canonical stream (0: no
	// zstd command), which compresses this data about 8% better than
	// klauspost's level 3.
	CZstdBytes int64   `json:"c_zstd3_bytes,omitempty"`
	CZstdRatio float64 `json:"c_zstd3_ratio,omitempty"`
	Download   Download
}

// Report is the result of Run.
type Report struct {
	Size            int64         `json:"size"`
	Records         int           `json:"records"`
	StreamBytes     int64         `json:"stream_bytes"`
	BuildMBps       float64       `json:"build_mb_per_s"`
	ZstdMBps        float64       `json:"zstd3_mb_per_s"`
	BuildRatio      float64       `json:"build_to_zstd3"`
	InitialSync     int64         `json:"initial_sync_bytes"`
	InitialZstd     int64         `json:"initial_zstd3_bytes"`
	InitialSyncs    []InitialSync `json:"initial_syncs"` // every family and seed tried
	Scenarios       []Scenario    `json:"scenarios"`     // both families
	PatchFrom       string        `json:"patch_from"`    // the zstd that made the patch-from column, or why none
	TotalSeconds    float64       `json:"seconds"`
	ServerReplicas  int           `json:"server_replicas"`
	StoreDescriptor string        `json:"store"`
}

// A family is a kind of data set with its scenarios.
type family struct {
	name      string
	dataset   func(gen.Options) []gen.Record
	scenarios func(seed int64) []gen.Scenario
}

var families = []family{
	{"work", gen.Dataset, gen.Scenarios},
	{"crm", gen.CRMDataset, gen.CRMScenarios},
}

const (
	org       = "bench"
	jwtSecret = "bench-jwt-secret-0123456789abcdef0123"
)

// run is one Run in progress.
type run struct {
	o      Options
	store  snapshot.Store
	secret []byte
	enc    *zstd.Encoder // single-threaded zstd -3, the baseline
	base   string        // server URL
	admin  string        // admin token
	rep    *Report
	pairs  []versionPair // for patch-from, one per scenario row
}

// versionPair is the old and new records of one scenario.
type versionPair struct {
	row      int
	old, new []gen.Record
}

func (r *run) logf(format string, args ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, format+"\n", args...)
	}
}

// Run executes the benchmark.
func Run(ctx context.Context, o Options) (*Report, error) {
	start := time.Now()
	if o.Seeds <= 0 {
		o.Seeds = 3
	}
	store, err := fsstore.New(o.Dir)
	if err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	r := &run{o: o, store: store, secret: []byte("bench-chunk-secret"), enc: enc,
		rep: &Report{Size: o.Size, ServerReplicas: 1, StoreDescriptor: "file://" + o.Dir}}
	stop, err := r.startServer(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()
	for _, f := range families {
		if err := r.family(ctx, f); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if err := r.initialSyncs(ctx); err != nil {
		return nil, err
	}
	if err := r.patchFrom(ctx); err != nil {
		return nil, err
	}
	r.rep.TotalSeconds = time.Since(start).Seconds()
	return r.rep, nil
}

// startServer starts a real server on loopback and enables the org.
func (r *run) startServer(ctx context.Context) (stop func(), err error) {
	so := server.DefaultOptions()
	so.Store, so.JWTSecret, so.ChunkSecret = r.store, []byte(jwtSecret), r.secret
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
	stop = func() { srv.Shutdown(context.Background()) }
	r.base = "http://" + ln.Addr().String()
	r.admin, _ = server.MintToken([]byte(jwtSecret), server.Claims{Admin: true}, time.Hour)
	c := r.client("")
	if _, _, err := c.do(ctx, "PUT", "/v1/admin/orgs/"+org, r.admin, []byte(`{"offline_mode":true,"max_patch_ops":100000}`), ""); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// client returns a client with a token for user.
func (r *run) client(user string) *client {
	tok, _ := server.MintToken([]byte(jwtSecret), server.Claims{Org: org, User: user}, time.Hour)
	return &client{base: r.base, tok: tok}
}

// build builds recs as the next version of user, directly into the store.
func (r *run) build(ctx context.Context, user string, recs []gen.Record) error {
	bo := snapshot.DefaultBuildOptions()
	bo.Org, bo.User, bo.Secret = org, user, r.secret
	_, _, err := diff.BuildVersion(ctx, r.store, bo, gen.NewSource(recs))
	return err
}

func streamOf(recs []gen.Record) []byte {
	var b []byte
	for _, r := range recs {
		b = snapshot.AppendRecord(b, r.Key, r.Value)
	}
	return b
}
