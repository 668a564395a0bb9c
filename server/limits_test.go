package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

// withServerLimits is p with the default server's patch limits, as every
// policy a client gets carries them.
func withServerLimits(p wire.Policy) wire.Policy {
	d := diff.DefaultLimits()
	p.MaxPatchOps, p.MaxPatchBytes, p.MaxRecordBytes = d.MaxOps, d.MaxBytes, d.MaxRecordBytes
	return withBlobLimits(p)
}

// withBlobLimits is p with the default server's blob limits.
func withBlobLimits(p wire.Policy) wire.Policy {
	d := DefaultOptions()
	p.MaxBlobBytes, p.EagerBlobBytes = d.MaxBlobBytes, d.EagerBlobBytes
	return p
}

// patchOf is the body of a patch with the given ops (JSON objects).
func patchOf(id string, ops ...string) []byte {
	return []byte(`{"id":"` + id + `","base":1,"ops":[` + strings.Join(ops, ",") + `]}`)
}

func putOp(key string, valueBytes int) string {
	return `{"op":"put","key":"` + key + `","value":"` + strings.Repeat("v", valueBytes-2) + `"}`
}

func manyDeletes(n int) []string {
	ops := make([]string, n)
	for i := range ops {
		ops[i] = fmt.Sprintf(`{"op":"delete","key":"k/%d"}`, i)
	}
	return ops
}

// hostileLimitCases are patches over the default server's limits: each is
// answered 413 too_large (so a client splits, never drops its edits), and
// none changes the store.
func hostileLimitCases(t *testing.T) []hostileCase {
	tok := userToken(t, hostileEnvOrg, hostileEnvUser)
	post := func(name string, body []byte, opts ...reqOpt) hostileCase {
		return hostileCase{name: name, method: "POST", path: "/v1/patches", body: body,
			opts: append([]reqOpt{withToken(tok)}, opts...), status: 413, code: wire.CodeTooLarge}
	}
	d := diff.DefaultLimits()
	cases := []hostileCase{
		post("too many ops", patchOf("lim-ops", manyDeletes(d.MaxOps+1)...)),
		post("too many ops, zstd", zstdBytes(t, patchOf("lim-ops-z", manyDeletes(d.MaxOps+1)...)), withHeader("Content-Encoding", "zstd")),
		post("body over what one record needs", patchOf("lim-body", putOp("a", int(d.MaxRecordBytes+diff.SingleEditOverhead)+1))),
		post("body over the limit, streamed", nil, withStream(patchOf("lim-stream", putOp("a", int(d.MaxRecordBytes+diff.SingleEditOverhead)+1)))),
	}
	if raceEnabled {
		// Canonicalising 8-16 MiB of JSON takes seconds under -race;
		// TestPatchOverLimitAnswers413WithPolicy covers these limits
		// there with small ones.
		return cases
	}
	twoHalves := int(d.MaxBytes/2) + 1024
	return append(cases,
		post("several ops over the byte limit", patchOf("lim-bytes", putOp("a", twoHalves), putOp("b", twoHalves))),
		post("value over the record limit", patchOf("lim-record", putOp("a", int(d.MaxRecordBytes)+1))),
		post("merge patch over the record limit", patchOf("lim-merge",
			`{"op":"merge","key":"a","patch":{"x":"`+strings.Repeat("m", int(d.MaxRecordBytes))+`"}}`)),
	)
}

// TestPolicyCarriesEffectiveLimits protects issue 9 item 1: the client
// learns the server's own patch limits from the policy (an org without
// limits used to say "none" while the server refused 10,001 ops), and where
// the org set lower ones, those.
func TestPolicyCarriesEffectiveLimits(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) {
		o.MaxPatchOps, o.MaxPatchBytes, o.MaxRecordBytes = 500, 1<<20, 2<<20
		o.SettingsTTL = 0
	}})
	e.enableOrg("acme")
	tok := userToken(t, "acme", "alice")
	policy := func() wire.Policy {
		t.Helper()
		r := e.do("GET", "/v1/status", nil, withToken(tok))
		var st wire.StatusResponse
		if r.status != 200 || json.Unmarshal(r.body, &st) != nil {
			t.Fatalf("status: %d %s", r.status, r.body)
		}
		return st.Policy
	}
	want := withBlobLimits(wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyClientWins, MaxPatchOps: 500, MaxPatchBytes: 1 << 20, MaxRecordBytes: 2 << 20})
	if got := policy(); got != want {
		t.Errorf("org without limits: policy %+v, want %+v", got, want)
	}
	admin := withToken(adminToken(t))
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"max_patch_ops":100,"max_patch_bytes":4194304,"max_record_bytes":65536,"max_pending_bytes":7}`), admin); r.status != 200 {
		t.Fatalf("settings: %d %s", r.status, r.body)
	}
	want.MaxPatchOps, want.MaxRecordBytes, want.MaxPendingBytes = 100, 65536, 7 // the org's bytes per patch are above the server's
	if got := policy(); got != want {
		t.Errorf("org with limits: policy %+v, want %+v", got, want)
	}
	// The admin sees what the org set, not the server's limits.
	r := e.do("GET", "/v1/admin/orgs/acme", nil, admin)
	var st OrgSettings
	if r.status != 200 || json.Unmarshal(r.body, &st) != nil || st.MaxPatchBytes != 4194304 || st.MaxRecordBytes != 65536 {
		t.Errorf("admin settings: %d %s", r.status, r.body)
	}
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"max_record_bytes":-1}`), admin); r.status != 400 {
		t.Errorf("negative record limit: %d %s, want 400", r.status, r.body)
	}
}

// TestPatchOverLimitAnswers413WithPolicy: a patch over a limit of the
// policy is answered 413 too_large, naming the limit and carrying the
// policy in force (an older client that only looks at the status splits
// too), and nothing is applied. The org's lower limits count.
func TestPatchOverLimitAnswers413WithPolicy(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.SettingsTTL = 0 }})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"max_patch_ops":3,"max_patch_bytes":2000,"max_record_bytes":1000}`), withToken(adminToken(t))); r.status != 200 {
		t.Fatalf("settings: %d %s", r.status, r.body)
	}
	tok := userToken(t, "acme", "alice")
	tests := []struct {
		name  string
		body  []byte
		limit string
	}{
		{"ops", patchOf("p-ops", manyDeletes(4)...), diff.LimitPatchOps},
		{"bytes", patchOf("p-bytes", putOp("a", 900), putOp("b", 900), putOp("c", 900)), diff.LimitPatchBytes},
		{"record", patchOf("p-record", putOp("a", 1001)), diff.LimitRecordBytes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/v1/patches", tc.body, withToken(tok))
			var lb wire.LimitErrorBody
			if r.status != 413 || json.Unmarshal(r.body, &lb) != nil {
				t.Fatalf("%d %s, want 413", r.status, r.body)
			}
			if lb.Error.Code != wire.CodeTooLarge || lb.Limit != tc.limit || !strings.Contains(lb.Error.Message, tc.limit) {
				t.Errorf("answer %s: want code too_large naming %s", r.body, tc.limit)
			}
			want := withBlobLimits(wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyClientWins, MaxPatchOps: 3, MaxPatchBytes: 2000, MaxRecordBytes: 1000})
			if lb.Policy == nil || *lb.Policy != want {
				t.Errorf("policy %+v, want %+v", lb.Policy, want)
			}
		})
	}
	if h, _ := snapshot.Head(t.Context(), e.store, "acme", "alice"); h != 1 {
		t.Fatalf("head %d after refused patches, want 1", h)
	}
	// Within the limits, the same edits go through in smaller patches.
	for i, ops := range [][]string{manyDeletes(3), {putOp("a", 900), putOp("b", 900)}, {putOp("c", 1000)}} {
		if r := e.do("POST", "/v1/patches", patchOf(fmt.Sprintf("ok-%d", i), ops...), withToken(tok)); r.status != 200 {
			t.Fatalf("patch %d within the limits: %d %s", i, r.status, r.body)
		}
	}
}

// TestSingleEditUpToRecordLimitIsAccepted protects issue 9 item 2: a 9.8 MB
// form, over the 8 MiB patch limit but within the 16 MiB record limit, was
// refused whatever the client did. A patch of one edit may be as large as
// one record needs. (Scaled down to a 1 MiB patch limit, for -race; the
// client's TestOfflineFormOverPatchLimitSyncs sends the 9.8 MB form.)
func TestSingleEditUpToRecordLimitIsAccepted(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.MaxPatchBytes = 1 << 20 }})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	tok := userToken(t, "acme", "alice")
	body := patchOf("form", `{"op":"put","key":"forms/1","value":{"photo":"`+strings.Repeat("A", 1_250_000)+`"}}`)
	for _, opts := range [][]reqOpt{{withToken(tok)}, {withToken(tok), withHeader("Content-Encoding", "zstd")}} {
		b := body
		if len(opts) > 1 {
			b = zstdBytes(t, body)
		}
		r := e.do("POST", "/v1/patches", b, opts...)
		var pr wire.PatchResponse
		if r.status != 200 || json.Unmarshal(r.body, &pr) != nil || pr.Version != 2 || pr.Receipts[0].Status != diff.StatusApplied {
			t.Fatalf("%d %.300s", r.status, r.body)
		}
	}
}

func TestOptionsPatchLimits(t *testing.T) {
	valid := func(edit func(*Options)) error {
		o := DefaultOptions()
		o.Store, o.JWTSecret = memstore.New(), testSecret
		edit(&o)
		return o.Validate()
	}
	if err := valid(func(o *Options) { o.MaxPatchOps, o.MaxRecordBytes = 0, 0 }); err != nil {
		t.Errorf("zero limits (the defaults): %v", err)
	}
	for name, edit := range map[string]func(*Options){
		"negative ops":         func(o *Options) { o.MaxPatchOps = -1 },
		"negative record":      func(o *Options) { o.MaxRecordBytes = -1 },
		"record over 16 MiB":   func(o *Options) { o.MaxRecordBytes = snapshot.MaxValueLen + 1 },
		"non-positive patches": func(o *Options) { o.MaxPatchBytes = 0 },
	} {
		if err := valid(edit); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestRetryAfterLimitsLoweredGetsItsAnswer: a patch applied whose answer
// was lost, sent again after the org lowered its limits below it, gets the
// first answer (duplicate), not a 413 that would make the client send the
// edits again under new ids.
func TestRetryAfterLimitsLoweredGetsItsAnswer(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.SettingsTTL = 0 }})
	e.enableOrg("acme")
	e.upload("acme", "alice", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	tok := userToken(t, "acme", "alice")
	body := patchOf("p-1", manyDeletes(5)...)
	if r := e.do("POST", "/v1/patches", body, withToken(tok)); r.status != 200 {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"max_patch_ops":2}`), withToken(adminToken(t))); r.status != 200 {
		t.Fatalf("settings: %d %s", r.status, r.body)
	}
	r := e.do("POST", "/v1/patches", body, withToken(tok))
	var pr wire.PatchResponse
	if r.status != 200 || json.Unmarshal(r.body, &pr) != nil || !pr.Duplicate {
		t.Fatalf("retry: %d %s, want the stored answer", r.status, r.body)
	}
	if r := e.do("POST", "/v1/patches", patchOf("p-2", manyDeletes(5)...), withToken(tok)); r.status != 413 {
		t.Fatalf("a new patch over the lowered limit: %d %s, want 413", r.status, r.body)
	}
}

// TestDeviceLimitsDoNotRefuseUploads pins issue 9 item 14's decision on the
// server: max_pending_bytes and max_offline_seconds travel in the policy
// but a patch is not refused for them.
func TestDeviceLimitsDoNotRefuseUploads(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.SettingsTTL = 0 }})
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode":true,"max_pending_bytes":10,"max_offline_seconds":1}`), withToken(adminToken(t))); r.status != 200 {
		t.Fatalf("settings: %d %s", r.status, r.body)
	}
	tok := userToken(t, "acme", "alice")
	r := e.do("POST", "/v1/patches", []byte(`{"id":"old","base":0,"ops":[`+putOp("a", 500)+`]}`), withToken(tok))
	var pr wire.PatchResponse
	if r.status != 200 || json.Unmarshal(r.body, &pr) != nil || pr.Receipts[0].Status != diff.StatusApplied {
		t.Fatalf("%d %s", r.status, r.body)
	}
}
