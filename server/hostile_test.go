package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// hostileCase is one probe of TestHostileInputs: what a hostile or broken
// client could send, the 4xx it must get with a JSON error, and (for every
// case) a store whose contents are byte-identical before and after.
//
// A case sends either a request built from method, path, body and opts, or,
// when raw is set, those bytes as they are on a fresh connection (for what a
// well-behaved HTTP client cannot send: headers without a body, Expect:
// 100-continue, lying lengths).
type hostileCase struct {
	name         string
	method, path string
	body         []byte
	opts         []reqOpt
	raw          []byte
	status       int
	code         string // the wire error code; "" accepts any
}

// hostileEnvOrg and hostileEnvUser name the data set every hostile case runs
// against: offline mode on, one version of a few records.
const (
	hostileEnvOrg  = "acme"
	hostileEnvUser = "alice"
)

// hostileGroups are the case lists of TestHostileInputs, one per area, each
// defined in the file of the tests of that area (so that the areas grow
// independently). Each is a function of the test, for cases that mint
// tokens.
var hostileGroups = map[string]func(t *testing.T) []hostileCase{
	"auth":   hostileAuthCases,
	"bodies": hostileBodyCases,
	"keys":   hostileKeyCases,
	"feed":   hostileFeedCases,
	"limits": hostileLimitCases,
	"sync":   hostileSyncCases,
}

// TestHostileInputs sends every probe of hostileGroups to one server and
// checks each gets its 4xx with a JSON error body, and that the store's
// contents are byte-identical before and after the whole table.
func TestHostileInputs(t *testing.T) {
	mem := memstore.New()
	e := newTestEnv(t, envConfig{store: mem})
	e.enableOrg(hostileEnvOrg)
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 7})
	e.upload(hostileEnvOrg, hostileEnvUser, recs)

	before := storeContents(t, mem)
	for _, group := range slices.Sorted(maps.Keys(hostileGroups)) {
		for _, tc := range hostileGroups[group](t) {
			t.Run(group+"/"+tc.name, func(t *testing.T) {
				r := e.hostileDo(t, tc)
				if r.status != tc.status {
					t.Fatalf("status %d %s, want %d", r.status, r.body, tc.status)
				}
				if d := r.errBody(t); tc.code != "" && d.Code != tc.code {
					t.Errorf("error code %q (%s), want %q", d.Code, d.Message, tc.code)
				}
			})
		}
	}
	after := storeContents(t, mem)
	if !maps.EqualFunc(before, after, bytes.Equal) {
		for k, v := range after {
			if w, ok := before[k]; !ok || !bytes.Equal(v, w) {
				t.Errorf("store object %q written by a hostile request", k)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				t.Errorf("store object %q deleted by a hostile request", k)
			}
		}
	}
}

// hostileDo sends one case and reads the answer.
func (e *testEnv) hostileDo(t *testing.T, tc hostileCase) response {
	t.Helper()
	if tc.raw == nil {
		return e.do(tc.method, tc.path, tc.body, tc.opts...)
	}
	conn, err := e.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(tc.raw); err != nil {
		t.Fatalf("write raw request: %v", err)
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	br := bufio.NewReader(conn)
	if err := resp.Read(br); err != nil {
		t.Fatalf("read answer to raw request: %v", err)
	}
	// A server that answers an Expect: 100-continue with 100 first is
	// wrong for these cases: the interim answer is what the test reports.
	r := response{status: resp.StatusCode(), body: append([]byte(nil), resp.Body()...), header: map[string]string{}}
	for k, v := range resp.Header.All() {
		r.header[string(k)] = string(v)
	}
	return r
}

// storeContents reads every object of a store into a map.
func storeContents(t *testing.T, s snapshot.Store) map[string][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string][]byte{}
	err := s.List(ctx, "", func(info snapshot.ObjectInfo) error {
		rc, _, err := s.Get(ctx, info.Key)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		out[info.Key] = b
		return err
	})
	if err != nil {
		t.Fatalf("list store: %v", err)
	}
	return out
}

// The groups below start with today's probes; each area's work adds its own.

func hostileAuthCases(t *testing.T) []hostileCase {
	cases := []hostileCase{
		{name: "no token", method: "GET", path: "/v1/status", status: 401, code: "unauthorized"},
		{name: "no token, raw", raw: []byte("GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"), status: 401, code: "unauthorized"},
		{name: "garbage token", method: "GET", path: "/v1/status", opts: []reqOpt{withToken("not.a.jwt")}, status: 401, code: "unauthorized"},
		{name: "user token on admin route", method: "GET", path: "/v1/admin/changes",
			opts: []reqOpt{withToken(userToken(t, hostileEnvOrg, hostileEnvUser))}, status: 403},
		// Which of two tokens counts is a question a proxy in front may
		// answer otherwise (fasthttp takes the first): refuse both.
		{name: "a valid token, then another", raw: twoTokens(userToken(t, hostileEnvOrg, hostileEnvUser), "garbage"), status: 401, code: "unauthorized"},
		{name: "another token, then a valid one", raw: twoTokens("garbage", userToken(t, hostileEnvOrg, hostileEnvUser)), status: 401, code: "unauthorized"},
		{name: "a valid token twice", raw: twoTokens(userToken(t, hostileEnvOrg, hostileEnvUser), userToken(t, hostileEnvOrg, hostileEnvUser)), status: 401, code: "unauthorized"},
	}
	// Forged claims (go-jose tokens signed with the server's own secret,
	// see claims_test.go) on the real user and admin routes.
	for _, f := range forgedClaimCases(t) {
		path := "/v1/status"
		if f.path == "/test/admin" {
			path = "/v1/admin/changes"
		}
		cases = append(cases, hostileCase{name: "forged: " + f.name, method: "GET", path: path,
			opts: []reqOpt{withToken(f.tok)}, status: 401, code: "unauthorized"})
	}
	cases = append(cases, crossOrgAdminCases(t)...) // orgadmin_test.go
	return cases
}

// twoTokens is a status request with two Authorization headers.
func twoTokens(a, b string) []byte {
	return []byte("GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + a + "\r\nAuthorization: Bearer " + b + "\r\n\r\n")
}

func hostileKeyCases(t *testing.T) []hostileCase {
	tok := userToken(t, hostileEnvOrg, hostileEnvUser)
	admin := adminToken(t)
	datasetPath := "/v1/admin/orgs/" + hostileEnvOrg + "/users/" + hostileEnvUser + "/dataset"
	return []hostileCase{
		{name: "empty key", method: "POST", path: "/v1/patches",
			body: []byte(`{"id":"k1","base":1,"ops":[{"op":"put","key":"","value":1}]}`),
			opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		// encoding/json would store these under "k/\uFFFD", one record for many keys.
		{name: "invalid UTF-8 key in a patch", method: "POST", path: "/v1/patches",
			body: []byte("{\"id\":\"k2\",\"base\":1,\"ops\":[{\"op\":\"put\",\"key\":\"k/\xff\",\"value\":1}]}"),
			opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "lone surrogate key in a patch", method: "POST", path: "/v1/patches",
			body: []byte(`{"id":"k3","base":1,"ops":[{"op":"put","key":"k/\ud800","value":1}]}`),
			opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "lone surrogate key in a delete", method: "POST", path: "/v1/patches",
			body: []byte(`{"id":"k4","base":1,"ops":[{"op":"delete","key":"k/\udc00"}]}`),
			opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "invalid UTF-8 in a patch value", method: "POST", path: "/v1/patches",
			body: []byte("{\"id\":\"k5\",\"base\":1,\"ops\":[{\"op\":\"put\",\"key\":\"k\",\"value\":{\"t\":\"\xfe\"}}]}"),
			opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "invalid UTF-8 key in a data set upload", method: "PUT", path: datasetPath,
			opts:   []reqOpt{withToken(admin), withStream([]byte("{\"key\":\"a\",\"value\":1}\n{\"key\":\"k/\xff\",\"value\":1}\n"))},
			status: 400, code: "bad_request"},
		{name: "lone surrogate key in a data set upload", method: "PUT", path: datasetPath,
			opts:   []reqOpt{withToken(admin), withStream([]byte(`{"key":"k/\ud800","value":1}` + "\n"))},
			status: 400, code: "bad_request"},
	}
}

func hostileFeedCases(t *testing.T) []hostileCase { return feedCursorCases(t) }

func hostileSyncCases(t *testing.T) []hostileCase {
	tok := userToken(t, hostileEnvOrg, hostileEnvUser)
	return []hostileCase{
		{name: "unknown version", method: "GET", path: "/v1/sync?from=99", opts: []reqOpt{withToken(tok)}, status: 404},
		{name: "from one past the head", method: "GET", path: "/v1/sync?from=2", opts: []reqOpt{withToken(tok)}, status: 404, code: "not_found"},
		{name: "from the largest version", method: "GET", path: "/v1/sync?from=18446744073709551615", opts: []reqOpt{withToken(tok)}, status: 404, code: "not_found"},
		{name: "from overflowing", method: "GET", path: "/v1/sync?from=18446744073709551616", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "from garbage", method: "GET", path: "/v1/sync?from=abc", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "from empty", method: "GET", path: "/v1/sync?from=", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "from negative", method: "GET", path: "/v1/sync?from=-1", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "from hex", method: "GET", path: "/v1/sync?from=0x1", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "from with NUL", method: "GET", path: "/v1/sync?from=1%00", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "to beyond the head", method: "GET", path: "/v1/sync?from=0&to=7&skip=0", opts: []reqOpt{withToken(tok)}, status: 404, code: "not_found"},
		{name: "to garbage", method: "GET", path: "/v1/sync?from=0&to=1x", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "skip beyond the pack", method: "GET", path: "/v1/sync?from=0&to=1&skip=999999", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "skip huge", method: "GET", path: "/v1/sync?from=0&skip=18446744073709551615", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "skip negative", method: "GET", path: "/v1/sync?from=0&to=1&skip=-1", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "wait garbage", method: "GET", path: "/v1/sync?from=1&wait=forever", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "wait negative", method: "GET", path: "/v1/sync?from=1&wait=-5s", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "wait overflowing", method: "GET", path: "/v1/sync?from=1&wait=9999999999999h", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "chunk id garbage", method: "GET", path: "/v1/chunks/zz", opts: []reqOpt{withToken(tok)}, status: 400, code: "bad_request"},
		{name: "chunk id unknown", method: "GET", path: "/v1/chunks/00000000000000000000000000000000", opts: []reqOpt{withToken(tok)}, status: 404, code: "not_found"},
	}
}
