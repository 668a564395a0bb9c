package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

// ruleValidator is an org's validator that refuses every op whose key
// starts with prefix, and counts the requests it answered with a valid
// signature (and those without).
type ruleValidator struct {
	srv              *httptest.Server
	prefix           string
	signed, unsigned atomic.Int32
}

func newRuleValidator(t *testing.T, prefix string) *ruleValidator {
	v := &ruleValidator{prefix: prefix}
	v.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if wire.Verify([]byte(testHookSecret), r.Header.Get(wire.HeaderTimestamp), r.Header.Get(wire.HeaderSignature), body, time.Now(), time.Minute) != nil {
			v.unsigned.Add(1)
			w.WriteHeader(401)
			return
		}
		v.signed.Add(1)
		var req wire.ValidationRequest
		json.Unmarshal(body, &req)
		var resp wire.ValidationResponse
		for i, op := range req.Patch.Ops {
			if strings.HasPrefix(op.Key, v.prefix) {
				resp.Rejected = append(resp.Rejected, wire.ValidationRejection{Index: i, Reason: "one action per task while offline: " + op.Key})
			}
		}
		json.NewEncoder(w).Encode(resp)
	}))
	t.Cleanup(v.srv.Close)
	return v
}

func validationEnv(t *testing.T, url, fallback string) *testEnv {
	mem := memstore.New()
	e := newTestEnv(t, envConfig{store: mem, opts: func(o *Options) {
		o.Backend.HooksAllowPrivate = true
		o.SettingsTTL = 0
	}})
	body := fmt.Sprintf(`{"offline_mode":true,"validation_url":%q,"webhook_secret":%q,"validation_fallback":%q,"validation_timeout_ms":500}`,
		url, testHookSecret, fallback)
	if r := e.do("PUT", "/v1/admin/orgs/acme", []byte(body), withToken(adminToken(t))); r.status != 200 {
		t.Fatalf("settings: %d %s", r.status, r.body)
	}
	e.upload("acme", "alice", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}, {Key: "tasks/2", Value: []byte(`{"s":"open"}`)}})
	return e
}

// TestValidatorRefusesMatchingOps: a validator that refuses ops whose key
// matches its rule turns exactly those ops into rejected receipts with its
// reason, and the rest apply; a retry is answered from storage without
// asking it again.
func TestValidatorRefusesMatchingOps(t *testing.T) {
	v := newRuleValidator(t, "workflows/")
	e := validationEnv(t, v.srv.URL, "")
	body := []byte(`{"id":"p1","base":1,"ops":[
		{"op":"merge","key":"tasks/1","patch":{"s":"done"}},
		{"op":"put","key":"workflows/7","value":{"started":true}},
		{"op":"merge","key":"tasks/2","patch":{"s":"done"}},
		{"op":"put","key":"workflows/8","value":{"started":true}}]}`)
	tok := userToken(t, "acme", "alice")
	for i := range 2 {
		pr := patchAnswer(t, e.do("POST", "/v1/patches", body, withToken(tok)))
		want := []string{diff.StatusApplied, diff.StatusRejected, diff.StatusApplied, diff.StatusRejected}
		for j, rc := range pr.Receipts {
			if rc.Status != want[j] {
				t.Errorf("try %d op %d: %+v, want %s", i, j, rc, want[j])
			}
		}
		if r := pr.Receipts[1].Reason; r != "one action per task while offline: workflows/7" {
			t.Errorf("reason %q", r)
		}
	}
	if n, bad := v.signed.Load(), v.unsigned.Load(); n != 1 || bad != 0 {
		t.Errorf("validator asked %d times (%d unsigned), want once, signed", n, bad)
	}
	if got := readRecord(t, e, "acme", "alice", "workflows/7"); got != "" {
		t.Errorf("refused op applied: %s", got)
	}
	if got := readRecord(t, e, "acme", "alice", "tasks/2"); got != `{"s":"done"}` {
		t.Errorf("tasks/2 = %s", got)
	}
	// Admin patches are the backend's own writes: not validated.
	patchAnswer(t, e.do("POST", "/v1/admin/orgs/acme/users/alice/patches", []byte(`{"id":"a","ops":[{"op":"put","key":"workflows/9","value":1}]}`),
		withToken(adminToken(t))))
	if n := v.signed.Load(); n != 1 {
		t.Errorf("an admin patch was validated")
	}
}

// TestValidatorDown: with the validator down, the org's fallback decides:
// wait answers 503 with Retry-After and applies nothing (the device sends
// the same patch again and it applies once the validator is back); pass
// applies the patch unvalidated.
func TestValidatorDown(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(502) }))
	defer down.Close()
	tok := userToken(t, "acme", "alice")
	body := []byte(`{"id":"p1","base":1,"ops":[{"op":"put","key":"workflows/7","value":1}]}`)

	e := validationEnv(t, down.URL, FallbackWait)
	before := storeContents(t, e.store)
	r := e.do("POST", "/v1/patches", body, withToken(tok))
	if r.status != 503 || r.header["Retry-After"] == "" {
		t.Fatalf("wait: %d %s (Retry-After %q)", r.status, r.body, r.header["Retry-After"])
	}
	if !sameContents(before, storeContents(t, e.store)) {
		t.Error("a patch refused for a down validator changed the store")
	}
	v := newRuleValidator(t, "none/")
	e.do("PUT", "/v1/admin/orgs/acme", []byte(fmt.Sprintf(`{"validation_url":%q}`, v.srv.URL)), withToken(adminToken(t)))
	if pr := patchAnswer(t, e.do("POST", "/v1/patches", body, withToken(tok))); pr.Receipts[0].Status != diff.StatusApplied {
		t.Errorf("after the validator is back: %+v", pr)
	}

	e = validationEnv(t, down.URL, FallbackPass)
	if pr := patchAnswer(t, e.do("POST", "/v1/patches", body, withToken(tok))); pr.Receipts[0].Status != diff.StatusApplied || pr.Version != 2 {
		t.Errorf("pass: %+v", pr)
	}
}

// TestValidatorAnswersRefused: a validator answer that is no answer (an op
// the patch lacks, the same op twice, not JSON, too slow) counts as down.
func TestValidatorAnswersRefused(t *testing.T) {
	for name, answer := range map[string]string{
		"index out of range": `{"rejected":[{"index":5,"reason":"x"}]}`,
		"negative index":     `{"rejected":[{"index":-1,"reason":"x"}]}`,
		"same op twice":      `{"rejected":[{"index":0},{"index":0}]}`,
		"not JSON":           `<html>`,
		"too slow":           "",
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if answer == "" {
					select {
					case <-r.Context().Done():
					case <-time.After(5 * time.Second):
					}
					return
				}
				io.WriteString(w, answer)
			}))
			defer srv.Close()
			e := validationEnv(t, srv.URL, FallbackWait)
			r := e.do("POST", "/v1/patches", []byte(`{"id":"p","base":1,"ops":[{"op":"put","key":"k","value":1}]}`),
				withToken(userToken(t, "acme", "alice")))
			if r.status != 503 {
				t.Errorf("%d %s, want 503", r.status, r.body)
			}
		})
	}
}
