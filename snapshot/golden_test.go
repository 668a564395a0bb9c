package snapshot_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestGoldenFixture pins chunk boundaries and manifest bytes of the committed
// fixture, so any change to the chunker, the IDs or the manifest encoding is
// deliberate: rerun with -update and review the diff.
func TestGoldenFixture(t *testing.T) {
	f, err := os.Open("../testdata/fixture.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := snapshot.ReadNDJSON(f, snapshot.NDJSONOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	s := memstore.New()
	res, err := snapshot.Build(context.Background(), s, buildOpts("acme", "fixture"), src)
	if err != nil {
		t.Fatal(err)
	}
	var chunks bytes.Buffer
	fmt.Fprintf(&chunks, "# %s v%d min=%d avg=%d max=%d records=%d stream=%d streamhash=%x\n",
		res.Manifest.ChunkerName, res.Manifest.ChunkerVersion, res.Manifest.Chunker.Min, res.Manifest.Chunker.Avg,
		res.Manifest.Chunker.Max, res.Manifest.Records, res.Manifest.StreamLen, res.Manifest.StreamHash)
	var off uint64
	for i, c := range res.Manifest.Chunks {
		fmt.Fprintf(&chunks, "%d\t%d\t%d\t%d\t%v\t%s\t%s\n", i, off, c.Size, c.Records, c.Continued, c.ID, c.FirstKey)
		off += uint64(c.Size)
	}
	manifest, err := res.Manifest.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "fixture.chunks.txt", chunks.Bytes())
	golden(t, "fixture.manifest", manifest)
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("..", "testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; if the format change is deliberate, run go test -update and review", path)
	}
}
