package server

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// This file holds the probes of session 6's red team (issue 16): what a
// hostile but authenticated client could make a running server spend or
// do, each pinned by the test that showed it.

// TestPatchOfManyMergesOnABigRecordIsCheap: a patch of many tiny merges on
// one big record must cost about what one merge does, not one encoding of
// the whole record per merge (10,000 merges on a 16 MiB record cost hours
// of CPU). Measured in bytes the server allocates, against a patch of one
// merge on the same record.
func TestPatchOfManyMergesOnABigRecordIsCheap(t *testing.T) {
	e := newTestEnv(t, envConfig{})
	e.enableOrg("acme")
	var big strings.Builder
	big.WriteByte('{')
	for i := range 20_000 { // about 300 KB
		if i > 0 {
			big.WriteByte(',')
		}
		fmt.Fprintf(&big, `"f%06d":%d`, i, i)
	}
	big.WriteByte('}')
	e.upload("acme", "alice", []gen.Record{{Key: "big", Value: []byte(big.String())}})
	tok := userToken(t, "acme", "alice")

	patch := func(id string, base, merges int) uint64 {
		ops := make([]string, merges)
		for i := range ops {
			ops[i] = fmt.Sprintf(`{"op":"merge","key":"big","patch":{"m%s%d":%d}}`, id, i, i)
		}
		body := fmt.Sprintf(`{"id":%q,"base":%d,"ops":[%s]}`, id, base, strings.Join(ops, ","))
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := e.do("POST", "/v1/patches", []byte(body), withToken(tok))
		runtime.ReadMemStats(&after)
		if r.status != 200 || !strings.Contains(string(r.body), `"applied"`) {
			t.Fatalf("patch %s: %d %s", id, r.status, r.body)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	one := patch("one", 1, 1)
	many := patch("many", 2, 300)
	if many > 3*one {
		t.Errorf("a patch of 300 merges on a %d-byte record allocated %d bytes, one merge %d: want at most 3 times",
			big.Len(), many, one)
	}
}
