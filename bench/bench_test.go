package bench_test

import (
	"context"
	"testing"

	"github.com/deltasync/deltasync/bench"
)

func TestRunSmall(t *testing.T) {
	rep, err := bench.Run(context.Background(), bench.Options{Size: 1 << 20, Seed: 1, Dir: t.TempDir(), Compare: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 7 {
		t.Fatalf("%d scenarios", len(rep.Scenarios))
	}
	for i, s := range rep.Scenarios {
		if s.Version != uint64(i+2) || s.UpBytes == 0 || s.DownBytes == 0 || s.FullBytes == 0 || s.ZstdBytes == 0 {
			t.Errorf("scenario %+v", s)
		}
	}
	if one := rep.Scenarios[0]; one.DownBytes > 2048 || one.Ops != 1 {
		t.Errorf("one-field edit: %+v", one)
	}
	// Issue 14: a 2 MiB blob costs at most 1.02x its size each way.
	if b := rep.Scenarios[6]; b.Name != "add-2MiB-blob" || b.UpBytes > 2<<20*102/100 || b.DownBytes > 2<<20*102/100 {
		t.Errorf("blob scenario: %+v, want up and down <= %d", b, 2<<20*102/100)
	} else {
		t.Logf("add-2MiB-blob: up %d, down %d bytes for %d", b.UpBytes, b.DownBytes, 2<<20)
	}
	if float64(rep.InitialSync) > 1.10*float64(rep.InitialZstd) {
		t.Errorf("initial sync %d vs zstd -3 %d", rep.InitialSync, rep.InitialZstd)
	}
}
