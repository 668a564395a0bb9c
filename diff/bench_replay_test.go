package diff_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
)

// BenchmarkApplyPatch replays a 10-op patch (field edits of scattered
// records, as gen.EditScattered makes) on data sets of 1 MiB and 64 MiB in
// the local directory store. Each iteration is a whole replay: head, base
// and head manifests, the touched chunks, re-chunking their neighbourhood,
// one pack, the change set, the version claim and the answer. Its cost
// follows the patch, not the data set; what still grows with the data set
// is the manifest (read, rewritten and compressed once per version).
func BenchmarkApplyPatch(b *testing.B) {
	for _, size := range []int64{1 << 20, 64 << 20} {
		b.Run(byteSize(size), func(b *testing.B) {
			ctx := context.Background()
			fs, err := fsstore.New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			base := gen.Dataset(gen.Options{Size: size, Seed: 1})
			buildVersion(b, fs, "u", base)
			s := snapshot.NewCountingStore(fs)
			opts := applyOpts("u", "")
			opts.Now = time.Now
			rng := rand.New(rand.NewPCG(1, 2))
			statuses := []string{"open", "in_progress", "blocked", "done"}
			h := uint64(1)
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				ops := make([]diff.Op, 10)
				for i := range ops {
					key := base[rng.IntN(len(base))].Key
					patch := fmt.Sprintf(`{"rev":%d,"status":%q}`, n, statuses[rng.IntN(len(statuses))])
					ops[i] = diff.Op{Op: diff.OpMerge, Key: key, Patch: json.RawMessage(patch)}
				}
				res, err := diff.Apply(ctx, s, opts, &diff.Patch{ID: fmt.Sprint("bench-", n), Base: h, Ops: ops})
				if err != nil {
					b.Fatal(err)
				}
				if !res.Created {
					b.Fatalf("patch %d created nothing", n)
				}
				h = res.Version
				n++
			}
			c := s.Counts()
			b.ReportMetric(float64(c.Puts)/float64(n), "puts/op")
			b.ReportMetric(float64(c.Gets)/float64(n), "gets/op")
			b.ReportMetric(float64(c.BytesWritten)/float64(n), "Bwritten/op")
			b.ReportMetric(float64(c.BytesRead)/float64(n), "Bread/op")
		})
	}
}
