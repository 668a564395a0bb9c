package diff_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// TestPatchSizeIsTheEncodedLength pins PatchSize (what a client fills
// patches with) to the canonical body the server measures: keys and ids
// with every kind of escaping, canonical values with HTML characters.
func TestPatchSizeIsTheEncodedLength(t *testing.T) {
	keys := []string{"tasks/1", `q"uote`, `back\slash`, "tab\tnew\nline", "ctl\x01\x1f", "<&>", "line\u2028sep\u2029", "é/日本"}
	values := []string{`1`, `null`, `"<b>&amp;</b>"`, `{"a":[1,2.50,"\u2028"],"b":{"c":true}}`}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		p := &diff.Patch{ID: fmt.Sprintf("id-%d\"\\", i), Base: r.Uint64N(1 << uint(r.IntN(63)))}
		if i%3 > 0 {
			p.Seen = map[string]string{}
		}
		n := 1 + r.IntN(6)
		for j := 0; j < n; j++ {
			k := keys[r.IntN(len(keys))]
			op := diff.Op{Key: k}
			switch r.IntN(3) {
			case 0:
				op.Op, op.Value = diff.OpPut, json.RawMessage(values[r.IntN(len(values))])
			case 1:
				op.Op, op.Patch = diff.OpMerge, json.RawMessage(`{"x":`+values[r.IntN(len(values))]+`}`)
			default:
				op.Op = diff.OpDelete
			}
			p.Ops = append(p.Ops, op)
			if p.Seen != nil {
				if r.IntN(2) == 0 {
					p.Seen[k] = diff.SeenAbsent
				} else {
					p.Seen[k] = diff.SeenHash([]byte(k))
				}
			}
		}
		if err := p.Validate(diff.Limits{}); err != nil { // canonicalises
			t.Fatal(err)
		}
		body, err := diff.EncodePatch(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := diff.EncodedSize(p); got != int64(len(body)) {
			t.Fatalf("EncodedSize = %d, body has %d bytes: %s", got, len(body), body)
		}
	}
}

// TestSingleEditMayExceedMaxBytes: MaxBytes bounds patches of several
// edits; one edit alone may be as large as MaxRecordBytes allows, so a value
// the server accepts as a record always gets through.
func TestSingleEditMayExceedMaxBytes(t *testing.T) {
	lim := diff.Limits{MaxBytes: 1 << 10, MaxRecordBytes: 64 << 10}
	value := `"` + strings.Repeat("x", 60<<10) + `"`
	one := `{"id":"p","base":0,"ops":[{"op":"put","key":"forms/1","value":` + value + `}]}`
	if _, err := diff.DecodePatch([]byte(one), lim); err != nil {
		t.Fatalf("one edit of %d bytes under MaxRecordBytes: %v", len(value), err)
	}
	p := &diff.Patch{ID: "p", Ops: []diff.Op{{Op: diff.OpPut, Key: "forms/1", Value: json.RawMessage(value)}}}
	opts := applyOpts("u", "")
	opts.Limits = lim
	res, err := diff.Apply(context.Background(), memstore.New(), opts, p)
	if err != nil || !res.Created {
		t.Fatalf("Apply: %+v, %v", res, err)
	}
	two := `{"id":"p2","base":0,"ops":[{"op":"put","key":"forms/1","value":` + value + `},{"op":"delete","key":"x"}]}`
	_, err = diff.DecodePatch([]byte(two), lim)
	var le *diff.LimitError
	if !errors.As(err, &le) || le.Limit != diff.LimitPatchBytes || le.Max != 1<<10 {
		t.Fatalf("two edits over MaxBytes: %v, want a LimitError on %s", err, diff.LimitPatchBytes)
	}
}

// TestLimitErrorsMatchErrTooLarge: every limit, and nothing else, is
// ErrTooLarge (the server answers 413 for it, 400 for the rest); all are
// ErrInvalid.
func TestLimitErrorsMatchErrTooLarge(t *testing.T) {
	put := func(v string) string { return `{"op":"put","key":"k","value":` + v + `}` }
	tests := []struct {
		name, body string
		lim        diff.Limits
		limit      string // "" for an error that is not a limit
	}{
		{"ops", `{"id":"p","base":0,"ops":[` + put("1") + `,` + put("2") + `]}`, diff.Limits{MaxOps: 1}, diff.LimitPatchOps},
		{"bytes", `{"id":"p","base":0,"ops":[` + put("1") + `,` + put("2") + `]}`, diff.Limits{MaxBytes: 50}, diff.LimitPatchBytes},
		{"record", `{"id":"p","base":0,"ops":[` + put(`"abcdef"`) + `]}`, diff.Limits{MaxRecordBytes: 4}, diff.LimitRecordBytes},
		{"bad op", `{"id":"p","base":0,"ops":[{"op":"upsert","key":"k"}]}`, diff.Limits{MaxOps: 1}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := diff.DecodePatch([]byte(tc.body), tc.lim)
			if !errors.Is(err, snapshot.ErrInvalid) {
				t.Fatalf("%v does not match ErrInvalid", err)
			}
			var le *diff.LimitError
			if got := errors.As(err, &le); got != (tc.limit != "") || errors.Is(err, diff.ErrTooLarge) != got {
				t.Fatalf("%v: LimitError %v, want %v", err, got, tc.limit != "")
			}
			if le != nil && le.Limit != tc.limit {
				t.Errorf("limit %q, want %q", le.Limit, tc.limit)
			}
		})
	}
}

// TestRetryUnderStricterLimitsGetsItsAnswer: a patch applied whose answer
// was lost, retried after the org lowered its limits, gets the stored
// answer, not a 413 that would make the client send its edits again under
// new ids (and apply them twice).
func TestRetryUnderStricterLimitsGetsItsAnswer(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	p := &diff.Patch{ID: "p-1", Ops: []diff.Op{
		{Op: diff.OpPut, Key: "a", Value: json.RawMessage(`{"v":"long enough"}`)},
		{Op: diff.OpPut, Key: "b", Value: json.RawMessage(`2`)},
	}}
	opts := applyOpts("u", "")
	first, err := diff.Apply(ctx, mem, opts, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, lim := range []diff.Limits{{MaxOps: 1}, {MaxBytes: 10}, {MaxRecordBytes: 4}} {
		opts.Limits = lim
		again, err := diff.Apply(ctx, mem, opts, p)
		if err != nil {
			t.Fatalf("retry under %+v: %v", lim, err)
		}
		if !again.Duplicate || again.Version != first.Version {
			t.Fatalf("retry under %+v: %+v, want the first answer (version %d)", lim, again, first.Version)
		}
	}
	q := &diff.Patch{ID: "p-2", Ops: p.Ops}
	opts.Limits = diff.Limits{MaxOps: 1}
	if _, err := diff.Apply(ctx, mem, opts, q); !errors.Is(err, diff.ErrTooLarge) {
		t.Fatalf("a new patch over the limit: %v, want ErrTooLarge", err)
	}
	if h := head(t, mem, "u"); h != first.Version {
		t.Fatalf("head %d, want %d", h, first.Version)
	}
}

// TestMergedValueOverRecordLimitIsRejected: the value a merge produces is
// held to MaxRecordBytes too; the op is rejected with a receipt naming the
// limit, the rest of the patch applies.
func TestMergedValueOverRecordLimitIsRejected(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	buildVersion(t, mem, "u", toRecords(t, map[string][]byte{"a": []byte(`{"x":"0123456789"}`)}))
	opts := applyOpts("u", "")
	opts.Limits = diff.Limits{MaxRecordBytes: 24}
	p := &diff.Patch{ID: "p", Base: 1, Ops: []diff.Op{
		{Op: diff.OpMerge, Key: "a", Patch: json.RawMessage(`{"y":"0123"}`)},
		{Op: diff.OpPut, Key: "b", Value: json.RawMessage(`1`)},
	}}
	res, err := diff.Apply(ctx, mem, opts, p)
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Receipts[0]; r.Status != diff.StatusRejected || !strings.Contains(r.Reason, "over the limit of 24 bytes per record") {
		t.Errorf("merge receipt %+v", r)
	}
	if r := res.Receipts[1]; r.Status != diff.StatusApplied {
		t.Errorf("put receipt %+v", r)
	}
}

// TestRetryClosesWhatItReads: a retry of a patch whose intent exists
// (committed, answer lost) reads the intent; the reader must be closed (an
// open file on the directory store, a pooled connection on S3).
func TestRetryClosesWhatItReads(t *testing.T) {
	ctx := context.Background()
	s, opened, closed := countingBodies(memstore.New())
	p := &diff.Patch{ID: "p-1", Ops: []diff.Op{{Op: diff.OpPut, Key: "a", Value: json.RawMessage(`1`)}}}
	opts := applyOpts("u", "")
	if _, err := diff.Apply(ctx, s, opts, p); err != nil {
		t.Fatal(err)
	}
	// Lose the answer: the retry finds the intent and scans for the version.
	var answers []string
	err := s.List(ctx, "acme/u/patches/", func(info snapshot.ObjectInfo) error {
		if !strings.HasSuffix(info.Key, ".intent.json") {
			answers = append(answers, info.Key)
		}
		return nil
	})
	if err != nil || len(answers) != 1 {
		t.Fatalf("answers %v, %v", answers, err)
	}
	if err := s.Delete(ctx, answers[0]); err != nil {
		t.Fatal(err)
	}
	res, err := diff.Apply(ctx, s, opts, p)
	if err != nil || !res.Duplicate {
		t.Fatalf("retry: %+v, %v", res, err)
	}
	if n := opened.Load() - closed.Load(); n != 0 {
		t.Fatalf("%d readers left open", n)
	}
}
