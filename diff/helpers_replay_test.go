package diff_test

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storetest"
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

// countingBodies wraps s so that it counts the bodies Get and GetRange
// open and the ones closed.
func countingBodies(s snapshot.Store) (f *storetest.Faults, opened, closed *atomic.Int64) {
	opened, closed = new(atomic.Int64), new(atomic.Int64)
	f = storetest.Wrap(s)
	f.GetFunc = func(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
		rc, oi, err := s.Get(ctx, key)
		if err != nil {
			return nil, oi, err
		}
		opened.Add(1)
		return closeCounter{rc, closed}, oi, nil
	}
	f.GetRangeFunc = func(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
		rc, err := s.GetRange(ctx, key, off, n)
		if err != nil {
			return nil, err
		}
		opened.Add(1)
		return closeCounter{rc, closed}, nil
	}
	return f, opened, closed
}

type closeCounter struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c closeCounter) Close() error { c.n.Add(1); return c.ReadCloser.Close() }
