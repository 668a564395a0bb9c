package diff_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

var update = flag.Bool("update", false, "rewrite the expectations of testdata/merge from the current behaviour")

// mergeCase is one file of testdata/merge: a data set at base (version 1),
// the server's data set at head (version 2, or still 1 if equal), the
// client's ops against base, and what replay must produce.
type mergeCase struct {
	Description string                     `json:"description"`
	Policy      string                     `json:"policy"`
	Base        map[string]json.RawMessage `json:"base"`
	Head        map[string]json.RawMessage `json:"head"`
	Ops         []diff.Op                  `json:"ops"`
	Want        mergeWant                  `json:"want"`
}

type mergeWant struct {
	Error    string                     `json:"error,omitempty"` // "conflict" for a rejected patch
	Created  bool                       `json:"created"`
	Records  map[string]json.RawMessage `json:"records"`  // the whole data set after replay
	Receipts json.RawMessage            `json:"receipts"` // exactly, in op order
}

func rawMap(m map[string]json.RawMessage) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestMergeGolden(t *testing.T) {
	files, err := filepath.Glob("../testdata/merge/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var tc mergeCase
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&tc); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			s := memstore.New()
			buildVersion(t, s, "u", toRecords(t, rawMap(tc.Base)))
			res, _ := buildVersion(t, s, "u", toRecords(t, rawMap(tc.Head)))
			h := uint64(1)
			if !res.Unchanged {
				h = 2
			}

			got, err := diff.Apply(ctx, s, applyOpts("u", tc.Policy), &diff.Patch{ID: "golden-" + name, Base: 1, Ops: tc.Ops})
			var gotWant mergeWant
			var rej *diff.RejectedError
			switch {
			case errors.As(err, &rej):
				if !errors.Is(err, diff.ErrConflict) {
					t.Errorf("rejection %v does not match ErrConflict", err)
				}
				gotWant.Error = "conflict"
				gotWant.Receipts = mustJSON(t, rej.Receipts)
			case err != nil:
				t.Fatal(err)
			default:
				gotWant.Created = got.Created
				gotWant.Receipts = mustJSON(t, got.Receipts)
				wantV := h
				if got.Created {
					wantV = h + 1
				}
				if got.Version != wantV {
					t.Errorf("version %d, want %d", got.Version, wantV)
				}
				for _, c := range got.Conflicts {
					if c.Status != diff.StatusConflict {
						t.Errorf("Conflicts holds a %s receipt", c.Status)
					}
				}
			}
			final := readAll(t, s, "u", head(t, s, "u"))
			gotWant.Records = map[string]json.RawMessage{}
			for k, v := range final {
				gotWant.Records[k] = v
			}

			if *update {
				tc.Want = gotWant
				out, err := json.MarshalIndent(tc, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, append(out, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if gotWant.Error != tc.Want.Error {
				t.Errorf("error %q, want %q", gotWant.Error, tc.Want.Error)
			}
			if gotWant.Created != tc.Want.Created {
				t.Errorf("created %v, want %v", gotWant.Created, tc.Want.Created)
			}
			want := map[string][]byte{}
			for _, r := range toRecords(t, rawMap(tc.Want.Records)) {
				want[r.Key] = r.Value
			}
			sameRecords(t, final, want)
			gr, err1 := snapshot.CanonicalJSON(gotWant.Receipts)
			wr, err2 := snapshot.CanonicalJSON(tc.Want.Receipts)
			if err1 != nil || err2 != nil || !bytes.Equal(gr, wr) {
				t.Errorf("receipts:\n got %s\nwant %s", gr, wr)
			}
		})
	}
}
