package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

func decodeSettings(t *testing.T, b []byte) OrgSettings {
	t.Helper()
	var st OrgSettings
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("decode settings %s: %v", b, err)
	}
	return st
}

func storedSettings(t *testing.T, s snapshot.Store, org string) OrgSettings {
	t.Helper()
	b, err := snapshot.GetBytes(context.Background(), s, snapshot.OrgSettingsKey(org), 1<<20)
	if err != nil {
		t.Fatalf("read stored settings: %v", err)
	}
	return decodeSettings(t, b)
}

func TestOfflineModeGate(t *testing.T) {
	e := newTestEnv(t, envConfig{setup: echoRoutes})
	alice := userToken(t, "acme", "alice")

	// No settings: offline mode is off.
	r := e.do("GET", "/test/user", nil, withToken(alice))
	if r.status != 403 {
		t.Fatalf("user of an unconfigured org: status %d, want 403", r.status)
	}
	got := r.errBody(t)
	want := wire.ErrorDetail{Code: wire.CodeOfflineDisabled, Message: "offline mode is not enabled for this organization"}
	if got != want {
		t.Errorf("error = %+v, want %+v", got, want)
	}
	// Ungated routes still answer, with the default policy.
	r = e.do("GET", "/test/ungated", nil, withToken(alice))
	if r.status != 200 {
		t.Fatalf("ungated route: status %d, want 200", r.status)
	}
	var echo struct{ Policy wire.Policy }
	if err := json.Unmarshal(r.body, &echo); err != nil {
		t.Fatal(err)
	}
	if want := withServerLimits(wire.Policy{ConflictPolicy: wire.PolicyClientWins}); echo.Policy != want {
		t.Errorf("default policy = %+v, want %+v", echo.Policy, want)
	}

	// Switching it on through the admin API opens the gate at once on this
	// replica (the write refreshes the cache).
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode":true,"conflict_policy":"server-wins"}`), withToken(adminToken(t))); r.status != 200 {
		t.Fatalf("PUT settings: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/test/user", nil, withToken(alice))
	if r.status != 200 {
		t.Fatalf("after enabling: status %d, want 200 (%s)", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, &echo); err != nil {
		t.Fatal(err)
	}
	if want := withServerLimits(wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyServerWins}); echo.Policy != want {
		t.Errorf("policy = %+v, want %+v", echo.Policy, want)
	}
	// Another org stays off.
	if r := e.do("GET", "/test/user", nil, withToken(userToken(t, "other", "alice"))); r.status != 403 {
		t.Errorf("user of another org: status %d, want 403", r.status)
	}
}

// A replica picks up a change made through another one once its cached
// copy is older than SettingsTTL.
func TestSettingsCacheAcrossReplicas(t *testing.T) {
	store := memstore.New()
	a := newTestEnv(t, envConfig{store: store, setup: echoRoutes})
	b := newTestEnv(t, envConfig{store: store, setup: echoRoutes, clock: &testClock{start: time.Now()}})

	alice := userToken(t, "acme", "alice")
	if r := b.do("GET", "/test/user", nil, withToken(alice)); r.status != 403 {
		t.Fatalf("before: status %d, want 403", r.status)
	}
	if r := a.do("PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode":true}`), withToken(adminToken(t))); r.status != 200 {
		t.Fatalf("PUT on replica a: %d %s", r.status, r.body)
	}
	if r := b.do("GET", "/test/user", nil, withToken(alice)); r.status != 403 {
		t.Errorf("within TTL: status %d, want 403 (cached)", r.status)
	}
	// The admin GET reads the store, not the cache.
	r := b.do("GET", "/v1/admin/orgs/acme", nil, withToken(adminToken(t)))
	if st := decodeSettings(t, r.body); !st.OfflineMode {
		t.Errorf("admin GET on replica b = %+v, want offline mode on", st)
	}
	b.clock.add(b.s.opts.SettingsTTL)
	if r := b.do("GET", "/test/user", nil, withToken(alice)); r.status != 200 {
		t.Errorf("after TTL: status %d, want 200 (%s)", r.status, r.body)
	}
}

func TestAdminSettingsRoundTrip(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	admin := adminToken(t)

	// GET of an unconfigured org answers the defaults.
	r := e.do("GET", "/v1/admin/orgs/acme", nil, withToken(admin))
	if r.status != 200 {
		t.Fatalf("GET: %d %s", r.status, r.body)
	}
	if got, want := decodeSettings(t, r.body), DefaultOrgSettings(); got != want {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}

	before := time.Now().Unix()
	r = e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode": true, "conflict_policy": "reject",
		"max_offline_seconds": 3600, "max_pending_bytes": 1048576, "max_patch_ops": 100, "max_patch_bytes": 65536}`),
		withToken(admin))
	if r.status != 200 {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	put := decodeSettings(t, r.body)
	want := wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyReject, MaxOfflineSeconds: 3600,
		MaxPendingBytes: 1 << 20, MaxPatchOps: 100, MaxPatchBytes: 65536}
	if put.Policy != want {
		t.Errorf("PUT answer = %+v, want %+v", put.Policy, want)
	}
	if put.UpdatedUnix < before || put.UpdatedUnix > time.Now().Unix() {
		t.Errorf("updated_unix = %d, want now", put.UpdatedUnix)
	}
	if got := storedSettings(t, e.store, "acme"); got != put {
		t.Errorf("stored = %+v, want %+v", got, put)
	}
	r = e.do("GET", "/v1/admin/orgs/acme", nil, withToken(admin))
	if got := decodeSettings(t, r.body); got != put {
		t.Errorf("GET = %+v, want %+v", got, put)
	}

	// Fields left out keep their value.
	r = e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"max_patch_ops": 5}`), withToken(admin))
	if r.status != 200 {
		t.Fatalf("partial PUT: %d %s", r.status, r.body)
	}
	want.MaxPatchOps = 5
	if got := decodeSettings(t, r.body).Policy; got != want {
		t.Errorf("after partial PUT = %+v, want %+v", got, want)
	}
}

func TestAdminSettingsRejectsBadInput(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	admin := adminToken(t)
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(`{"offline_mode":true}`), withToken(admin)); r.status != 200 {
		t.Fatalf("setup PUT: %d %s", r.status, r.body)
	}
	orig := storedSettings(t, e.store, "acme")

	tests := []struct {
		name string
		path string
		body string
		opts []reqOpt
		want int
	}{
		{"unknown field", "/v1/admin/orgs/acme", `{"offline_mode":false,"offline":true}`, nil, 400},
		{"invalid policy", "/v1/admin/orgs/acme", `{"offline_mode":false,"conflict_policy":"last-writer-wins"}`, nil, 400},
		{"empty policy", "/v1/admin/orgs/acme", `{"conflict_policy":""}`, nil, 400},
		{"wrong type", "/v1/admin/orgs/acme", `{"offline_mode":"yes"}`, nil, 400},
		{"negative limit", "/v1/admin/orgs/acme", `{"offline_mode":false,"max_patch_ops":-1}`, nil, 400},
		{"malformed JSON", "/v1/admin/orgs/acme", `{"offline_mode":fal`, nil, 400},
		{"trailing data", "/v1/admin/orgs/acme", `{"offline_mode":false} {}`, nil, 400},
		{"not an object", "/v1/admin/orgs/acme", `[true]`, nil, 400},
		{"empty body", "/v1/admin/orgs/acme", ``, nil, 400},
		{"invalid org", "/v1/admin/orgs/_secret", `{"offline_mode":false}`, nil, 400},
		{"oversize body", "/v1/admin/orgs/acme", `{"offline_mode":false}` + strings.Repeat(" ", maxAdminJSONBytes), nil, 413},
		{"unknown encoding", "/v1/admin/orgs/acme", `{"offline_mode":false}`, []reqOpt{withHeader("Content-Encoding", "gzip")}, 415},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("PUT", tc.path, []byte(tc.body), append(tc.opts, withToken(admin))...)
			if r.status != tc.want {
				t.Fatalf("status = %d, want %d (%s)", r.status, tc.want, r.body)
			}
			r.errBody(t)
			if got := storedSettings(t, e.store, "acme"); got != orig {
				t.Errorf("settings changed to %+v by a rejected request", got)
			}
		})
	}
}

// Concurrent admins through two replicas, each changing a different field:
// with compare-and-swap writes every change survives.
func TestAdminSettingsConcurrentUpdates(t *testing.T) {
	store := memstore.New()
	envs := []*testEnv{
		newTestEnv(t, envConfig{store: store}),
		newTestEnv(t, envConfig{store: store}),
	}
	admin := adminToken(t)
	bodies := []string{
		`{"offline_mode": true}`,
		`{"conflict_policy": "server-wins"}`,
		`{"max_offline_seconds": 11}`,
		`{"max_pending_bytes": 22}`,
		`{"max_patch_ops": 33}`,
		`{"max_patch_bytes": 44}`,
	}
	for round := 0; round < 5; round++ {
		org := fmt.Sprintf("org%d", round)
		var wg sync.WaitGroup
		for i, b := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := envs[i%2].do("PUT", "/v1/admin/orgs/"+org, []byte(b), withToken(admin))
				if r.status != 200 {
					t.Errorf("PUT %s: %d %s", b, r.status, r.body)
				}
			}()
		}
		wg.Wait()
		want := wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyServerWins, MaxOfflineSeconds: 11,
			MaxPendingBytes: 22, MaxPatchOps: 33, MaxPatchBytes: 44}
		if got := storedSettings(t, store, org).Policy; got != want {
			t.Errorf("round %d: stored %+v, want %+v (an update was lost)", round, got, want)
		}
	}
}

// A write that lands between our read and our conditional write makes the
// CAS fail; the update is re-applied on top of it instead of overwriting it.
func TestAdminSettingsCASRetry(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	admin := adminToken(t)
	for _, existing := range []bool{false, true} {
		t.Run(fmt.Sprintf("existing=%v", existing), func(t *testing.T) {
			org := fmt.Sprintf("org-%v", existing)
			if existing {
				if r := e.do("PUT", "/v1/admin/orgs/"+org, []byte(`{"max_patch_ops": 1}`), withToken(admin)); r.status != 200 {
					t.Fatalf("setup: %d %s", r.status, r.body)
				}
			}
			var interfered atomic.Bool
			var casCalls atomic.Int32
			beforeCAS := func(key string) {
				if key != snapshot.OrgSettingsKey(org) {
					return // the announcement in the change feed
				}
				casCalls.Add(1)
				if interfered.Swap(true) {
					return
				}
				// Another admin's write sneaks in.
				b, _ := json.Marshal(OrgSettings{Policy: wire.Policy{ConflictPolicy: wire.PolicyReject, MaxPendingBytes: 77}})
				if _, err := e.store.Store.Put(context.Background(), key, bytes.NewReader(b), int64(len(b))); err != nil {
					t.Errorf("interfering put: %v", err)
				}
			}
			e.store.PutIfAbsentFunc = func(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
				beforeCAS(key)
				return e.store.Store.PutIfAbsent(ctx, key, r, size)
			}
			e.store.PutIfMatchFunc = func(ctx context.Context, key string, r io.Reader, size int64, etag string) (snapshot.ObjectInfo, error) {
				beforeCAS(key)
				return e.store.Store.PutIfMatch(ctx, key, r, size, etag)
			}
			defer func() { e.store.PutIfAbsentFunc, e.store.PutIfMatchFunc = nil, nil }()

			r := e.do("PUT", "/v1/admin/orgs/"+org, []byte(`{"offline_mode": true}`), withToken(admin))
			if r.status != 200 {
				t.Fatalf("PUT: %d %s", r.status, r.body)
			}
			want := wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyReject, MaxPendingBytes: 77}
			if got := storedSettings(t, e.store, org).Policy; got != want {
				t.Errorf("stored %+v, want %+v", got, want)
			}
			if got := decodeSettings(t, r.body).Policy; got != want {
				t.Errorf("answer %+v, want %+v", got, want)
			}
			if got := casCalls.Load(); got != 2 {
				t.Errorf("conditional writes = %d, want 2 (one lost, one retried)", got)
			}
		})
	}
}

func TestOrgPolicyStoreErrors(t *testing.T) {
	e := newTestEnv(t, envConfig{setup: echoRoutes})
	ctx := context.Background()
	put := func(b string) {
		if _, err := e.store.Put(ctx, snapshot.OrgSettingsKey("acme"), strings.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	// Unknown fields written by a newer replica are tolerated.
	put(`{"offline_mode":true,"conflict_policy":"server-wins","future_knob":1,"updated_unix":5}`)
	p, err := e.s.orgPolicy(ctx, "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := withServerLimits(wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyServerWins}); p != want {
		t.Errorf("policy = %+v, want %+v", p, want)
	}
	// Corrupt settings are an internal error, not a silent default.
	bad := `{"offline_mode":`
	if _, err := e.store.Put(ctx, snapshot.OrgSettingsKey("broken"), strings.NewReader(bad), int64(len(bad))); err != nil {
		t.Fatal(err)
	}
	r := e.do("GET", "/test/user", nil, withToken(userToken(t, "broken", "alice")))
	if r.status != 500 || r.errBody(t).Code != wire.CodeInternal {
		t.Errorf("corrupt settings: status %d body %s, want 500 internal", r.status, r.body)
	}
}
