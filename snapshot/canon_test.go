package snapshot

import (
	"bytes"
	"testing"
)

func TestCanonicalFastPath(t *testing.T) {
	tests := []struct {
		in        string
		canonical bool
	}{
		{`{"a":1,"b":[true,false,null,"x"]}`, true},
		{`{"b":1,"a":2}`, false},
		{`{"a":1,"a":2}`, false},
		{`{"a": 1}`, false},
		{`"tab\there"`, false},
		{`"<&>"`, true},
		{`"\u2028"`, false},
		{"\"\u2028\"", false},
		{`-0.5e+10`, true},
		{`01`, false},
		{`1.`, false},
		{`{"é":1,"z":2}`, false},
		{`{"z":2,"é":1}`, true},
		{"\"\xff\"", false},
		{`[]`, true},
		{`{}`, true},
	}
	for _, tt := range tests {
		if got := isCanonical([]byte(tt.in)); got != tt.canonical {
			t.Errorf("isCanonical(%s) = %v, want %v", tt.in, got, tt.canonical)
		}
		if tt.canonical {
			v, err := DecodeJSON([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			slow, _ := MarshalCanonical(v)
			if string(slow) != tt.in {
				t.Errorf("%s is not a fixed point of the slow path: %s", tt.in, slow)
			}
		}
	}
}

// FuzzCanonicalFastPath: whatever the scanner vouches for must be exactly
// what decoding and re-encoding produces.
func FuzzCanonicalFastPath(f *testing.F) {
	f.Add([]byte(`{"a":[1,2,{"b":"c"}],"d":-1.5e3}`))
	f.Add([]byte(`{"key":"k","value":{"x":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if isCanonical(data) {
			v, err := DecodeJSON(data)
			if err != nil {
				t.Fatalf("vouched for invalid JSON %q: %v", data, err)
			}
			slow, err := MarshalCanonical(v)
			if err != nil || !bytes.Equal(slow, data) {
				t.Fatalf("fast path %q, slow path %q", data, slow)
			}
		}
		if k, v, ok := parseLineFast(data); ok {
			k2, v2, err := ParseNDJSONLine(append([]byte(" "), data...)) // the slow path (leading space)
			if err == nil && (k2 != k || !bytes.Equal(v2, v)) {
				t.Fatalf("fast line %q,%q slow %q,%q", k, v, k2, v2)
			}
		}
	})
}
