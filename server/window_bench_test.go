package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
)

// BenchmarkSyncVerifyWindow measures what reading and verifying the start
// of a pack before the 200 costs: an initial sync of 16 MiB and a one-record
// delta, each with no window and with the default, on the directory store
// over loopback TCP. ttfb-ms is the time until the answer's headers arrive,
// total-ms until the last byte; B/op includes the window's copy.
//
//	go test -run '^$' -bench SyncVerifyWindow -benchtime 20x ./server
func BenchmarkSyncVerifyWindow(b *testing.B) {
	ctx := context.Background()
	store, err := fsstore.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	secret := []byte("bench-chunk-secret")
	bo := snapshot.DefaultBuildOptions()
	bo.Org, bo.User, bo.Secret = "acme", "alice", secret
	recs := gen.Dataset(gen.Options{Size: 16 << 20, Seed: 1})
	for _, r := range [][]gen.Record{recs, gen.EditOneField(recs, 1)} {
		if _, _, err := diff.BuildVersion(ctx, store, bo, gen.NewSource(r)); err != nil {
			b.Fatal(err)
		}
	}
	for _, window := range []int64{0, DefaultOptions().SyncVerifyBytes} {
		url, tok := benchSyncServer(b, store, secret, window)
		for _, from := range []int{0, 1} {
			b.Run(fmt.Sprintf("from=%d/window=%d", from, window), func(b *testing.B) {
				benchSync(b, fmt.Sprintf("%s/v1/sync?from=%d", url, from), tok)
			})
		}
	}
}

func benchSyncServer(b *testing.B, store snapshot.Store, secret []byte, window int64) (string, string) {
	opts := DefaultOptions()
	opts.Store, opts.JWTSecret, opts.ChunkSecret = store, testSecret, secret
	opts.SyncVerifyBytes = window
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.updateOrgSettings(context.Background(), "acme", settingsUpdate{OfflineMode: ptr(true)}); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(ln)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	tok, _ := MintToken(testSecret, Claims{Org: "acme", User: "alice"}, time.Hour)
	return "http://" + ln.Addr().String(), tok
}

func benchSync(b *testing.B, url, tok string) {
	b.ReportAllocs()
	var ttfb, total time.Duration
	var n int64
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("%v %v", err, resp)
		}
		ttfb += time.Since(start)
		n, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	b.SetBytes(n)
	b.ReportMetric(float64(ttfb.Microseconds())/1000/float64(b.N), "ttfb-ms")
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "total-ms")
}
