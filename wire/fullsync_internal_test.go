package wire

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

// fullSyncPack returns a format-3 full sync of 16 MiB of a family and the
// length of its stream.
func fullSyncPack(b testing.TB, family string) ([]byte, int64) {
	dataset := gen.Dataset
	if family == "crm" {
		dataset = gen.CRMDataset
	}
	recs := dataset(gen.Options{Size: 16 << 20, Seed: 1})
	s := memstore.New()
	secret := []byte("wire-bench-secret-0123456789")
	o := snapshot.DefaultBuildOptions()
	o.Org, o.User, o.Secret = "acme", "alice", secret
	o.Now = func() time.Time { return time.Unix(1_700_000_000, 0) }
	res, _, err := diff.BuildVersion(context.Background(), s, o, gen.NewSource(recs))
	if err != nil {
		b.Fatal(err)
	}
	m := res.Manifest
	var buf bytes.Buffer
	src := DeltaSource{Script: diff.Manifests(nil, m), NewChunks: snapshot.NewReader(s, m, secret)}
	if err := WriteDelta(context.Background(), &buf, src); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes(), int64(m.StreamLen)
}
