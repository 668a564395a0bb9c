package diff_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

var fuzzSeeds = []string{
	`{"id":"a","base":1,"ops":[{"op":"put","key":"k/1","value":{"a":1}}]}`,
	`{"id":"b","base":1,"ops":[{"op":"merge","key":"k/1","patch":{"a":3,"b":{"c":null}}},{"op":"delete","key":"k/2"}]}`,
	`{"id":"c","base":2,"ops":[{"op":"merge","key":"k/2","patch":{"x":1}},{"op":"merge","key":"k/9","patch":{"y":[1]}}]}`,
	`{"id":"d","base":0,"ops":[{"op":"put","key":"k/4","value":"<&>"},{"op":"put","key":"k/4","value":null},{"op":"delete","key":"k/4"}]}`,
	`{"id":"e","base":3,"ops":[{"op":"delete","key":"k/1"}]}`,
	`{"id":"f","base":1,"ops":[{"op":"merge","key":"k/3","patch":{}}]} `,
	`{"id":"g","base":1,"ops":[{"op":"put","key":"k/1","value":1e400}]}`,
	`{"id":"h","base":1,"ops":[{"op":"merge","key":"k/1","patch":{"b":{"c":"\u00e9\ud800"}}}]}`,
}

// addGoldenSeeds adds the ops of every golden merge case as a patch body.
func addGoldenSeeds(f *testing.F, add func(body []byte)) {
	files, _ := filepath.Glob("../testdata/merge/*.json")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var tc mergeCase
		if err := json.Unmarshal(data, &tc); err != nil {
			f.Fatal(err)
		}
		body, err := json.Marshal(diff.Patch{ID: filepath.Base(file), Base: 1, Ops: tc.Ops})
		if err != nil {
			f.Fatal(err)
		}
		add(body)
	}
}

// FuzzDecodePatch: no input panics, every refusal matches ErrInvalid, and
// an accepted patch survives encoding and decoding unchanged.
func FuzzDecodePatch(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	addGoldenSeeds(f, func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := diff.DecodePatch(body, diff.Limits{})
		if err != nil {
			if !errors.Is(err, snapshot.ErrInvalid) {
				t.Fatalf("refusal %v does not match ErrInvalid", err)
			}
			return
		}
		enc, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := diff.DecodePatch(enc, diff.Limits{MaxBytes: 1 << 30})
		if err != nil {
			t.Fatalf("re-encoded patch refused: %v\n%s", err, enc)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip changed the patch:\n%s\n%s", mustJSON(t, p), mustJSON(t, q))
		}
	})
}

// fuzzStore holds a tiny data set: version 1, and version 2 where the
// server changed some of it.
func fuzzStore(t testing.TB) snapshot.Store {
	s := memstore.New()
	v1 := map[string][]byte{
		"k/1": []byte(`{"a":1,"b":{"c":1,"d":2}}`),
		"k/2": []byte(`"x"`),
		"k/3": []byte(`[1,2]`),
		"k/5": []byte(`{"a":1}`),
	}
	buildVersion(t, s, "u", toRecords(t, v1))
	v2 := map[string][]byte{
		"k/1": []byte(`{"a":2,"b":{"c":1,"d":3}}`),
		"k/2": []byte(`"x"`),
		"k/3": []byte(`[1,2]`),
		"k/4": []byte(`{"new":true}`),
	}
	buildVersion(t, s, "u", toRecords(t, v2))
	return s
}

// FuzzReplay replays arbitrary patch bodies on a tiny data set: no panic,
// a refused or rejected patch writes nothing, an accepted one answers every
// op and replays as a duplicate.
func FuzzReplay(f *testing.F) {
	for _, s := range fuzzSeeds {
		for pol := range uint8(3) {
			f.Add([]byte(s), pol)
		}
	}
	addGoldenSeeds(f, func(b []byte) { f.Add(b, uint8(0)) })
	policies := []string{diff.PolicyClientWins, diff.PolicyServerWins, diff.PolicyReject}
	f.Fuzz(func(t *testing.T, body []byte, pol uint8) {
		p, err := diff.DecodePatch(body, diff.Limits{MaxOps: 64, MaxBytes: 64 << 10})
		if err != nil {
			return
		}
		ctx := context.Background()
		mem := fuzzStore(t)
		s := snapshot.NewCountingStore(mem)
		opts := applyOpts("u", policies[int(pol)%len(policies)])
		res, err := diff.Apply(ctx, s, opts, p)
		if err != nil {
			if !errors.Is(err, snapshot.ErrInvalid) && !errors.Is(err, diff.ErrConflict) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if w := s.Counts().Writes(); w != 0 {
				t.Fatalf("refused patch (%v) wrote %d objects", err, w)
			}
			if h := head(t, mem, "u"); h != 2 {
				t.Fatalf("refused patch moved the head to %d", h)
			}
			return
		}
		if len(res.Receipts) != len(p.Ops) {
			t.Fatalf("%d receipts for %d ops", len(res.Receipts), len(p.Ops))
		}
		for _, rc := range sharedSides(t, res.Receipts) {
			if rc.Status == diff.StatusConflict {
				checkBothValues(t, rc)
			}
		}
		want := uint64(2)
		if res.Created {
			want = 3
		}
		if h := head(t, mem, "u"); h != want || res.Version != want {
			t.Fatalf("head %d, result %+v", h, res)
		}
		again, err := diff.Apply(ctx, mem, opts, p)
		if err != nil || !again.Duplicate || again.Version != res.Version {
			t.Fatalf("replayed: %+v %v", again, err)
		}
	})
}
