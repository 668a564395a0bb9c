package diff_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

var testSecret = []byte("diff-test-secret-0123456789")

func buildOpts(user string) snapshot.BuildOptions {
	o := snapshot.DefaultBuildOptions()
	o.Org, o.User, o.Secret = "acme", user, testSecret
	o.Now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	return o
}

// buildVersion builds recs as the next version with its change set.
func buildVersion(t testing.TB, s snapshot.Store, user string, recs []gen.Record) (*snapshot.BuildResult, *diff.ChangeSet) {
	t.Helper()
	res, cs, err := diff.BuildVersion(context.Background(), s, buildOpts(user), gen.NewSource(recs))
	if err != nil {
		t.Fatal(err)
	}
	return res, cs
}

// bruteDiff compares two sorted record lists in full.
func bruteDiff(a, b []gen.Record) []diff.Change {
	var out []diff.Change
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j >= len(b) || i < len(a) && a[i].Key < b[j].Key:
			out = append(out, diff.Change{Key: a[i].Key, Old: a[i].Value})
			i++
		case i >= len(a) || b[j].Key < a[i].Key:
			out = append(out, diff.Change{Key: b[j].Key, New: b[j].Value})
			j++
		default:
			if !bytes.Equal(a[i].Value, b[j].Value) {
				out = append(out, diff.Change{Key: a[i].Key, Old: a[i].Value, New: b[j].Value})
			}
			i++
			j++
		}
	}
	return out
}

func sameChanges(t *testing.T, got, want []diff.Change) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d changes, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Key != w.Key || !bytes.Equal(g.Old, w.Old) || !bytes.Equal(g.New, w.New) || (g.Old == nil) != (w.Old == nil) || (g.New == nil) != (w.New == nil) {
			t.Fatalf("change %d: got %s old=%.40s new=%.40s, want %s old=%.40s new=%.40s", i, g.Key, g.Old, g.New, w.Key, w.Old, w.New)
		}
	}
}

func TestRecordDiffMatchesBruteForce(t *testing.T) {
	base := gen.Dataset(gen.Options{Size: 1 << 20, Seed: 21})
	edits := map[string]func([]gen.Record) []gen.Record{
		"one field":      func(r []gen.Record) []gen.Record { return gen.EditOneField(r, 1) },
		"scattered":      func(r []gen.Record) []gen.Record { return gen.EditScattered(r, 40, 2) },
		"inserts":        func(r []gen.Record) []gen.Record { return gen.InsertInterleaved(r, 30, 3) },
		"deletes":        func(r []gen.Record) []gen.Record { return gen.DeleteRandom(r, 50, 4) },
		"attachment":     func(r []gen.Record) []gen.Record { return gen.AddAttachment(r, 300<<10, 5) },
		"ten percent":    func(r []gen.Record) []gen.Record { return gen.ChangeFraction(r, 0.1, 6) },
		"delete all":     func(r []gen.Record) []gen.Record { return nil },
		"first and last": func(r []gen.Record) []gen.Record { return gen.DeleteRandom(r[1:len(r)-1], 0, 1) },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			s := memstore.New()
			buildVersion(t, s, "u", base)
			next := edit(base)
			res, cs := buildVersion(t, s, "u", next)
			if res.Unchanged {
				t.Fatal("edit produced no version")
			}
			sameChanges(t, cs.Changes, bruteDiff(base, next))
			stored, err := diff.ReadChangeSet(context.Background(), s, res.Manifest)
			if err != nil {
				t.Fatal(err)
			}
			sameChanges(t, stored.Changes, cs.Changes)
		})
	}
}

func TestNeededChunks(t *testing.T) {
	s := memstore.New()
	base := gen.Dataset(gen.Options{Size: 512 << 10, Seed: 22})
	a, _ := buildVersion(t, s, "u", base)
	b, _ := buildVersion(t, s, "u", gen.EditScattered(base, 5, 1))
	script := diff.Manifests(a.Manifest, b.Manifest)
	have := map[snapshot.ChunkID]bool{}
	for _, c := range a.Manifest.Chunks {
		have[c.ID] = true
	}
	want := map[snapshot.ChunkID]bool{}
	for _, c := range b.Manifest.Chunks {
		if !have[c.ID] {
			want[c.ID] = true
		}
	}
	got := script.Needed()
	if len(got) != len(want) || len(got) == 0 {
		t.Fatalf("Needed: %d chunks, want %d", len(got), len(want))
	}
	for _, j := range got {
		if !want[b.Manifest.Chunks[j].ID] {
			t.Fatalf("chunk %d is not new", j)
		}
		if base := script.Base[j]; base < 0 || base >= len(a.Manifest.Chunks) {
			t.Fatalf("chunk %d paired with %d", j, base)
		}
	}
	if full := diff.Manifests(nil, b.Manifest).Needed(); len(full) != len(b.Manifest.Chunks) {
		t.Fatalf("from version 0: %d chunks needed, want all %d", len(full), len(b.Manifest.Chunks))
	}
}

func TestFirstVersionChangeSetIsFull(t *testing.T) {
	s := memstore.New()
	_, cs := buildVersion(t, s, "u", gen.Dataset(gen.Options{Size: 64 << 10, Seed: 1}))
	if !cs.Full || len(cs.Changes) != 0 || cs.Kind != diff.KindBuild || cs.Version != 1 {
		t.Fatalf("first change set: %+v", cs)
	}
}

// BenchmarkRecordDiff compares the record diff of a one-record edit on data
// sets of 1 MiB and 64 MiB: its cost follows the change, not the data set.
func BenchmarkRecordDiff(b *testing.B) {
	for _, size := range []int64{1 << 20, 64 << 20} {
		b.Run(byteSize(size), func(b *testing.B) {
			s := memstore.New()
			base := gen.Dataset(gen.Options{Size: size, Seed: 1})
			r1, _ := buildVersion(b, s, "u", base)
			r2, _ := buildVersion(b, s, "u", gen.EditOneField(base, 1))
			ga := snapshot.NewReader(s, r1.Manifest, testSecret)
			gb := snapshot.NewReader(s, r2.Manifest, testSecret)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				ch, err := diff.Manifests(r1.Manifest, r2.Manifest).Records(ctx, ga, gb)
				if err != nil || len(ch) != 1 {
					b.Fatalf("%d changes, %v", len(ch), err)
				}
			}
		})
	}
}

func byteSize(n int64) string {
	if n >= 1<<20 {
		return string(rune('0'+n>>20/10%10)) + string(rune('0'+n>>20%10)) + "MiB"
	}
	return "small"
}
