package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/wire"
)

// TestEndToEndStores runs the whole cycle over real HTTP on loopback, once
// on the local directory store and once on each S3 server: upload a data
// set, sync from 0, apply patches, sync again; the client side rebuilds
// streams whose SHA-256 equals the server's version.
func TestEndToEndStores(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		s, err := fsstore.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		endToEnd(t, s)
	})
	t.Run("s3", func(t *testing.T) {
		s3test.Each(t, func(t *testing.T, srv s3test.Server) { endToEnd(t, srv.Store(t)) })
	})
}

func endToEnd(t *testing.T, store snapshot.Store) {
	_, addr := newTCPEnv(t, envConfig{store: store})
	base := "http://" + addr
	admin, user := adminToken(t), userToken(t, "acme", "alice")
	call := func(method, path, tok string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, base+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}
	if r, b := call("PUT", "/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true}`)); r.StatusCode != 200 {
		t.Fatalf("enable: %d %s", r.StatusCode, b)
	}
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 3})
	if r, b := call("PUT", "/v1/admin/orgs/acme/users/alice/dataset", admin, ndjsonOf(recs)); r.StatusCode != 200 {
		t.Fatalf("upload: %d %s", r.StatusCode, b)
	}

	lc := &localCopy{chunks: map[snapshot.ChunkID][]byte{}}
	pull := func() {
		t.Helper()
		r, body := call("GET", fmt.Sprintf("/v1/sync?from=%d", lc.version), user, nil)
		if r.StatusCode != 200 || r.Header.Get("Content-Type") != wire.ContentTypeDelta {
			t.Fatalf("sync from %d: %d %s", lc.version, r.StatusCode, body)
		}
		readPack(t, body, lc)
	}
	// serverSum reads the version straight from the store.
	serverSum := func(v uint64) [32]byte {
		t.Helper()
		secret, err := snapshot.LoadOrCreateSecret(t.Context(), store)
		if err != nil {
			t.Fatal(err)
		}
		m, err := snapshot.ReadManifest(t.Context(), store, "acme", "alice", v)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if err := snapshot.NewReader(store, m, secret).WriteStream(t.Context(), h); err != nil {
			t.Fatal(err)
		}
		var out [32]byte
		h.Sum(out[:0])
		return out
	}

	pull()
	if got, want := sha256.Sum256(lc.stream()), serverSum(1); got != want || lc.version != 1 {
		t.Fatalf("full sync: version %d, SHA-256 %x, server %x", lc.version, got, want)
	}
	for i, p := range []string{
		`{"id":"e2e-1","base":1,"ops":[{"op":"put","key":"tasks/zz-new","value":{"title":"offline task"}}]}`,
		`{"id":"e2e-2","base":1,"ops":[{"op":"delete","key":"` + recs[3].Key + `"},{"op":"merge","key":"tasks/zz-new","patch":{"status":"done"}}]}`,
	} {
		r, b := call("POST", "/v1/patches", user, []byte(p))
		var pr wire.PatchResponse
		if r.StatusCode != 200 || json.Unmarshal(b, &pr) != nil || pr.Version != uint64(i+2) {
			t.Fatalf("patch %d: %d %s", i, r.StatusCode, b)
		}
	}
	pull()
	if got, want := sha256.Sum256(lc.stream()), serverSum(3); got != want || lc.version != 3 {
		t.Fatalf("delta sync: version %d, SHA-256 %x, server %x", lc.version, got, want)
	}
	if !bytes.Contains(lc.stream(), []byte(`{"status":"done","title":"offline task"}`)) {
		t.Fatal("the merged offline task is missing from the synced stream")
	}
}
