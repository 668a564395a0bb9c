package diff_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// jv is a decoded JSON value or an absent one.
type jv struct {
	v  any
	ok bool
}

func decodeJV(t testing.TB, b []byte) jv {
	t.Helper()
	if b == nil {
		return jv{}
	}
	v, err := snapshot.DecodeJSON(b)
	if err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return jv{v, true}
}

func (a jv) eq(b jv) bool { return a.ok == b.ok && (!a.ok || reflect.DeepEqual(a.v, b.v)) }

func (a jv) get(path []string) jv {
	for _, f := range path {
		m, ok := a.v.(map[string]any)
		if !a.ok || !ok {
			return jv{}
		}
		v, ok := m[f]
		a = jv{v, ok}
	}
	return a
}

func (a jv) String() string {
	if !a.ok {
		return "<absent>"
	}
	b, _ := snapshot.MarshalCanonical(a.v)
	return string(b)
}

// changedPaths lists where b differs from a, field by field as long as b is
// an object (a non-object a counts as an empty object: its replacement by an
// object sets fields), and as a whole where b is not an object.
func changedPaths(a, b jv, path []string, out *[][]string) {
	if a.eq(b) {
		return
	}
	bm, bObj := b.v.(map[string]any)
	if !b.ok || !bObj {
		*out = append(*out, slices.Clone(path))
		return
	}
	am, aObj := a.v.(map[string]any)
	if a.ok && !aObj {
		am = nil
	}
	keys := map[string]bool{}
	for k := range am {
		keys[k] = true
	}
	for k := range bm {
		keys[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		changedPaths(a.get([]string{k}), b.get([]string{k}), append(path, k), out)
	}
}

func paths(a, b jv) [][]string {
	var out [][]string
	changedPaths(a, b, nil, &out)
	return out
}

// overlaps reports whether one path is a prefix of the other.
func overlaps(p, q []string) bool {
	n := min(len(p), len(q))
	return slices.Equal(p[:n], q[:n])
}

func anyOverlap(p []string, set [][]string) bool {
	for _, q := range set {
		if overlaps(p, q) {
			return true
		}
	}
	return false
}

func parsePointer(s string) []string {
	if s == "" {
		return []string{}
	}
	parts := strings.Split(s[1:], "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
	}
	return parts
}

// randValue makes a small JSON value: mostly objects over a few field
// names (so that both sides often touch the same fields), sometimes nested,
// sometimes a scalar or an array.
func randValue(rng *rand.Rand, depth int) any {
	k := rng.IntN(10)
	if depth == 0 && rng.IntN(7) != 0 {
		k = 0 // records are mostly objects
	}
	switch {
	case k < 6:
		m := map[string]any{}
		for range 1 + rng.IntN(4) {
			f := string(rune('a' + rng.IntN(5)))
			if depth < 2 && rng.IntN(4) == 0 {
				m[f] = randValue(rng, depth+1)
			} else {
				m[f] = json.Number(fmt.Sprint(rng.IntN(4)))
			}
		}
		return m
	case k < 8:
		return fmt.Sprint("s", rng.IntN(3))
	case k < 9:
		return []any{json.Number(fmt.Sprint(rng.IntN(3)))}
	default:
		return nil
	}
}

// randPatch makes a merge patch over the value's own fields and a few
// others, with removals (null) and nested patches.
func randPatch(rng *rand.Rand, cur []byte) any {
	var fields []string
	if v, err := snapshot.DecodeJSON(cur); err == nil {
		if m, ok := v.(map[string]any); ok {
			fields = slices.Sorted(maps.Keys(m))
		}
	}
	p := map[string]any{}
	for range 1 + rng.IntN(3) {
		f := string(rune('a' + rng.IntN(5)))
		if len(fields) > 0 && rng.IntN(2) == 0 {
			f = fields[rng.IntN(len(fields))]
		}
		switch rng.IntN(5) {
		case 0:
			p[f] = nil
		case 1:
			p[f] = map[string]any{string(rune('a' + rng.IntN(3))): json.Number(fmt.Sprint(rng.IntN(4)))}
		default:
			p[f] = json.Number(fmt.Sprint(rng.IntN(4)))
		}
	}
	return p
}

func mustCanon(t testing.TB, v any) []byte {
	t.Helper()
	b, err := snapshot.MarshalCanonical(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// randOps makes n ops over the keys of model (and some new ones), as a
// user editing offline would: several ops may hit one key. If apply is
// set, each op is applied to model as it is made.
func randOps(t testing.TB, rng *rand.Rand, model map[string][]byte, n int, apply bool) []diff.Op {
	keys := slices.Sorted(maps.Keys(model))
	cur := maps.Clone(model)
	var ops []diff.Op
	for range n {
		var key string
		if len(keys) > 0 && rng.IntN(5) != 0 {
			key = keys[rng.IntN(len(keys))]
		} else {
			key = fmt.Sprintf("k/new%d", rng.IntN(4))
		}
		var op diff.Op
		switch k := rng.IntN(10); {
		case k < 3:
			op = diff.Op{Op: diff.OpPut, Key: key, Value: mustCanon(t, randValue(rng, 0))}
		case k < 8:
			op = diff.Op{Op: diff.OpMerge, Key: key, Patch: mustCanon(t, randPatch(rng, cur[key]))}
		default:
			op = diff.Op{Op: diff.OpDelete, Key: key}
		}
		ops = append(ops, op)
		foldOp(t, cur, op)
	}
	if apply {
		maps.Copy(model, cur)
		for k := range model {
			if _, ok := cur[k]; !ok {
				delete(model, k)
			}
		}
	}
	return ops
}

// foldOp applies one op to a model the way a client sees it: a merge into
// a value that is not an object is refused (and reported false).
func foldOp(t testing.TB, m map[string][]byte, op diff.Op) bool {
	switch op.Op {
	case diff.OpPut:
		m[op.Key] = op.Value
	case diff.OpDelete:
		delete(m, op.Key)
	case diff.OpMerge:
		var target any
		if cur, ok := m[op.Key]; ok {
			target = decodeJV(t, cur).v
			if _, isObj := target.(map[string]any); !isObj {
				return false
			}
		}
		m[op.Key] = mustCanon(t, diff.MergePatch(target, decodeJV(t, op.Patch).v))
	}
	return true
}

// TestReplayProperties replays random client patches against random data
// sets that the server changed meanwhile, and checks every op's receipt
// against the data set it produced.
func TestReplayProperties(t *testing.T) {
	rounds := 300
	if testing.Short() {
		rounds = 60
	}
	policies := []string{diff.PolicyClientWins, diff.PolicyServerWins, diff.PolicyReject}
	for round := range rounds {
		seed := uint64(round)
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			checkReplay(t, rng, policies[round%3], round%5 == 0)
		})
	}
}

func checkReplay(t *testing.T, rng *rand.Rand, policy string, realistic bool) {
	ctx := context.Background()
	s := memstore.New()

	// The data set at base.
	base := map[string][]byte{}
	for i := range 3 + rng.IntN(30) {
		base[fmt.Sprintf("k/%02d", i)] = mustCanon(t, randValue(rng, 0))
	}
	if realistic {
		for _, r := range gen.Dataset(gen.Options{Size: 24 << 10, Seed: rng.Int64N(1000)}) {
			base[r.Key] = r.Value
		}
	}
	buildVersion(t, s, "u", toRecords(t, base))
	baseV := uint64(1)

	// The server changes it over 0..3 versions.
	srv := maps.Clone(base)
	for range rng.IntN(4) {
		randOps(t, rng, srv, 1+rng.IntN(6), true)
		buildVersion(t, s, "u", toRecords(t, srv))
	}
	h := head(t, s, "u")
	sameRecords(t, readAll(t, s, "u", h), srv)

	// The client's patch, made against base.
	p := &diff.Patch{ID: fmt.Sprint("prop-", rng.Uint64()), Base: baseV, Ops: randOps(t, rng, base, 1+rng.IntN(10), false)}
	cs := snapshot.NewCountingStore(s)
	res, err := diff.Apply(ctx, cs, applyOpts("u", policy), p)
	var rej *diff.RejectedError
	if errors.As(err, &rej) {
		if policy != diff.PolicyReject || len(rej.Conflicts()) == 0 {
			t.Fatalf("rejected under %s: %v", policy, err)
		}
		if w := cs.Counts().Writes(); w != 0 {
			t.Fatalf("rejected patch wrote %d objects", w)
		}
		if head(t, s, "u") != h {
			t.Fatal("rejected patch moved the head")
		}
		for _, rc := range sharedSides(t, rej.Receipts) {
			if rc.Status == diff.StatusConflict {
				checkBothValues(t, rc)
			} else if rc.Status != diff.StatusRejected {
				t.Fatalf("op %d of a rejected patch: %s", rc.Index, rc.Status)
			}
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Receipts) != len(p.Ops) {
		t.Fatalf("%d receipts for %d ops", len(res.Receipts), len(p.Ops))
	}
	newV := head(t, s, "u")
	if res.Created != (newV == h+1) || res.Version != newV {
		t.Fatalf("result %+v, head was %d and is %d", res, h, newV)
	}
	got := readAll(t, s, "u", newV)

	// Per key: the value at base (B), the client's value after its ops (O),
	// the server's (T) and the result (R).
	byKey := map[string][]int{}
	for i, op := range p.Ops {
		byKey[op.Key] = append(byKey[op.Key], i)
	}
	client := maps.Clone(base)
	for i, op := range p.Ops {
		if !foldOp(t, client, op) && res.Receipts[i].Status != diff.StatusRejected {
			t.Errorf("op %d merges into a non-object but is %s", i, res.Receipts[i].Status)
		}
	}
	receipts := sharedSides(t, res.Receipts)
	for key, idx := range byKey {
		B, O, T, R := decodeJV(t, base[key]), decodeJV(t, client[key]), decodeJV(t, srv[key]), decodeJV(t, got[key])
		clientPaths, serverPaths := paths(B, O), paths(B, T)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s (%s): %s\n base   %v\n client %v\n server %v\n result %v\n receipts %s",
				key, policy, fmt.Sprintf(format, args...), B, O, T, R, mustJSON(t, res.Receipts))
		}
		var status string
		var conflicts [][]string
		var won bool
		for _, i := range idx {
			rc := receipts[i]
			if rc.Index != i || rc.Key != key || rc.Op != p.Ops[i].Op {
				fail("receipt %d names %+v", i, rc)
			}
			switch {
			case rc.Status == diff.StatusRejected:
				if rc.Reason == "" {
					fail("rejected without a reason")
				}
				continue
			case status != "" && rc.Status != status:
				fail("ops on one key disagree: %s and %s", status, rc.Status)
			}
			status = rc.Status
			if rc.Status == diff.StatusConflict {
				checkBothValues(t, rc)
				if !decodeJV(t, rc.ClientValue).eq(O) || rc.ClientDeleted != !O.ok || !decodeJV(t, rc.ServerValue).eq(T) || rc.ServerDeleted != !T.ok {
					fail("conflict values do not match the two sides")
				}
				if len(rc.Fields) == 0 || rc.Policy != policy || rc.Won != (policy == diff.PolicyClientWins) {
					fail("conflict receipt incomplete: %+v", rc)
				}
				conflicts = conflicts[:0]
				for _, f := range rc.Fields {
					conflicts = append(conflicts, parsePointer(f))
				}
				won = rc.Won
			}
		}
		switch status {
		case "": // every op rejected
			if !R.eq(T) {
				fail("rejected ops changed the record")
			}
			continue
		case diff.StatusApplied:
			if !B.eq(T) || !R.eq(O) {
				fail("applied, but the server had changed it or the result is not the client's")
			}
			continue
		case diff.StatusMerged:
			if len(conflicts) > 0 {
				fail("merged with conflicts")
			}
		case diff.StatusConflict:
		default:
			fail("status %q", status)
		}
		// Every change of either side is in the result, except where a
		// conflict was resolved for the other side.
		for _, c := range conflicts {
			want := T.get(c)
			if won {
				want = O.get(c)
			}
			if !R.get(c).eq(want) {
				fail("conflict at %q resolved to %v, want %v", c, R.get(c), want)
			}
		}
		for _, pth := range clientPaths {
			if !anyOverlap(pth, conflicts) && !R.get(pth).eq(O.get(pth)) {
				fail("client change at %q lost", pth)
			}
		}
		for _, pth := range serverPaths {
			if !anyOverlap(pth, conflicts) && !R.get(pth).eq(T.get(pth)) {
				fail("server change at %q lost", pth)
			}
		}
		// Nothing else changed: every difference from the server's value
		// comes from the client.
		for _, pth := range paths(T, R) {
			if !anyOverlap(pth, clientPaths) && !(won && anyOverlap(pth, conflicts)) {
				fail("result differs from the server at %q, which the client did not change", pth)
			}
		}
	}
	// Keys the patch does not name are the server's.
	want := maps.Clone(srv)
	for key := range byKey {
		delete(want, key)
		if v, ok := got[key]; ok {
			want[key] = v
		}
	}
	sameRecords(t, got, want)

	if res.Created {
		checkVersion(t, s, newV, got, srv, p, res)
	}
	// The same patch again: the same answer, no new version.
	again, err := diff.Apply(ctx, s, applyOpts("u", policy), p)
	if err != nil || !again.Duplicate || again.Version != res.Version || head(t, s, "u") != newV {
		t.Fatalf("second apply: %+v %v", again, err)
	}
}

// checkVersion compares a version made by replay with a from-scratch build
// of the same records, and checks its change set.
func checkVersion(t *testing.T, s snapshot.Store, v uint64, got, srv map[string][]byte, p *diff.Patch, res *diff.Result) {
	ctx := context.Background()
	m, err := snapshot.ReadManifest(ctx, s, "acme", "u", v)
	if err != nil {
		t.Fatal(err)
	}
	scratch, err := snapshot.BuildOn(ctx, memstore.New(), buildOpts("u"), nil, gen.NewSource(toRecords(t, got)))
	if err != nil {
		t.Fatal(err)
	}
	if scratch.Manifest.StreamHash != m.StreamHash || !scratch.Manifest.SameContent(m) || scratch.Manifest.Records != m.Records {
		t.Fatalf("version %d differs from a from-scratch build of its records", v)
	}
	cs, err := diff.ReadChangeSet(ctx, s, m)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Kind != diff.KindPatch || cs.Patch == nil || cs.Patch.ID != p.ID || cs.Parent != v-1 {
		t.Fatalf("change set: %+v", cs)
	}
	if string(mustJSON(t, cs.Receipts)) != string(mustJSON(t, res.Receipts)) {
		t.Fatalf("change set receipts differ from the answer")
	}
	sameChanges(t, cs.Changes, bruteDiff(toRecords(t, srv), toRecords(t, got)))
}

// sharedSides checks that of the conflict receipts of a key only the last
// carries the two sides (values or deleted flags), and returns the
// receipts with the sides shared as a client reads them.
func sharedSides(t *testing.T, receipts []diff.Receipt) []diff.Receipt {
	t.Helper()
	seen := map[string]bool{}
	for i := len(receipts) - 1; i >= 0; i-- {
		rc := receipts[i]
		if rc.Status != diff.StatusConflict {
			continue
		}
		carries := rc.ClientValue != nil || rc.ClientDeleted || rc.ServerValue != nil || rc.ServerDeleted
		if seen[rc.Key] && carries {
			t.Fatalf("conflict receipt %d repeats the sides of key %q, which its last conflict receipt carries", i, rc.Key)
		}
		seen[rc.Key] = true
	}
	out := slices.Clone(receipts)
	diff.ShareConflictSides(out)
	return out
}

func checkBothValues(t *testing.T, rc diff.Receipt) {
	t.Helper()
	if (len(rc.ClientValue) == 0) != rc.ClientDeleted || (len(rc.ServerValue) == 0) != rc.ServerDeleted {
		t.Fatalf("conflict receipt lacks a side: %s", mustJSON(t, rc))
	}
}
