package diff_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// failingCreates wraps s so that PutIfAbsent fails with the error fail
// returns for its key (nil lets it through).
func failingCreates(s snapshot.Store, fail func(key string) error) *storetest.Faults {
	f := storetest.Wrap(s)
	f.Before = func(_ context.Context, op storetest.Op, key string) error {
		if op == storetest.OpPutIfAbsent {
			return fail(key)
		}
		return nil
	}
	return f
}

func answerKey(user, id string) string {
	sum := sha256.Sum256([]byte(id))
	return snapshot.PatchKey("acme", user, hex.EncodeToString(sum[:]))
}

func seed(t testing.TB, s snapshot.Store, user string, n int) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for i := range n {
		m[fmt.Sprintf("tasks/%03d", i)] = fmt.Appendf(nil, `{"n":%d,"status":"open","title":"task %d"}`, i, i)
	}
	buildVersion(t, s, user, toRecords(t, m))
	return m
}

func mergeOp(key, patch string) diff.Op {
	return diff.Op{Op: diff.OpMerge, Key: key, Patch: json.RawMessage(patch)}
}

func TestApplyTwiceGivesOneVersion(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 20)
	p := &diff.Patch{ID: "dup", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{"status":"done"}`), {Op: "delete", Key: "tasks/002"}}}
	first, err := diff.Apply(ctx, mem, applyOpts("u", ""), p)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Created || first.Version != 2 || first.Duplicate {
		t.Fatalf("first: %+v", first)
	}
	// The same patch again, also re-encoded with other whitespace and key
	// order: the stored answer, nothing written.
	again := &diff.Patch{ID: "dup", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{ "status" : "done" }`), {Op: "delete", Key: "tasks/002"}}}
	for _, q := range []*diff.Patch{p, again} {
		s := snapshot.NewCountingStore(mem)
		got, err := diff.Apply(ctx, s, applyOpts("u", ""), q)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Duplicate || got.Version != first.Version || !got.Created || string(mustJSON(t, got.Receipts)) != string(mustJSON(t, first.Receipts)) {
			t.Fatalf("replayed: %+v, first %+v", got, first)
		}
		if w := s.Counts().Writes(); w != 0 {
			t.Fatalf("%d writes", w)
		}
	}
	if h := head(t, mem, "u"); h != 2 {
		t.Fatalf("head %d, want 2", h)
	}
	// The same id with another body is refused.
	other := &diff.Patch{ID: "dup", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{"status":"doing"}`)}}
	s := snapshot.NewCountingStore(mem)
	if _, err := diff.Apply(ctx, s, applyOpts("u", ""), other); !errors.Is(err, diff.ErrPatchIDReused) || !errors.Is(err, snapshot.ErrInvalid) {
		t.Fatalf("reused id: %v", err)
	}
	if w := s.Counts().Writes(); w != 0 {
		t.Fatalf("%d writes", w)
	}
}

func TestNoChangeStillAnswered(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	recs := seed(t, mem, "u", 5)
	p := &diff.Patch{ID: "noop", Base: 1, Ops: []diff.Op{{Op: "put", Key: "tasks/001", Value: recs["tasks/001"]}, {Op: "delete", Key: "tasks/999"}}}
	got, err := diff.Apply(ctx, mem, applyOpts("u", ""), p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Created || got.Version != 1 || len(got.Receipts) != 2 || got.Receipts[0].Status != diff.StatusApplied || got.Receipts[1].Status != diff.StatusApplied {
		t.Fatalf("got %+v", got)
	}
	if _, err := mem.Stat(ctx, answerKey("u", "noop")); err != nil {
		t.Fatalf("answer not stored: %v", err)
	}
	again, err := diff.Apply(ctx, mem, applyOpts("u", ""), p)
	if err != nil || !again.Duplicate || again.Version != 1 || again.Created {
		t.Fatalf("again: %+v %v", again, err)
	}
	if h := head(t, mem, "u"); h != 1 {
		t.Fatalf("head %d", h)
	}
}

func TestRejectStoresNothing(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	recs := seed(t, mem, "u", 5)
	recs["tasks/001"] = []byte(`{"n":1,"status":"doing","title":"task 1"}`)
	buildVersion(t, mem, "u", toRecords(t, recs))
	p := &diff.Patch{ID: "rej", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{"status":"done"}`), mergeOp("tasks/002", `{"status":"done"}`)}}
	s := snapshot.NewCountingStore(mem)
	_, err := diff.Apply(ctx, s, applyOpts("u", diff.PolicyReject), p)
	var rej *diff.RejectedError
	if !errors.As(err, &rej) || !errors.Is(err, diff.ErrConflict) {
		t.Fatalf("got %v", err)
	}
	c := rej.Conflicts()
	if rej.Head != 2 || len(c) != 1 || c[0].Key != "tasks/001" || c[0].Won || len(c[0].ClientValue) == 0 || len(c[0].ServerValue) == 0 {
		t.Fatalf("rejection: %+v", rej)
	}
	if msg := err.Error(); !strings.Contains(msg, "1 conflicting ops") || !strings.Contains(msg, "tasks/001") {
		t.Errorf("error text %q", msg)
	}
	if rej.Receipts[1].Status != diff.StatusRejected || rej.Receipts[1].Reason == "" {
		t.Fatalf("other op: %+v", rej.Receipts[1])
	}
	if w := s.Counts().Writes(); w != 0 {
		t.Fatalf("%d writes", w)
	}
	// The client rebases and sends the same id again, now on the head.
	p.Base = 2
	got, err := diff.Apply(ctx, mem, applyOpts("u", diff.PolicyReject), p)
	if err != nil || !got.Created || got.Version != 3 {
		t.Fatalf("rebased: %+v %v", got, err)
	}
}

// TestRecoverAnswerAfterCrash loses the answer write after the version was
// committed (as a crash or a store outage would): a retry finds the version
// by its change set, answers from it and applies nothing twice, even after
// other patches moved the head on.
func TestRecoverAnswerAfterCrash(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 20)
	outage := errors.New("store unavailable")
	fs := failingCreates(mem, func(key string) error {
		if strings.Contains(key, "/patches/") && !strings.HasSuffix(key, ".intent.json") {
			return outage
		}
		return nil
	})
	p := &diff.Patch{ID: "lost-answer", Base: 1, Ops: []diff.Op{mergeOp("tasks/003", `{"status":"done","n":100}`)}}
	if _, err := diff.Apply(ctx, fs, applyOpts("u", ""), p); !errors.Is(err, outage) {
		t.Fatalf("got %v, want the outage", err)
	}
	if h := head(t, mem, "u"); h != 2 {
		t.Fatalf("head %d: the version should be committed", h)
	}
	for i := range 3 { // others move the head on
		q := &diff.Patch{ID: fmt.Sprint("other-", i), Base: 2, Ops: []diff.Op{mergeOp(fmt.Sprintf("tasks/%03d", 10+i), `{"x":1}`)}}
		if _, err := diff.Apply(ctx, mem, applyOpts("u", ""), q); err != nil {
			t.Fatal(err)
		}
	}
	s := snapshot.NewCountingStore(mem)
	got, err := diff.Apply(ctx, s, applyOpts("u", ""), p)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Duplicate || got.Version != 2 || len(got.Receipts) != 1 || got.Receipts[0].Status != diff.StatusApplied {
		t.Fatalf("retry: %+v", got)
	}
	if h := head(t, mem, "u"); h != 5 {
		t.Fatalf("head %d, want 5: the patch was applied twice", h)
	}
	if c := s.Counts(); c.Writes() != 1 {
		t.Fatalf("%d writes, want 1 (the recovered answer)", c.Writes())
	}
	// Now the answer is stored: no scan.
	s = snapshot.NewCountingStore(mem)
	if got, err := diff.Apply(ctx, s, applyOpts("u", ""), p); err != nil || !got.Duplicate || got.Version != 2 {
		t.Fatalf("second retry: %+v %v", got, err)
	}
	if c := s.Counts(); c.Gets != 1 || c.Writes() != 0 {
		t.Fatalf("second retry cost %+v, want one read", c)
	}
	// Recovery checks the body too.
	p.Ops[0] = mergeOp("tasks/003", `{"status":"doing"}`)
	mem.Delete(ctx, answerKey("u", p.ID))
	if _, err := diff.Apply(ctx, mem, applyOpts("u", ""), p); !errors.Is(err, diff.ErrPatchIDReused) {
		t.Fatalf("changed body after recovery: %v", err)
	}
}

// TestCommonPathCost pins what a patch costs: the base and the head are
// read, no version in between, and a handful of objects are written.
func TestCommonPathCost(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 200)
	for i := range 5 {
		q := &diff.Patch{ID: fmt.Sprint("warm-", i), Base: uint64(1 + i), Ops: []diff.Op{mergeOp(fmt.Sprintf("tasks/%03d", i), `{"x":1}`)}}
		if _, err := diff.Apply(ctx, mem, applyOpts("u", ""), q); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var read []string // keys of whole objects read
	rs := storetest.Wrap(mem)
	rs.Before = func(_ context.Context, op storetest.Op, key string) error {
		if op == storetest.OpGet {
			mu.Lock()
			read = append(read, key)
			mu.Unlock()
		}
		return nil
	}
	s := snapshot.NewCountingStore(rs)
	p := &diff.Patch{ID: "cost", Base: 1, Ops: []diff.Op{mergeOp("tasks/100", `{"x":2}`), mergeOp("tasks/150", `{"x":2}`)}}
	if _, err := diff.Apply(ctx, s, applyOpts("u", ""), p); err != nil {
		t.Fatal(err)
	}
	c := s.Counts()
	// pack, change set, manifest, head hint, intent, answer
	if c.Puts != 6 || c.Lists != 0 {
		t.Errorf("writes/lists %+v, want 6 puts and no list", c)
	}
	for _, k := range read {
		if v, ok := snapshot.ParseManifestKey(k); ok && v != 1 && v != 6 {
			t.Errorf("read version %d (%s): only the base and the head are needed", v, k)
		}
	}
}

// TestConcurrentPatches has many writers patch one user at once: every
// patch gets its receipts, the versions form one chain, and every op is in
// the final version.
func TestConcurrentPatches(t *testing.T) {
	const writers = 12
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 50)
	results := make([]*diff.Result, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			// Writers share records but touch their own fields, and each
			// also creates a key of its own.
			p := &diff.Patch{ID: fmt.Sprint("w", w), Base: 1, Ops: []diff.Op{
				mergeOp("tasks/007", fmt.Sprintf(`{"w%d":true}`, w)),
				mergeOp(fmt.Sprintf("tasks/%03d", w), fmt.Sprintf(`{"by":"w%d"}`, w)),
				{Op: "put", Key: fmt.Sprintf("notes/w%d", w), Value: json.RawMessage(`{"hello":1}`)},
			}}
			results[w], errs[w] = diff.Apply(ctx, mem, applyOpts("u", ""), p)
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for w := range writers {
		if errs[w] != nil {
			t.Fatalf("writer %d: %v", w, errs[w])
		}
		r := results[w]
		if !r.Created || len(r.Receipts) != 3 || seen[r.Version] {
			t.Fatalf("writer %d: %+v", w, r)
		}
		seen[r.Version] = true
		for _, rc := range r.Receipts {
			if rc.Status != diff.StatusApplied && rc.Status != diff.StatusMerged {
				t.Fatalf("writer %d: %+v", w, rc)
			}
		}
	}
	h := head(t, mem, "u")
	if h != writers+1 {
		t.Fatalf("head %d, want %d", h, writers+1)
	}
	for v := uint64(2); v <= h; v++ {
		m, err := snapshot.ReadManifest(ctx, mem, "acme", "u", v)
		if err != nil {
			t.Fatal(err)
		}
		if m.Parent != v-1 || !seen[v] {
			t.Fatalf("version %d: parent %d, produced by a writer: %v", v, m.Parent, seen[v])
		}
		cs, err := diff.ReadChangeSet(ctx, mem, m)
		if err != nil || cs.Kind != diff.KindPatch || cs.Patch == nil || len(cs.Receipts) != 3 {
			t.Fatalf("change set of %d: %+v %v", v, cs, err)
		}
	}
	final := readAll(t, mem, "u", h)
	var shared map[string]any
	if err := json.Unmarshal(final["tasks/007"], &shared); err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		if shared[fmt.Sprint("w", w)] != true {
			t.Errorf("tasks/007 lacks w%d: %s", w, final["tasks/007"])
		}
		if _, ok := final[fmt.Sprintf("notes/w%d", w)]; !ok {
			t.Errorf("notes/w%d missing", w)
		}
		if w != 7 && !strings.Contains(string(final[fmt.Sprintf("tasks/%03d", w)]), fmt.Sprintf(`"by":"w%d"`, w)) {
			t.Errorf("tasks/%03d: %s", w, final[fmt.Sprintf("tasks/%03d", w)])
		}
	}
}

// TestConcurrentSameID sends one patch several times at once, as a client
// retrying against several replicas would: it is applied once.
func TestConcurrentSameID(t *testing.T) {
	const senders = 8
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 20)
	results := make([]*diff.Result, senders)
	errs := make([]error, senders)
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			p := &diff.Patch{ID: "same", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{"count":1}`), {Op: "put", Key: "notes/x", Value: json.RawMessage(`1`)}}}
			results[i], errs[i] = diff.Apply(ctx, mem, applyOpts("u", ""), p)
		})
	}
	wg.Wait()
	for i := range senders {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if results[i].Version != 2 || !results[i].Created {
			t.Fatalf("sender %d: %+v", i, results[i])
		}
	}
	if h := head(t, mem, "u"); h != 2 {
		t.Fatalf("head %d: applied %d times", h, h-1)
	}
}

func TestApplyOnEmptyDataSet(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	p := &diff.Patch{ID: "first", Base: 0, Ops: []diff.Op{{Op: "put", Key: "a", Value: json.RawMessage(`{"x":1}`)}, mergeOp("b", `{"y":2}`)}}
	got, err := diff.Apply(ctx, mem, applyOpts("u", ""), p)
	if err != nil || !got.Created || got.Version != 1 {
		t.Fatalf("%+v %v", got, err)
	}
	sameRecords(t, readAll(t, mem, "u", 1), map[string][]byte{"a": []byte(`{"x":1}`), "b": []byte(`{"y":2}`)})
	// A second client that also started from nothing: base 0 against head 1.
	q := &diff.Patch{ID: "second", Base: 0, Ops: []diff.Op{{Op: "put", Key: "a", Value: json.RawMessage(`{"x":5}`)}, {Op: "put", Key: "c", Value: json.RawMessage(`3`)}}}
	got, err = diff.Apply(ctx, mem, applyOpts("u", ""), q)
	if err != nil || got.Version != 2 {
		t.Fatalf("%+v %v", got, err)
	}
	if r := got.Receipts[0]; r.Status != diff.StatusConflict || r.Fields[0] != "/x" || string(r.ServerValue) != `{"x":1}` {
		t.Fatalf("receipt %+v", r)
	}
	sameRecords(t, readAll(t, mem, "u", 2), map[string][]byte{"a": []byte(`{"x":5}`), "b": []byte(`{"y":2}`), "c": []byte(`3`)})
}

func TestCancelledWhileRacing(t *testing.T) {
	mem := memstore.New()
	seed(t, mem, "u", 5)
	ctx, cancel := context.WithCancel(context.Background())
	// Every claim of a version loses, as if another writer always won.
	fs := failingCreates(mem, func(key string) error {
		if strings.HasSuffix(key, ".manifest") {
			cancel()
			return fmt.Errorf("claim: %w", snapshot.ErrExist)
		}
		return nil
	})
	p := &diff.Patch{ID: "c", Base: 1, Ops: []diff.Op{mergeOp("tasks/001", `{"x":1}`)}}
	if _, err := diff.Apply(ctx, fs, applyOpts("u", ""), p); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// TestReplayAroundOversizeRecords patches records bigger than the largest
// chunk (split over several chunks), their neighbours, and keys before the
// first and after the last record, on a base the server changed elsewhere.
func TestReplayAroundOversizeRecords(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	big := func(tag string, n int) []byte {
		return fmt.Appendf(nil, `{"blob":%q,"tag":%q}`, strings.Repeat(tag, n), tag)
	}
	base := map[string][]byte{}
	for i := range 40 {
		base[fmt.Sprintf("m/%02d", i)] = fmt.Appendf(nil, `{"i":%d,"text":%q}`, i, strings.Repeat("word ", 400))
	}
	base["m/10x"] = big("a", 150<<10)
	base["m/20x"] = big("b", 300<<10)
	buildVersion(t, mem, "u", toRecords(t, base))
	srv := maps.Clone(base)
	srv["m/30"] = []byte(`{"i":30,"server":true}`)
	srv["m/20x"] = big("c", 200<<10)
	buildVersion(t, mem, "u", toRecords(t, srv))

	p := &diff.Patch{ID: "big", Base: 1, Ops: []diff.Op{
		mergeOp("a/first", `{"new":1}`),
		mergeOp("m/10x", `{"tag":"A"}`),
		mergeOp("m/10", `{"seen":true}`),
		mergeOp("m/11", `{"seen":true}`),
		mergeOp("m/20x", `{"note":"client"}`),
		{Op: "delete", Key: "m/39"},
		mergeOp("z/last", `{"new":2}`),
	}}
	res, err := diff.Apply(ctx, mem, applyOpts("u", ""), p)
	if err != nil {
		t.Fatal(err)
	}
	want := maps.Clone(srv)
	want["a/first"] = []byte(`{"new":1}`)
	want["m/10x"] = []byte(`{"blob":"` + strings.Repeat("a", 150<<10) + `","tag":"A"}`)
	want["m/10"] = []byte(strings.Replace(string(srv["m/10"]), `{"i":10,`, `{"i":10,"seen":true,`, 1))
	want["m/11"] = []byte(strings.Replace(string(srv["m/11"]), `{"i":11,`, `{"i":11,"seen":true,`, 1))
	want["m/20x"] = []byte(`{"blob":"` + strings.Repeat("c", 200<<10) + `","note":"client","tag":"c"}`)
	delete(want, "m/39")
	want["z/last"] = []byte(`{"new":2}`)
	sameRecords(t, readAll(t, mem, "u", res.Version), want)
	statuses := []string{}
	for _, r := range res.Receipts {
		statuses = append(statuses, r.Status)
	}
	if got := strings.Join(statuses, " "); got != "applied applied applied applied merged applied applied" {
		t.Fatalf("statuses %s", got)
	}
}

// TestApplyClosesWhatItOpens: every object body Apply opens is closed, on
// the path of a retry that finds its patch's intent (an answer lost after
// the commit) too. A body left open holds an S3 connection.
func TestApplyClosesWhatItOpens(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 20)
	outage := errors.New("store unavailable")
	lossy := failingCreates(mem, func(key string) error {
		if strings.Contains(key, "/patches/") && !strings.HasSuffix(key, ".intent.json") {
			return outage
		}
		return nil
	})
	p := &diff.Patch{ID: "open-bodies", Base: 1, Ops: []diff.Op{mergeOp("tasks/003", `{"status":"done"}`)}}
	if _, err := diff.Apply(ctx, lossy, applyOpts("u", ""), p); !errors.Is(err, outage) {
		t.Fatalf("got %v, want the outage", err)
	}
	for _, tc := range []struct {
		name string
		p    *diff.Patch
	}{
		{"retry with intent", p},
		{"fresh patch", &diff.Patch{ID: "fresh", Base: 1, Ops: []diff.Op{mergeOp("tasks/004", `{"status":"done"}`)}}},
	} {
		s, opened, closed := countingBodies(mem)
		if _, err := diff.Apply(ctx, s, applyOpts("u", ""), tc.p); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if opened.Load() == 0 || opened.Load() != closed.Load() {
			t.Errorf("%s: opened %d bodies, closed %d", tc.name, opened.Load(), closed.Load())
		}
	}
}

// TestPatchReadsNothingTwice: a patch reads its base manifest once (the
// change set's feed key must come after the parent's, whose manifest the
// replay has read already) and each pack byte once (planning reads the
// chunks that hold its keys, and building the new version reads them again
// to rebuild them; packs never change). Each second read was a store round
// trip between writing the pack and claiming the version.
func TestPatchReadsNothingTwice(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	seed(t, mem, "u", 2000)
	f := storetest.Wrap(mem)
	var mu sync.Mutex
	manifestReads := 0
	packReads := map[string]map[int64]int{} // pack -> byte offset -> reads
	f.Before = func(_ context.Context, op storetest.Op, key string) error {
		if (op == storetest.OpGet || op == storetest.OpGetRange) && key == snapshot.ManifestKey("acme", "u", 1) {
			mu.Lock()
			manifestReads++
			mu.Unlock()
		}
		return nil
	}
	f.GetRangeFunc = func(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
		mu.Lock()
		if packReads[key] == nil {
			packReads[key] = map[int64]int{}
		}
		for i := off; i < off+n; i++ {
			packReads[key][i]++
		}
		mu.Unlock()
		return mem.GetRange(ctx, key, off, n)
	}
	p := &diff.Patch{ID: "a", Base: 1, Ops: []diff.Op{mergeOp("tasks/1001", `{"status":"done"}`), mergeOp("tasks/1500", `{"n":0}`)}}
	if res, err := diff.Apply(ctx, f, applyOpts("u", ""), p); err != nil || res.Version != 2 {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	if manifestReads != 1 {
		t.Errorf("the patch read version 1's manifest %d times, want 1", manifestReads)
	}
	if len(packReads) == 0 {
		t.Fatal("no pack read")
	}
	for key, bytes := range packReads {
		twice := 0
		for _, n := range bytes {
			if n > 1 {
				twice++
			}
		}
		if twice > 0 {
			t.Errorf("%s: %d of the %d bytes read were read more than once", key, twice, len(bytes))
		}
	}
	got := readAll(t, mem, "u", 2)
	if string(got["tasks/1001"]) != `{"n":1001,"status":"done","title":"task 1001"}` || string(got["tasks/1500"]) != `{"n":0,"status":"open","title":"task 1500"}` {
		t.Errorf("records after the patch: %s, %s", got["tasks/1001"], got["tasks/1500"])
	}
	// The feed keys of the two versions are in order.
	m1, err := snapshot.ReadManifestHeader(ctx, mem, "acme", "u", 1)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := snapshot.ReadManifestHeader(ctx, mem, "acme", "u", 2)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Changes == "" || m1.Changes >= m2.Changes {
		t.Errorf("feed keys out of order: %q then %q", m1.Changes, m2.Changes)
	}
}
