package snapshot_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

func drain(t *testing.T, s *snapshot.SortedRecords) []gen.Record {
	t.Helper()
	var out []gen.Record
	for {
		k, v, err := s.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, gen.Record{Key: k, Value: bytes.Clone(v)})
	}
}

func TestReadNDJSONSortsAndCanonicalises(t *testing.T) {
	in := `{"key":"tasks/2","value":{"b":1,"a":[1, 2 ,{"z":null,"y":"<&>"}]}}
{"value": 3.50, "key":"tasks/1"}

{"key":"a","value":"x"}
`
	s, err := snapshot.ReadNDJSON(strings.NewReader(in), snapshot.NDJSONOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := drain(t, s)
	want := []gen.Record{
		{Key: "a", Value: []byte(`"x"`)},
		{Key: "tasks/1", Value: []byte(`3.50`)},
		{Key: "tasks/2", Value: []byte(`{"a":[1,2,{"y":"<&>","z":null}],"b":1}`)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Key != want[i].Key || string(got[i].Value) != string(want[i].Value) {
			t.Errorf("record %d: got %s=%s, want %s=%s", i, got[i].Key, got[i].Value, want[i].Key, want[i].Value)
		}
	}
}

func TestReadNDJSONSpilledRuns(t *testing.T) {
	var buf bytes.Buffer
	if _, err := gen.Generate(&buf, gen.Options{Size: 1 << 20, Seed: 11}); err != nil {
		t.Fatal(err)
	}
	want := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 11})
	s, err := snapshot.ReadNDJSON(bytes.NewReader(buf.Bytes()), snapshot.NDJSONOptions{RunBytes: 100 << 10, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sameRecords(t, drain(t, s), want)
}

func TestReadNDJSONErrorsNameLine(t *testing.T) {
	long := strings.Repeat("k", snapshot.MaxKeyLen+1)
	huge := `"` + strings.Repeat("x", snapshot.MaxValueLen) + `"`
	ok := `{"key":"a","value":1}` + "\n"
	tests := []struct {
		name, in string
		line     int64
		want     string
	}{
		{"not json", ok + "{nope\n", 2, "bad record"},
		{"missing key", ok + `{"value":1}` + "\n", 2, "missing \"key\""},
		{"missing value", ok + `{"key":"b"}` + "\n", 2, "missing \"value\""},
		{"unknown field", ok + `{"key":"b","value":1,"x":2}` + "\n", 2, "unknown field"},
		{"empty key", `{"key":"","value":1}` + "\n", 1, "empty key"},
		{"NUL in key", `{"key":"a\u0000b","value":1}` + "\n", 1, "NUL"},
		{"key too long", ok + `{"key":"` + long + `","value":1}` + "\n", 2, "exceeds 512"},
		{"value too big", ok + ok[:0] + `{"key":"b","value":` + huge + "}\n", 2, "exceeds"},
		{"bad value", `{"key":"b","value":[1,}` + "\n", 1, "bad record"},
		{"duplicate", ok + `{"key":"b","value":1}` + "\n" + ok, 3, "duplicate key \"a\" (first at line 1)"},
		{"trailing", ok + `{"key":"b","value":1} {}` + "\n", 2, "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := snapshot.ReadNDJSON(strings.NewReader(tt.in), snapshot.NDJSONOptions{})
			var le *snapshot.LineError
			if !errors.As(err, &le) || le.Line != tt.line || !errors.Is(err, snapshot.ErrInvalid) {
				t.Fatalf("err = %v, want a LineError at line %d wrapping ErrInvalid", err, tt.line)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), fmt.Sprintf("line %d", tt.line)) {
				t.Fatalf("err = %q, want it to mention %q and the line", err, tt.want)
			}
		})
	}
}

func TestReadNDJSONDuplicateAcrossRuns(t *testing.T) {
	var b strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&b, `{"key":"k%05d","value":{"n":%d}}`+"\n", i, i)
	}
	fmt.Fprintf(&b, `{"key":"k00007","value":{"again":true}}`+"\n")
	_, err := snapshot.ReadNDJSON(strings.NewReader(b.String()), snapshot.NDJSONOptions{RunBytes: 4 << 10, TempDir: t.TempDir()})
	var le *snapshot.LineError
	if !errors.As(err, &le) || le.Line != 2001 || !strings.Contains(err.Error(), "first at line 8") {
		t.Fatalf("err = %v, want duplicate at line 2001 (first at line 8)", err)
	}
}
