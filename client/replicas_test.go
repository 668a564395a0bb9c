package client

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/servertest"
	"github.com/deltasync/deltasync/server"
)

// startReplica runs one more server on ts's store, as a second replica
// behind a load balancer: its cached heads trail for the whole test and
// its feed watcher does not run again.
func (ts *testServer) startReplica() string {
	ts.t.Helper()
	s := servertest.Start(ts.t, servertest.Options{Store: ts.store, JWTSecret: netJWTSecret, Configure: func(o *server.Options) {
		o.ChunkSecret = netChunkSecret
		o.HeadCacheTTL = time.Hour
		o.Watch.Interval = time.Hour
	}})
	return s.Addr
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// splitBalancer sends patches to the client's server and everything else
// to another replica: the worst case of a load balancer without stickiness.
type splitBalancer struct{ other string }

func (b splitBalancer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != "/v1/patches" {
		u := *req.URL
		u.Host = b.other
		req = req.Clone(req.Context())
		req.URL = &u
		req.Host = b.other
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestReadYourWritesAcrossReplicas: an edit pushed through one replica is
// in the version the client then syncs to through another replica whose
// cached head trails: the client names the version its receipt gave
// (min=V). Before, the trailing replica answered "up to date" at V-1.
func TestReadYourWritesAcrossReplicas(t *testing.T) {
	ts := newTestServer(t)
	other := ts.startReplica()
	ts.upload("alice", gen.Dataset(gen.Options{Size: 8 << 10, Seed: 1}))
	var seen []string
	rt := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		seen = append(seen, req.Method+" "+req.URL.Path+"?"+req.URL.RawQuery)
		return splitBalancer{other}.RoundTrip(req)
	})
	c := ts.client("alice", rt)
	ctx := t.Context()
	if res, err := c.Sync(ctx); err != nil || res.Version != 1 {
		t.Fatalf("first sync (through the other replica): %+v, %v", res, err)
	}
	mustDo(t, c.Put("tasks/new", []byte(`{"done":true}`)))
	res, err := c.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 {
		t.Fatalf("after pushing through one replica and pulling through the other: version %d, want 2 (requests %q)", res.Version, seen)
	}
	last, _ := url.ParseQuery(seen[len(seen)-1][len("GET /v1/sync?"):])
	if last.Get("min") != "2" {
		t.Errorf("the pull sent %q, want min=2", seen[len(seen)-1])
	}
}
