package diff

import (
	"errors"
	"reflect"
	"testing"

	"github.com/deltasync/deltasync/snapshot"
)

// rfc7386 holds the examples of RFC 7386 appendix A, plus cases for an
// absent target and nested numbers.
var rfc7386 = []struct {
	target, patch, want string
}{
	{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
	{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
	{`{"a":"b"}`, `{"a":null}`, `{}`},
	{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
	{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
	{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
	{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
	{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
	{`["a","b"]`, `["c","d"]`, `["c","d"]`},
	{`{"a":"b"}`, `["c"]`, `["c"]`},
	{`{"a":"foo"}`, `null`, `null`},
	{`{"a":"foo"}`, `"bar"`, `"bar"`},
	{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
	{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
	{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
	// Beyond the appendix.
	{``, `{"a":1,"b":null}`, `{"a":1}`},
	{``, `[1]`, `[1]`},
	{`{"n":1.50,"z":{"y":2}}`, `{"z":{"x":1e3}}`, `{"n":1.50,"z":{"x":1e3,"y":2}}`},
}

func TestApplyMergePatchRFC7386(t *testing.T) {
	for _, tc := range rfc7386 {
		var target []byte
		if tc.target != "" {
			target = []byte(tc.target)
		}
		got, err := ApplyMergePatch(target, []byte(tc.patch))
		if err != nil {
			t.Errorf("ApplyMergePatch(%s, %s): %v", tc.target, tc.patch, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("ApplyMergePatch(%s, %s) = %s, want %s", tc.target, tc.patch, got, tc.want)
		}
	}
}

func decode(t *testing.T, s string) any {
	t.Helper()
	v, err := snapshot.DecodeJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMergePatchDoesNotMutateInputs(t *testing.T) {
	for _, tc := range rfc7386 {
		if tc.target == "" {
			continue
		}
		target, patch := decode(t, tc.target), decode(t, tc.patch)
		targetCopy, patchCopy := decode(t, tc.target), decode(t, tc.patch)
		got := MergePatch(target, patch)
		if !reflect.DeepEqual(target, targetCopy) {
			t.Errorf("target %s mutated to %v", tc.target, target)
		}
		if !reflect.DeepEqual(patch, patchCopy) {
			t.Errorf("patch %s mutated to %v", tc.patch, patch)
		}
		b, err := snapshot.MarshalCanonical(got)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("MergePatch(%s, %s) = %s, want %s", tc.target, tc.patch, b, tc.want)
		}
	}
}

func TestMergePatchResultIsFreshOnTouchedPath(t *testing.T) {
	target := decode(t, `{"a":{"b":1},"keep":{"x":1}}`)
	got := MergePatch(target, decode(t, `{"a":{"c":2}}`)).(map[string]any)
	// Writing into the touched object of the result must not reach target.
	got["a"].(map[string]any)["d"] = "new"
	if _, ok := target.(map[string]any)["a"].(map[string]any)["d"]; ok {
		t.Fatal("result shares the patched object with target")
	}
}

func TestApplyMergePatchBadJSON(t *testing.T) {
	for _, tc := range []struct{ target, patch string }{
		{`{"a":`, `{}`},
		{`{}`, `{"a":}`},
		{`{}`, `{} {}`},
	} {
		_, err := ApplyMergePatch([]byte(tc.target), []byte(tc.patch))
		if !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("ApplyMergePatch(%s, %s) error = %v, want ErrInvalid", tc.target, tc.patch, err)
		}
	}
}
