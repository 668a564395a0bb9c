package diff

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
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

// TestFoldManyMergesOnABigValueCostTheirOwnSize pins the cost of a run of
// merges on one big record (issue 16 red-team): a patch of a few bytes per
// merge must not cost a re-encoding (nor a copy of the top-level object)
// of the whole record per merge, or a patch of 10,000 tiny merges on a
// 16 MiB record costs the server hours of CPU. Each merge may cost what it
// touches; the value is decoded and encoded once per run. Measured in
// bytes allocated, against a run of one merge.
func TestFoldManyMergesOnABigValueCostTheirOwnSize(t *testing.T) {
	val := gen.WideObject(20_000) // about 300 KB
	for _, max := range []int64{0, snapshot.MaxValueLen} {
		one := foldMerges(t, val, max, 1)
		many := foldMerges(t, val, max, 200)
		if many > 2*one {
			t.Errorf("max %d: 200 merges on a %d-byte value allocated %d bytes, one merge %d: want at most twice",
				max, len(val), many, one)
		}
	}
}

// foldMerges folds n small merges onto val and returns the bytes it
// allocated.
func foldMerges(t *testing.T, val []byte, max int64, n int) uint64 {
	t.Helper()
	f := NewFold(val, max)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		op := Op{Op: OpMerge, Patch: fmt.Appendf(nil, `{"k%07d":null,"n%d":true}`, i, i)}
		if reason, err := f.Apply(&op); err != nil || reason != "" {
			t.Fatalf("merge %d: %q %v", i, reason, err)
		}
	}
	got, err := f.Value()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	last := fmt.Sprintf(`"n%d":true`, n-1)
	if !bytes.Contains(got, []byte(last)) || bytes.Contains(got, []byte(`"k0000000"`)) {
		t.Fatalf("max %d: merges not applied", max)
	}
	return after.TotalAlloc - before.TotalAlloc
}

// TestFoldMatchesMergePatchAndItsLimit checks Fold's in-place merges and
// its sizes against the plain definition: each op applied with MergePatch,
// the result encoded, a merge over the limit refused. Values hold strings
// that need escaping, so that a size measured wrongly shows.
func TestFoldMatchesMergePatchAndItsLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 6))
	for run := range 400 {
		var start []byte
		if rng.IntN(4) != 0 {
			start = mustMarshal(t, foldRandValue(rng, 0))
		}
		max := int64(0)
		if rng.IntN(4) != 0 {
			max = int64(len(start)) + int64(rng.IntN(40))
		}
		f := NewFold(start, max)
		ref := start
		for i := range 1 + rng.IntN(12) {
			op := foldRandOp(rng)
			wantRef, wantOK := foldReference(t, ref, &op, max)
			reason, err := f.Apply(&op)
			if err != nil {
				t.Fatalf("run %d op %d: %v", run, i, err)
			}
			if (reason == "") != wantOK {
				t.Fatalf("run %d op %d (%s %s) on %s, max %d: reason %q, want applied=%v",
					run, i, op.Op, op.Value, ref, max, reason, wantOK)
			}
			ref = wantRef
			if rng.IntN(3) == 0 || i == 0 {
				got, err := f.Value()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, ref) || (got == nil) != (ref == nil) {
					t.Fatalf("run %d op %d: value %s, want %s", run, i, got, ref)
				}
			}
		}
	}
}

// foldReference applies op to cur (canonical; nil: absent) by the
// definition, returning the new value and whether the op applied.
func foldReference(t *testing.T, cur []byte, op *Op, max int64) ([]byte, bool) {
	switch op.Op {
	case OpPut:
		return op.Value, true
	case OpDelete:
		return nil, true
	}
	var target any
	if cur != nil {
		v, err := snapshot.DecodeJSON(cur)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := v.(map[string]any); !ok {
			return cur, false
		}
		target = v
	}
	p, err := snapshot.DecodeJSON(op.Patch)
	if err != nil {
		t.Fatal(err)
	}
	b := mustMarshal(t, MergePatch(target, p))
	if max > 0 && int64(len(b)) > max {
		return cur, false
	}
	return b, true
}

func foldRandOp(rng *rand.Rand) Op {
	switch rng.IntN(8) {
	case 0:
		return Op{Op: OpPut, Value: mustMarshal(nil, foldRandValue(rng, 0))}
	case 1:
		return Op{Op: OpDelete}
	}
	p := foldRandValue(rng, 0)
	if rng.IntN(8) != 0 {
		if _, ok := p.(map[string]any); !ok {
			p = map[string]any{"a": p}
		}
	}
	return Op{Op: OpMerge, Patch: mustMarshal(nil, p)}
}

// foldRandValue makes a small JSON value over a few names, nested up to
// three levels, with nulls and strings that need escaping.
func foldRandValue(rng *rand.Rand, depth int) any {
	names := []string{"a", "b", "c", `q"<&>`, "\u2028\n", "é"}
	switch k := rng.IntN(10); {
	case k < 5 && depth < 3 || depth == 0 && k < 8:
		m := map[string]any{}
		for range rng.IntN(4) {
			m[names[rng.IntN(len(names))]] = foldRandValue(rng, depth+1)
		}
		return m
	case k < 6:
		return nil
	case k < 7:
		return []any{foldRandValue(rng, 3), nil}
	case k < 8:
		return json.Number(fmt.Sprint(rng.IntN(1000)))
	default:
		return names[rng.IntN(len(names))] + strings.Repeat("x", rng.IntN(5))
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	b, err := snapshot.MarshalCanonical(v)
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatal(err)
	}
	return b
}

// BenchmarkFoldMergesOnABigValue folds 100 small merges onto a 1.7 MB
// record (the cost a patch of 100 edits of one big record has on the
// server's replay and on a device's view).
func BenchmarkFoldMergesOnABigValue(b *testing.B) {
	val := gen.WideObject(100_000)
	ops := make([]Op, 100)
	for i := range ops {
		ops[i] = Op{Op: OpMerge, Patch: fmt.Appendf(nil, `{"k%07d":null,"n%d":true}`, i, i)}
	}
	b.SetBytes(int64(len(val)))
	b.ReportAllocs()
	for b.Loop() {
		f := NewFold(val, snapshot.MaxValueLen)
		for i := range ops {
			if _, err := f.Apply(&ops[i]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := f.Value(); err != nil {
			b.Fatal(err)
		}
	}
}
