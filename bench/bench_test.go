package bench_test

import (
	"context"
	"os/exec"
	"testing"

	"github.com/deltasync/deltasync/bench"
)

func TestRunSmall(t *testing.T) {
	rep, err := bench.Run(context.Background(), bench.Options{Size: 1 << 20, Seed: 1, Dir: t.TempDir(), Compare: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Scenarios) != 13 {
		t.Fatalf("%d scenarios", len(rep.Scenarios))
	}
	for i, s := range rep.Scenarios {
		if s.Name == "add-2MiB-blob" {
			continue // below
		}
		if s.Version != uint64(i%7+2) || s.UpBytes == 0 || s.DownBytes == 0 || s.FullBytes == 0 || s.ZstdBytes == 0 || s.DownFormat2 == 0 {
			t.Errorf("scenario %+v", s)
		}
		d := s.Down
		if d.HTTPHeaders+d.Transfer+d.Header+d.Manifest+d.Payload+d.Framing != s.DownBytes || d.HTTPHeaders < 50 || d.Payload == 0 {
			t.Errorf("%s %s: breakdown %+v does not add up to %d", s.Family, s.Name, d, s.DownBytes)
		}
	}
	for _, i := range []int{0, 7} {
		if one := rep.Scenarios[i]; one.DownBytes > 1024 || one.Ops != 1 {
			t.Errorf("one-field edit: %+v", one)
		}
	}
	// Issue 14: a 2 MiB blob costs at most 1.02x its size each way.
	if b := rep.Scenarios[6]; b.Name != "add-2MiB-blob" || b.Family != "work" || b.UpBytes > 2<<20*102/100 || b.DownBytes > 2<<20*102/100 {
		t.Errorf("blob scenario: %+v, want up and down <= %d", b, 2<<20*102/100)
	} else {
		t.Logf("add-2MiB-blob: up %d, down %d bytes for %d", b.UpBytes, b.DownBytes, 2<<20)
	}
	if len(rep.InitialSyncs) != 6 {
		t.Fatalf("%d initial syncs, want 3 seeds of 2 families", len(rep.InitialSyncs))
	}
	for _, s := range rep.InitialSyncs {
		// 1 MiB data sets go in groups of 256 KiB to 1 MiB (a resumed
		// download repeats at most one): about 1.02x zstd -3 for the CRM.
		if s.Ratio > 1.03 || s.SyncBytes == 0 {
			t.Errorf("initial sync %+v", s)
		}
	}
	if rep.InitialSync != rep.InitialSyncs[0].SyncBytes {
		t.Errorf("initial sync %d, first of the seeds %d", rep.InitialSync, rep.InitialSyncs[0].SyncBytes)
	}
}

// TestRunPatchFrom: with the zstd command, every scenario gets its
// patch-from figure.
func TestRunPatchFrom(t *testing.T) {
	z, err := exec.LookPath("zstd")
	if err != nil {
		t.Skip("the zstd command is not installed")
	}
	if raceEnabled {
		t.Skip("runs an external command; nothing for the race detector (and slow under it)")
	}
	rep, err := bench.Run(context.Background(), bench.Options{Size: 512 << 10, Seed: 2, Seeds: 1, Dir: t.TempDir(), ZstdBinary: z})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Scenarios {
		if s.Name == "add-2MiB-blob" {
			continue // no NDJSON of the blob to compare with
		}
		if s.PatchFromBytes == 0 || rep.InitialSyncs[0].CZstdBytes == 0 {
			t.Errorf("%s %s: no patch-from figure", s.Family, s.Name)
		}
	}
	if rep.PatchFrom == "" {
		t.Error("no zstd version")
	}
}
