package snapshot_test

import (
	"context"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// TestHeadIgnoresUnparsableHint: the head object is only a hint. Whatever
// it holds (any length, any bytes), Head finds the highest version, also
// when the oldest versions were retired by gc (so probing upward from 0
// would stop at once).
func TestHeadIgnoresUnparsableHint(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	opts := buildOpts("o", "u")
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 9})
	for i := range 4 {
		buildCommit(t, s, opts, gen.EditScattered(recs, 1, int64(i)))
	}
	// gc retired versions 1 and 2.
	for _, v := range []uint64{1, 2} {
		if err := s.Delete(ctx, snapshot.ManifestKey("o", "u", v)); err != nil {
			t.Fatal(err)
		}
	}
	hints := map[string]string{
		"empty":              "",
		"garbage":            "not a number",
		"zero":               "0",
		"negative":           "-3",
		"overflow":           "99999999999999999999999",
		"65 digits":          strings.Repeat("9", 65),
		"64 KiB of digits":   strings.Repeat("4", 64<<10),
		"4 then 100 spaces":  "4" + strings.Repeat(" ", 100),
		"NUL bytes":          "\x00\x00\x00",
		"retired version":    "1",
		"beyond the head":    "17",
		"valid, with spaces": " 3 \n",
	}
	for name, hint := range hints {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Put(ctx, snapshot.HeadKey("o", "u"), strings.NewReader(hint), int64(len(hint))); err != nil {
				t.Fatal(err)
			}
			if h, err := snapshot.Head(ctx, s, "o", "u"); err != nil || h != 4 {
				t.Fatalf("Head with hint %.40q = %d, %v; want 4", hint, h, err)
			}
		})
	}
}

// TestHeadWithoutHintAfterGC: a data set whose head hint is gone (deleted by
// hand, or lost with a restored backup) and whose first versions were
// retired by gc still has its head: Head must not report an empty data set,
// or the next commit would claim version 1 again over a live history.
func TestHeadWithoutHintAfterGC(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	opts := buildOpts("o", "u")
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 9})
	for i := range 3 {
		buildCommit(t, s, opts, gen.EditScattered(recs, 1, int64(i)))
	}
	if err := s.Delete(ctx, snapshot.ManifestKey("o", "u", 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, snapshot.HeadKey("o", "u")); err != nil {
		t.Fatal(err)
	}
	if h, err := snapshot.Head(ctx, s, "o", "u"); err != nil || h != 3 {
		t.Fatalf("Head without a hint, version 1 retired = %d, %v; want 3", h, err)
	}
	if h, err := snapshot.Head(ctx, s, "o", "nobody"); err != nil || h != 0 {
		t.Fatalf("Head of an empty data set = %d, %v; want 0", h, err)
	}
}
