package server

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

func patchEnv(t *testing.T) (*testEnv, *snapshot.CountingStore, string) {
	counting := snapshot.NewCountingStore(nil)
	e := newTestEnv(t, envConfig{opts: func(o *Options) {
		o.ChunkSecret = []byte("chunk-secret")
		o.MaxPatchBytes = 64 << 10
		o.MaxRecordBytes = 32 << 10 // one edit's body bound stays at 64 KiB
		counting.Store = o.Store
		o.Store = counting
	}})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{
		{Key: "tasks/1", Value: []byte(`{"status":"open","title":"Fix the roof"}`)},
		{Key: "tasks/2", Value: []byte(`{"status":"open","title":"Paint"}`)},
	})
	return e, counting, userToken(t, "acme", "alice")
}

func TestPatchApplyAndRetry(t *testing.T) {
	e, _, tok := patchEnv(t)
	body := []byte(`{"id":"p1","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"done"}},{"op":"put","key":"tasks/3","value":{"title":"New"}},{"op":"delete","key":"tasks/2"}]}`)
	r := e.do("POST", "/v1/patches", body, withToken(tok))
	var pr wire.PatchResponse
	if r.status != 200 || json.Unmarshal(r.body, &pr) != nil || pr.Version != 2 || !pr.Created || len(pr.Receipts) != 3 {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	// A retry (lost answer) gets the same answer and changes nothing.
	r = e.do("POST", "/v1/patches", zstdBytes(t, body), withToken(tok), withHeader("Content-Encoding", "zstd"))
	var again wire.PatchResponse
	if r.status != 200 || json.Unmarshal(r.body, &again) != nil || again.Version != 2 || !again.Duplicate {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
	if h, _ := snapshot.Head(t.Context(), e.store, "acme", "alice"); h != 2 {
		t.Fatalf("head after retry = %d, want 2", h)
	}
	// The same id with another body is refused.
	r = e.do("POST", "/v1/patches", []byte(`{"id":"p1","base":1,"ops":[{"op":"delete","key":"tasks/1"}]}`), withToken(tok))
	if r.status != 409 {
		t.Fatalf("reused id: %d %s", r.status, r.body)
	}
}

func TestPatchConflictPolicies(t *testing.T) {
	e, _, tok := patchEnv(t)
	// The server changes tasks/1's status meanwhile (version 2).
	e.upload("acme", "alice", []gen.Record{
		{Key: "tasks/1", Value: []byte(`{"status":"blocked","title":"Fix the roof"}`)},
		{Key: "tasks/2", Value: []byte(`{"status":"open","title":"Paint"}`)},
	})
	offline := []byte(`{"id":"off-1","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"done","title":"Fix the roof now"}}]}`)
	r := e.do("POST", "/v1/patches", offline, withToken(tok))
	var pr wire.PatchResponse
	if r.status != 200 || json.Unmarshal(r.body, &pr) != nil || len(pr.Conflicts) != 1 {
		t.Fatalf("client-wins: %d %s", r.status, r.body)
	}
	c := pr.Conflicts[0]
	if c.Policy != "client-wins" || !strings.Contains(string(c.ServerValue), "blocked") || !strings.Contains(string(c.ClientValue), "done") {
		t.Fatalf("conflict receipt lacks both values: %+v", c)
	}
	// Under reject, a conflicting patch is refused with the conflict list.
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"conflict_policy":"reject"}`), withToken(adminToken(t))); r.status != 200 {
		t.Fatal(r.status)
	}
	e.s.settings = newSettingsCache(0, time.Now)
	r = e.do("POST", "/v1/patches", []byte(`{"id":"off-2","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"cancelled"}}]}`), withToken(tok))
	var rb rejectedBody
	if r.status != 409 || json.Unmarshal(r.body, &rb) != nil || rb.Error.Code != "conflict" || len(rb.Conflicts) != 1 {
		t.Fatalf("reject: %d %s", r.status, r.body)
	}
}

// TestPatchMalformed: every bad request gets its 4xx and changes nothing.
func TestPatchMalformed(t *testing.T) {
	e, counting, tok := patchEnv(t)
	good := `{"id":"x","base":1,"ops":[{"op":"put","key":"k","value":1}]}`
	huge := `{"id":"x","base":1,"ops":[{"op":"put","key":"k","value":"` + strings.Repeat("a", 70<<10) + `"}]}`
	z := zstdBytes(t, []byte(good))
	tests := []struct {
		name string
		body []byte
		opts []reqOpt
		want int
	}{
		{"bad JSON", []byte(`{"id":`), nil, 400},
		{"wrong types", []byte(`{"id":5,"base":"one","ops":{}}`), nil, 400},
		{"unknown field", []byte(`{"id":"x","base":1,"ops":[],"extra":1}`), nil, 400},
		{"unknown op", []byte(`{"id":"x","base":1,"ops":[{"op":"upsert","key":"k","value":1}]}`), nil, 400},
		{"bad key", []byte(`{"id":"x","base":1,"ops":[{"op":"put","key":"","value":1}]}`), nil, 400},
		{"merge with a non-object", []byte(`{"id":"x","base":1,"ops":[{"op":"merge","key":"k","patch":[1]}]}`), nil, 400},
		{"huge body", []byte(huge), nil, 413},
		{"huge body, streamed", nil, []reqOpt{withStream([]byte(huge))}, 413},
		{"base newer than head", []byte(`{"id":"x","base":9,"ops":[{"op":"put","key":"k","value":1}]}`), nil, 404},
		{"no token", []byte(good), []reqOpt{withHeader("Authorization", "")}, 401},
		{"bad token", []byte(good), []reqOpt{withToken("not.a.jwt")}, 401},
		{"wrong content encoding", []byte(good), []reqOpt{withHeader("Content-Encoding", "br")}, 415},
		{"zstd claimed, plain sent", []byte(good), []reqOpt{withHeader("Content-Encoding", "zstd")}, 400},
		{"truncated zstd", z[:len(z)-3], []reqOpt{withHeader("Content-Encoding", "zstd")}, 400},
	}
	before := counting.Counts().Writes()
	for _, tt := range tests {
		opts := append([]reqOpt{withToken(tok)}, tt.opts...)
		r := e.do("POST", "/v1/patches", tt.body, opts...)
		if r.status != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, r.status, r.body, tt.want)
			continue
		}
		r.errBody(t)
	}
	if n := counting.Counts().Writes() - before; n != 0 {
		t.Fatalf("malformed requests wrote %d objects", n)
	}
	if h, _ := snapshot.Head(t.Context(), e.store, "acme", "alice"); h != 1 {
		t.Fatalf("head = %d after malformed requests", h)
	}
}
