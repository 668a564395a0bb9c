package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// The positive case on the directory and memory stores; the S3 servers run
// the same check in the conformance suite (ConditionalWriteProbe).
func TestProbeConditionalWritesPassesOnConformingStores(t *testing.T) {
	fs, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]snapshot.Store{"fs": fs, "mem": memstore.New()} {
		if err := snapshot.ProbeConditionalWrites(t.Context(), s); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if keys := allKeys(t, s); len(keys) != 0 {
			t.Errorf("%s: the probe left %v", name, keys)
		}
	}
}

// A store that takes conditional writes and ignores the conditions loses
// versions silently; the probe must catch each guarantee on its own, name
// it, and clean up after itself.
func TestProbeConditionalWritesCatchesIgnoredConditions(t *testing.T) {
	for _, tt := range []struct {
		name             string
		createOnly, cas  bool
		want             snapshot.Guarantee
		wantDetailSubstr string
	}{
		{"both ignored", true, true, snapshot.CreateOnly, "second create-only put"},
		{"create-only ignored", true, false, snapshot.CreateOnly, "second create-only put"},
		{"compare-and-swap ignored", false, true, snapshot.CompareAndSwap, "wrong ETag succeeded"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := storetest.Unconditional(memstore.New(), tt.createOnly, tt.cas)
			err := snapshot.ProbeConditionalWrites(t.Context(), s)
			if !errors.Is(err, snapshot.ErrNoConditionalWrites) {
				t.Fatalf("probe = %v, want ErrNoConditionalWrites", err)
			}
			var ge *snapshot.GuaranteeError
			if !errors.As(err, &ge) || ge.Guarantee != tt.want || !strings.Contains(ge.Detail, tt.wantDetailSubstr) {
				t.Fatalf("probe = %v, want the %q guarantee (%q)", err, tt.want, tt.wantDetailSubstr)
			}
			if !strings.Contains(err.Error(), string(tt.want)) || !strings.HasPrefix(ge.Key, snapshot.ProbePrefix) {
				t.Errorf("error %q does not name the guarantee or the probe key", err)
			}
			if keys := allKeys(t, s); len(keys) != 0 {
				t.Errorf("the failed probe left %v", keys)
			}
		})
	}
}

// A store that refuses every write is not "missing a guarantee": the probe
// reports the store's own error, so the operator sees the real cause.
func TestProbeConditionalWritesReportsStoreErrors(t *testing.T) {
	denied := errors.New("access denied")
	s := storetest.Wrap(memstore.New())
	s.PutIfAbsentFunc = func(context.Context, string, io.Reader, int64) (snapshot.ObjectInfo, error) {
		return snapshot.ObjectInfo{}, denied
	}
	err := snapshot.ProbeConditionalWrites(t.Context(), s)
	if err == nil || errors.Is(err, snapshot.ErrNoConditionalWrites) || !errors.Is(err, denied) {
		t.Fatalf("probe = %v, want the store's own error", err)
	}
}

func allKeys(t *testing.T, s snapshot.Store) []string {
	t.Helper()
	var keys []string
	if err := s.List(t.Context(), "", func(oi snapshot.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// A process killed mid-probe leaves its probe object; the next probe removes
// it once it is old, and leaves a young one (another process probing now).
func TestProbeConditionalWritesRemovesStaleProbes(t *testing.T) {
	dir := t.TempDir()
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	old, young := snapshot.ProbePrefix+"killed-long-ago", snapshot.ProbePrefix+"probing-now"
	for _, k := range []string{old, young, "acme/alice/head"} {
		if _, err := s.Put(t.Context(), k, strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	mt := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(old)), mt, mt); err != nil {
		t.Fatal(err)
	}
	if err := snapshot.ProbeConditionalWrites(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(allKeys(t, s)); got != "[_deltasync/probe/probing-now acme/alice/head]" {
		t.Errorf("after the probe: %s; want the old probe object gone, the young one and other objects kept", got)
	}
}
