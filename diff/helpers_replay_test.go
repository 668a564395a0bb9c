package diff_test

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

// applyOpts returns replay options for user u of org acme.
func applyOpts(user, policy string) diff.ApplyOptions {
	o := diff.DefaultApplyOptions()
	o.Org, o.User, o.Secret, o.Policy = "acme", user, testSecret, policy
	o.Now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	return o
}

// toRecords turns a key → value map into sorted records with canonical
// values.
func toRecords(t testing.TB, m map[string][]byte) []gen.Record {
	t.Helper()
	out := make([]gen.Record, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v, err := snapshot.CanonicalJSON(m[k])
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out = append(out, gen.Record{Key: k, Value: v})
	}
	return out
}

// readAll returns every record of version v (none for version 0).
func readAll(t testing.TB, s snapshot.Store, user string, v uint64) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	if v == 0 {
		return out
	}
	ctx := context.Background()
	m, err := snapshot.ReadManifest(ctx, s, "acme", user, v)
	if err != nil {
		t.Fatal(err)
	}
	err = snapshot.NewReader(s, m, testSecret).Records(ctx, func(k, v []byte) error {
		out[string(k)] = slices.Clone(v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func head(t testing.TB, s snapshot.Store, user string) uint64 {
	t.Helper()
	h, err := snapshot.Head(context.Background(), s, "acme", user)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// sameRecords fails unless got and want hold the same keys and bytes.
func sameRecords(t testing.TB, got, want map[string][]byte) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[k]
		if !ok {
			t.Errorf("record %s missing, want %.80s", k, want[k])
		} else if string(g) != string(want[k]) {
			t.Errorf("record %s:\n got %.200s\nwant %.200s", k, g, want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			t.Errorf("record %s should not exist (got %.80s)", k, got[k])
		}
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
