package gen

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestCRMDataset: the second family is deterministic, sorted, near its
// size, with unique collection/id keys, canonical values and every
// collection present.
func TestCRMDataset(t *testing.T) {
	o := Options{Size: 4 * mb, Seed: 3}
	recs := CRMDataset(o)
	if again := CRMDataset(o); !slices.EqualFunc(recs, again, func(a, b Record) bool { return a.Key == b.Key && bytes.Equal(a.Value, b.Value) }) {
		t.Fatal("not deterministic")
	}
	if other := CRMDataset(Options{Size: 4 * mb, Seed: 4}); other[0].Key == recs[0].Key {
		t.Error("seeds 3 and 4 start with the same key")
	}
	var total int64
	colls := map[string]int{}
	for i, r := range recs {
		if i > 0 && recs[i-1].Key >= r.Key {
			t.Fatalf("keys out of order or repeated at %d: %q, %q", i, recs[i-1].Key, r.Key)
		}
		coll, id, ok := strings.Cut(r.Key, "/")
		if !ok || len(id) != 10 {
			t.Fatalf("key %q", r.Key)
		}
		colls[coll]++
		if c := canonical(t, r.Value); !bytes.Equal(c, r.Value) {
			t.Fatalf("%s: not canonical", r.Key)
		}
		total += LineSize(r)
	}
	if total < o.Size || total > o.Size+o.Size/50 {
		t.Errorf("%d bytes of NDJSON for %d", total, o.Size)
	}
	if len(colls) != len(crmMix) {
		t.Errorf("collections %v", colls)
	}
}

// TestCRMScenarios: every scenario is pure and sorted, and each changes
// what its name says.
func TestCRMScenarios(t *testing.T) {
	recs := CRMDataset(Options{Size: 2 * mb, Seed: 5})
	before := slices.Clone(recs)
	for _, sc := range CRMScenarios(5) {
		next := sc.Apply(recs)
		if !slices.EqualFunc(recs, before, func(a, b Record) bool { return a.Key == b.Key && bytes.Equal(a.Value, b.Value) }) {
			t.Fatalf("%s modified its input", sc.Name)
		}
		changed, added := 0, len(next)-len(recs)
		byKey := map[string][]byte{}
		for _, r := range recs {
			byKey[r.Key] = r.Value
		}
		for i, r := range next {
			if i > 0 && next[i-1].Key >= r.Key {
				t.Fatalf("%s: not sorted", sc.Name)
			}
			if old, ok := byKey[r.Key]; ok && !bytes.Equal(old, r.Value) {
				changed++
				if c := canonical(t, r.Value); !bytes.Equal(c, r.Value) {
					t.Fatalf("%s: %s not canonical", sc.Name, r.Key)
				}
			}
		}
		want := map[string][2]int{
			"edit-one-field": {1, 0}, "edit-100-scattered": {100, 0}, "insert-500": {0, 500}, "delete-1000": {0, -1000},
			"rename-field-10pct": {len(recs) / 10, 0}, "change-10pct": {len(recs) / 10, 0},
		}[sc.Name]
		if d := changed - want[0]; d < -1 || d > 1 || added != want[1] {
			t.Errorf("%s: %d changed, %d added; want %d, %d", sc.Name, changed, added, want[0], want[1])
		}
		if sc.Name == "rename-field-10pct" && !renamedADeal(t, next) {
			t.Error("no deal renamed")
		}
	}
}

func renamedADeal(t *testing.T, recs []Record) bool {
	for _, r := range recs {
		if strings.HasPrefix(r.Key, "deals/") && bytes.Contains(r.Value, []byte(`"pipelineStage"`)) {
			var m map[string]any
			json.Unmarshal(r.Value, &m)
			if _, ok := m["stage"]; ok {
				t.Fatalf("%s: renamed deal keeps its old field", r.Key)
			}
			return true
		}
	}
	return false
}
