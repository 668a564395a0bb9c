package diff

import (
	"errors"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/snapshot"
)

func TestFoldAppliesOpsAsReplayDoes(t *testing.T) {
	put := func(v string) Op { return Op{Op: OpPut, Value: []byte(v)} }
	merge := func(p string) Op { return Op{Op: OpMerge, Patch: []byte(p)} }
	del := Op{Op: OpDelete}
	cases := []struct {
		name     string
		start    string // "" is absent
		max      int64
		ops      []Op
		want     string // "" is absent
		rejected []string
	}{
		{"put replaces", `{"a":1}`, 0, []Op{put(`[1]`)}, `[1]`, nil},
		{"delete removes", `{"a":1}`, 0, []Op{del}, "", nil},
		{"merge onto absent starts from {}", "", 0, []Op{merge(`{"a":1}`)}, `{"a":1}`, nil},
		{"merge onto an object", `{"a":1,"b":2}`, 0, []Op{merge(`{"b":null,"c":{"d":3}}`)}, `{"a":1,"c":{"d":3}}`, nil},
		{"a run of merges", `{"a":1}`, 0, []Op{merge(`{"b":2}`), merge(`{"a":null}`), merge(`{"c":3}`)}, `{"b":2,"c":3}`, nil},
		{"put then merge", "", 0, []Op{put(`{"x":1}`), merge(`{"y":2}`)}, `{"x":1,"y":2}`, nil},
		{"merge then delete then merge", `{"a":1}`, 0, []Op{merge(`{"b":2}`), del, merge(`{"c":3}`)}, `{"c":3}`, nil},
		{"merge onto an array is refused", `[1,2]`, 0, []Op{merge(`{"a":1}`)}, `[1,2]`, []string{"non-object value (an array)"}},
		{"merge onto null is refused", `null`, 0, []Op{merge(`{"a":1}`)}, `null`, []string{"non-object value (null)"}},
		{"refused merge leaves the run going", `"s"`, 0, []Op{merge(`{"a":1}`), put(`{}`), merge(`{"a":1}`)}, `{"a":1}`, []string{"a string", ""}},
		{"merged value over the limit is refused", `{"a":"12345"}`, 20, []Op{merge(`{"b":"123456789"}`), merge(`{"b":1}`)}, `{"a":"12345","b":1}`, []string{"over the limit of 20 bytes", ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var start []byte
			if tc.start != "" {
				start = []byte(tc.start)
			}
			f := NewFold(start, tc.max)
			var reasons []string
			for i := range tc.ops {
				reason, err := f.Apply(&tc.ops[i])
				if err != nil {
					t.Fatalf("op %d: %v", i, err)
				}
				reasons = append(reasons, reason)
			}
			got, err := f.Value()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want || (got == nil) != (tc.want == "") {
				t.Errorf("value %q, want %q", got, tc.want)
			}
			for i, want := range tc.rejected {
				if want == "" && reasons[i] != "" || !strings.Contains(reasons[i], want) {
					t.Errorf("op %d: reason %q, want %q", i, reasons[i], want)
				}
			}
			if tc.rejected == nil {
				for i, r := range reasons {
					if r != "" {
						t.Errorf("op %d refused: %s", i, r)
					}
				}
			}
		})
	}
}

func TestFoldErrors(t *testing.T) {
	f := NewFold([]byte(`{"a":`), 0)
	if _, err := f.Apply(&Op{Op: OpMerge, Patch: []byte(`{}`)}); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Errorf("merge onto a damaged value: %v, want ErrCorrupt", err)
	}
	f = NewFold(nil, 0)
	if _, err := f.Apply(&Op{Op: OpMerge, Patch: []byte(`{"a"`)}); !errors.Is(err, snapshot.ErrInvalid) {
		t.Errorf("malformed merge patch: %v, want ErrInvalid", err)
	}
	if _, err := f.Apply(&Op{Op: "append"}); !errors.Is(err, snapshot.ErrInvalid) {
		t.Errorf("unknown op: %v, want ErrInvalid", err)
	}
}
