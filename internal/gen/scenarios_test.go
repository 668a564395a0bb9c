package gen

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

var (
	baseOnce sync.Once
	baseSet  []Record
)

// base is a shared 4 MiB data set; tests must not modify it.
func base(t testing.TB) []Record {
	t.Helper()
	baseOnce.Do(func() { baseSet = Dataset(Options{Size: 4 * mb, Seed: 3}) })
	return baseSet
}

func deepCopy(recs []Record) []Record {
	out := make([]Record, len(recs))
	for i, r := range recs {
		out[i] = Record{Key: r.Key, Value: bytes.Clone(r.Value)}
	}
	return out
}

func equalRecords(a, b []Record) bool {
	return slices.EqualFunc(a, b, func(x, y Record) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
}

type delta struct {
	changed, added, removed []string
}

// diff compares two sorted data sets by key.
func diff(old, new []Record) delta {
	var d delta
	for len(old) > 0 || len(new) > 0 {
		switch {
		case len(new) == 0 || len(old) > 0 && old[0].Key < new[0].Key:
			d.removed = append(d.removed, old[0].Key)
			old = old[1:]
		case len(old) == 0 || new[0].Key < old[0].Key:
			d.added = append(d.added, new[0].Key)
			new = new[1:]
		default:
			if !bytes.Equal(old[0].Value, new[0].Value) {
				d.changed = append(d.changed, old[0].Key)
			}
			old, new = old[1:], new[1:]
		}
	}
	return d
}

// changedFields lists the top-level fields that differ between two object
// values.
func changedFields(t testing.TB, a, b []byte) []string {
	t.Helper()
	var x, y map[string]any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range x {
		if _, ok := y[k]; !ok || !reflect.DeepEqual(x[k], y[k]) {
			out = append(out, k)
		}
	}
	for k := range y {
		if _, ok := x[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

func TestScenarios(t *testing.T) {
	recs := base(t)
	n := len(recs)
	tenPct := int(0.10*float64(n) + 0.5)
	want := map[string][3]int{ // changed, added, removed
		"edit-one-field":         {1, 0, 0},
		"edit-100-scattered":     {100, 0, 0},
		"insert-500-interleaved": {0, 500, 0},
		"delete-1000":            {0, 0, 1000},
		"add-2MiB-attachment":    {0, 1, 0},
		"change-10pct":           {tenPct, 0, 0},
	}
	scens := Scenarios(42)
	if len(scens) != len(want) {
		t.Fatalf("%d scenarios; want %d", len(scens), len(want))
	}
	for _, sc := range scens {
		t.Run(sc.Name, func(t *testing.T) {
			before := deepCopy(recs)
			out := sc.Apply(recs)
			if !equalRecords(recs, before) {
				t.Fatal("scenario modified its input")
			}
			if !equalRecords(out, sc.Apply(recs)) {
				t.Error("scenario is not deterministic")
			}
			for i := 1; i < len(out); i++ {
				if out[i-1].Key >= out[i].Key {
					t.Fatalf("output not sorted or not unique at %d: %q, %q", i, out[i-1].Key, out[i].Key)
				}
			}
			d := diff(recs, out)
			w, ok := want[sc.Name]
			if !ok {
				t.Fatalf("unexpected scenario %q", sc.Name)
			}
			if got := [3]int{len(d.changed), len(d.added), len(d.removed)}; got != w {
				t.Fatalf("changed, added, removed = %v; want %v", got, w)
			}
			old := make(map[string][]byte, len(recs))
			for _, r := range recs {
				old[r.Key] = r.Value
			}
			for _, r := range out {
				if !json.Valid(r.Value) {
					t.Fatalf("%s: invalid JSON", r.Key)
				}
				if prev, ok := old[r.Key]; ok && !bytes.Equal(prev, r.Value) {
					if f := changedFields(t, prev, r.Value); len(f) != 1 {
						t.Fatalf("%s: fields %v changed; want exactly one", r.Key, f)
					}
					if c := canonical(t, r.Value); !bytes.Equal(c, r.Value) {
						t.Fatalf("%s: edited value is not canonical", r.Key)
					}
				}
			}
		})
	}
}

func TestEditOneFieldChangesATaskStatus(t *testing.T) {
	recs := base(t)
	d := diff(recs, EditOneField(recs, 1))
	if len(d.changed) != 1 || !strings.HasPrefix(d.changed[0], "tasks/") {
		t.Fatalf("changed %v; want one task", d.changed)
	}
	out := EditOneField(recs, 1)
	i, _ := slices.BinarySearchFunc(out, d.changed[0], func(r Record, k string) int { return strings.Compare(r.Key, k) })
	if f := changedFields(t, recs[i].Value, out[i].Value); !slices.Equal(f, []string{"status"}) {
		t.Errorf("changed fields %v; want [status]", f)
	}
	if equalRecords(out, EditOneField(recs, 2)) {
		t.Error("seeds 1 and 2 made the same edit")
	}
}

func TestInsertInterleavedKeysFallBetween(t *testing.T) {
	recs := base(t)
	out := InsertInterleaved(recs, 500, 9)
	for _, k := range diff(recs, out).added {
		coll, _, _ := strings.Cut(k, "/")
		if coll == "attachments" {
			t.Errorf("inserted attachment %s", k)
		}
		// tasks/t0000042a: the key it was made from is in the data set.
		base := strings.TrimRight(k, "abcdefghijklmnopqrstuvwxyz")
		if _, found := slices.BinarySearchFunc(recs, base, func(r Record, k string) int { return strings.Compare(r.Key, k) }); !found {
			t.Errorf("inserted %s, but %s is not in the data set", k, base)
		}
		i, _ := slices.BinarySearchFunc(out, k, func(r Record, k string) int { return strings.Compare(r.Key, k) })
		if i == 0 || i == len(out)-1 {
			t.Errorf("inserted %s at the edge", k)
		}
	}
}

func TestAddAttachmentSize(t *testing.T) {
	recs := base(t)
	out := AddAttachment(recs, 2<<20, 5)
	d := diff(recs, out)
	if len(d.added) != 1 || !strings.HasPrefix(d.added[0], "attachments/a") {
		t.Fatalf("added %v; want one attachment", d.added)
	}
	i, _ := slices.BinarySearchFunc(out, d.added[0], func(r Record, k string) int { return strings.Compare(r.Key, k) })
	var a struct {
		Data []byte `json:"data"` // base64 decodes into []byte
		Size int    `json:"size"`
	}
	if err := json.Unmarshal(out[i].Value, &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Data) != 2<<20 || a.Size != 2<<20 {
		t.Errorf("attachment holds %d bytes, says %d; want %d", len(a.Data), a.Size, 2<<20)
	}
	// Its bytes are new, not a copy of an existing photo.
	probe := out[i].Value[bytes.Index(out[i].Value, []byte(`"data":"`))+100:][:64]
	for _, r := range recs {
		if bytes.Contains(r.Value, probe) {
			t.Fatalf("new attachment's data repeats %s", r.Key)
		}
	}
}

func TestEditsOnSmallAndOddInput(t *testing.T) {
	odd := []Record{
		{Key: "notes/1", Value: []byte(`"just a string"`)},
		{Key: "notes/2", Value: []byte(`{"b":1,"a":[1,2]}`)},
	}
	before := deepCopy(odd)
	for name, out := range map[string][]Record{
		"one":     EditOneField(odd, 1),
		"all":     EditScattered(odd, 10, 1),
		"frac":    ChangeFraction(odd, 1, 1),
		"insert":  InsertInterleaved(odd, 3, 1),
		"delete":  DeleteRandom(odd, 5, 1),
		"attach":  AddAttachment(odd, 1000, 1),
		"empty":   EditScattered(nil, 3, 1),
		"emptyIn": InsertInterleaved(nil, 2, 1),
	} {
		for _, r := range out {
			if !json.Valid(r.Value) {
				t.Errorf("%s: %s: invalid JSON %s", name, r.Key, r.Value)
			}
		}
		if !isSorted(out) {
			t.Errorf("%s: not sorted", name)
		}
	}
	if !equalRecords(odd, before) {
		t.Error("input modified")
	}
	if got := len(DeleteRandom(odd, 5, 1)); got != 0 {
		t.Errorf("DeleteRandom(5) of 2 left %d", got)
	}
	if d := diff(odd, EditScattered(odd, 10, 1)); len(d.changed) != 2 {
		t.Errorf("EditScattered(10) of 2 changed %v", d.changed)
	}
}

func BenchmarkScenarios(b *testing.B) {
	recs := base(b)
	for _, sc := range Scenarios(1) {
		b.Run(sc.Name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sc.Apply(recs)
			}
		})
	}
}
