package diff_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

func TestDecodePatchCanonicalises(t *testing.T) {
	body := `{"id":"p-1","base":3,"ops":[
		{"op":"put","key":"tasks/1","value":{ "b" : 2, "a" : [1, 2.50, "<&>"] }},
		{"op":"merge","key":"tasks/1","patch":{"z":null,"c":{"y":1,"x":true}}},
		{"op":"put","key":"tasks/2","value":null},
		{"op":"delete","key":"tasks/1"}]}`
	p, err := diff.DecodePatch([]byte(body), diff.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := &diff.Patch{ID: "p-1", Base: 3, Ops: []diff.Op{
		{Op: "put", Key: "tasks/1", Value: json.RawMessage(`{"a":[1,2.50,"<&>"],"b":2}`)},
		{Op: "merge", Key: "tasks/1", Patch: json.RawMessage(`{"c":{"x":true,"y":1},"z":null}`)},
		{Op: "put", Key: "tasks/2", Value: json.RawMessage(`null`)},
		{Op: "delete", Key: "tasks/1"},
	}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got  %s\nwant %s", mustJSON(t, p), mustJSON(t, want))
	}
}

// TestValidation checks that every malformed patch gets a clear error
// matching snapshot.ErrInvalid, and that replaying it writes nothing.
func TestValidation(t *testing.T) {
	op := func(s string) string { return `{"id":"p","base":1,"ops":[` + s + `]}` }
	good := `{"op":"put","key":"tasks/1","value":{"a":1}}`
	big := `"` + strings.Repeat("x", snapshot.MaxValueLen) + `"`
	tests := []struct {
		name string
		body string
		lim  diff.Limits
		want string // in the error text
	}{
		{"not json", `{"id":`, diff.Limits{}, "decode patch"},
		{"not an object", `[1]`, diff.Limits{}, "decode patch"},
		{"unknown field" + encodingOnly, `{"id":"p","base":1,"ops":[` + good + `],"extra":1}`, diff.Limits{}, `unknown field "extra"`},
		{"unknown op field" + encodingOnly, op(`{"op":"put","key":"k","valeu":1}`), diff.Limits{}, `unknown field "valeu"`},
		{"trailing data" + encodingOnly, op(good) + ` {}`, diff.Limits{}, "trailing data"},
		{"trailing garbage" + encodingOnly, op(good) + `x`, diff.Limits{}, "trailing data"},
		{"base not a number", `{"id":"p","base":"1","ops":[` + good + `]}`, diff.Limits{}, "decode patch"},
		{"negative base", `{"id":"p","base":-1,"ops":[` + good + `]}`, diff.Limits{}, "decode patch"},
		{"no ops", `{"id":"p","base":1,"ops":[]}`, diff.Limits{}, "no ops"},
		{"null ops", `{"id":"p","base":1,"ops":null}`, diff.Limits{}, "no ops"},
		{"empty id", `{"id":"","base":1,"ops":[` + good + `]}`, diff.Limits{}, "patch id must be 1..128 bytes"},
		{"long id", `{"id":"` + strings.Repeat("i", 129) + `","base":1,"ops":[` + good + `]}`, diff.Limits{}, "patch id must be 1..128 bytes"},
		{"id not printable", `{"id":"a\nb","base":1,"ops":[` + good + `]}`, diff.Limits{}, "not printable ASCII"},
		{"id not ascii", `{"id":"é","base":1,"ops":[` + good + `]}`, diff.Limits{}, "not printable ASCII"},
		{"unknown op", op(good + `,{"op":"upsert","key":"k","value":1}`), diff.Limits{}, `op 1 (upsert "k"): unknown op "upsert"`},
		{"missing op", op(`{"key":"k","value":1}`), diff.Limits{}, `unknown op ""`},
		{"empty key", op(`{"op":"delete","key":""}`), diff.Limits{}, "op 0 (\"delete\"): empty key"},
		{"key with NUL", op(`{"op":"delete","key":"a\u0000b"}`), diff.Limits{}, "contains NUL"},
		{"key too long", op(`{"op":"delete","key":"` + strings.Repeat("k", 513) + `"}`), diff.Limits{}, "key of 513 bytes exceeds 512"},
		{"put without value", op(`{"op":"put","key":"k"}`), diff.Limits{}, "op 0 (put \"k\"): put without a value"},
		{"put with patch", op(`{"op":"put","key":"k","value":1,"patch":{}}`), diff.Limits{}, "put takes a value, not a patch"},
		{"merge without patch", op(`{"op":"merge","key":"k"}`), diff.Limits{}, "merge without a patch"},
		{"merge with value", op(`{"op":"merge","key":"k","value":1,"patch":{}}`), diff.Limits{}, "merge takes a patch, not a value"},
		{"merge patch array", op(`{"op":"merge","key":"k","patch":[1]}`), diff.Limits{}, "merge patch must be a JSON object, got an array"},
		{"merge patch null", op(`{"op":"merge","key":"k","patch":null}`), diff.Limits{}, "merge patch must be a JSON object, got null"},
		{"merge patch string", op(`{"op":"merge","key":"k","patch":"x"}`), diff.Limits{}, "merge patch must be a JSON object, got a string"},
		{"delete with value", op(`{"op":"delete","key":"k","value":1}`), diff.Limits{}, "delete takes no value"},
		{"value over the limit", op(`{"op":"put","key":"k","value":` + big + `}`), diff.Limits{MaxBytes: 32 << 20}, "value of 16777218 bytes is over the limit of 16777216 bytes per record"},
		{"value over a lower record limit", op(`{"op":"put","key":"k","value":"12345678"}`), diff.Limits{MaxRecordBytes: 8}, "value of 10 bytes is over the limit of 8"},
		{"merge patch over the record limit", op(`{"op":"merge","key":"k","patch":{"a":"123456"}}`), diff.Limits{MaxRecordBytes: 8}, "merge patch of 14 bytes is over the limit of 8"},
		{"too many ops", op(good + `,` + good + `,` + good), diff.Limits{MaxOps: 2}, "patch of 3 ops is over the limit of 2 ops per patch"},
		{"body over what one record needs", op(`{"op":"put","key":"k","value":"` + strings.Repeat("x", 20000) + `"}`),
			diff.Limits{MaxBytes: 40, MaxRecordBytes: 100}, "patch of 20061 bytes is over the limit of 16484 bytes"},
		{"several ops over MaxBytes", op(good + `,` + good), diff.Limits{MaxBytes: 40}, "bytes is over the limit of 40 bytes per patch"},
		{"ops too big", op(good + `,` + good), diff.Limits{MaxBytes: 20}, "20"}, // the body check, or (lax) Validate's sum of keys and values
		{"base newer than head", `{"id":"p","base":7,"ops":[` + good + `]}`, diff.Limits{}, "base 7 is newer than head 1"},
	}
	ctx := context.Background()
	mem := memstore.New()
	buildVersion(t, mem, "u", toRecords(t, map[string][]byte{"tasks/1": []byte(`{"a":0}`)}))
	before := readAll(t, mem, "u", 1)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot.NewCountingStore(mem)
			opts := applyOpts("u", "")
			opts.Limits = tc.lim
			p, err := diff.DecodePatch([]byte(tc.body), tc.lim)
			if err == nil {
				// Decoding is fine; replay must refuse it.
				_, err = diff.Apply(ctx, s, opts, p)
			} else if !strings.HasSuffix(tc.name, encodingOnly) {
				// Replay validates too: hand it whatever a lax decoder makes of the body.
				var loose diff.Patch
				if json.Unmarshal([]byte(tc.body), &loose) == nil {
					if _, aerr := diff.Apply(ctx, s, opts, &loose); aerr == nil {
						t.Errorf("Apply accepted what DecodePatch refused (%v)", err)
					} else if !errors.Is(aerr, snapshot.ErrInvalid) {
						t.Errorf("Apply: %v does not match ErrInvalid", aerr)
					}
				}
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, snapshot.ErrInvalid) {
				t.Errorf("%v does not match ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if w := s.Counts().Writes(); w != 0 {
				t.Errorf("%d writes", w)
			}
		})
	}
	if h := head(t, mem, "u"); h != 1 {
		t.Fatalf("head moved to %d", h)
	}
	sameRecords(t, readAll(t, mem, "u", 1), before)
}

// encodingOnly marks cases whose body is bad only as an encoding: a lax
// decoder makes a valid patch of it.
const encodingOnly = " (encoding)"

func TestOpErrorNamesTheOp(t *testing.T) {
	_, err := diff.DecodePatch([]byte(`{"id":"p","base":0,"ops":[{"op":"delete","key":"a"},{"op":"merge","key":"b","patch":1}]}`), diff.Limits{})
	var oe *diff.OpError
	if !errors.As(err, &oe) || oe.Index != 1 || oe.Op != "merge" || oe.Key != "b" {
		t.Fatalf("got %v (%#v)", err, oe)
	}
}

func TestApplyOptionsValidated(t *testing.T) {
	p := &diff.Patch{ID: "p", Ops: []diff.Op{{Op: "delete", Key: "k"}}}
	tests := []struct {
		name string
		edit func(*diff.ApplyOptions)
	}{
		{"unknown policy", func(o *diff.ApplyOptions) { o.Policy = "last-writer-wins" }},
		{"bad org", func(o *diff.ApplyOptions) { o.Org = "../x" }},
		{"no user", func(o *diff.ApplyOptions) { o.User = "" }},
		{"no secret", func(o *diff.ApplyOptions) { o.Secret = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot.NewCountingStore(memstore.New())
			o := applyOpts("u", "")
			tc.edit(&o)
			_, err := diff.Apply(context.Background(), s, o, p)
			if !errors.Is(err, snapshot.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			if c := s.Counts(); c.Writes()+c.Gets+c.Stats+c.Lists != 0 {
				t.Fatalf("touched the store: %+v", c)
			}
		})
	}
}

func TestPoliciesMatchWire(t *testing.T) {
	// diff does not import wire; the names must stay the same.
	for _, tc := range []struct{ got, want string }{
		{diff.PolicyClientWins, "client-wins"}, {diff.PolicyServerWins, "server-wins"}, {diff.PolicyReject, "reject"},
	} {
		if tc.got != tc.want {
			t.Errorf("policy %q, want %q", tc.got, tc.want)
		}
	}
}

func TestApplyDoesNotModifyThePatch(t *testing.T) {
	p := &diff.Patch{ID: "p", Ops: []diff.Op{{Op: "put", Key: "k", Value: json.RawMessage(`{ "b":1, "a":2 }`)}}}
	before := string(mustJSON(t, p))
	if _, err := diff.Apply(context.Background(), memstore.New(), applyOpts("u", ""), p); err != nil {
		t.Fatal(err)
	}
	if after := string(mustJSON(t, p)); after != before {
		t.Fatalf("patch changed:\n%s\n%s", before, after)
	}
}
