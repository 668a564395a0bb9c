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
	if len(rep.Scenarios) != 6 {
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
	if float64(rep.InitialSync) > 1.10*float64(rep.InitialZstd) {
		t.Errorf("initial sync %d vs zstd -3 %d", rep.InitialSync, rep.InitialZstd)
	}
}
