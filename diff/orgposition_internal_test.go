package diff

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// TestOrgPositionSplitsExaminedFromNot: for a walk that ended at any key
// of another org, the position an org's reader gets lies after every key
// of its org the walk examined and before every one it did not, and names
// no other org or user. Org names that prefix one another ("ac", "acme",
// "acme2") and keys of one millisecond are the hard cases.
func TestOrgPositionSplitsExaminedFromNot(t *testing.T) {
	base := int64(1_796_000_000_000)
	var keys []string
	for _, ms := range []int64{base, base + 1, base + 3_600_000} {
		for _, org := range []string{"ac", "acme", "acme2", "acme-x", "b", "zz", "ACME", "9"} {
			for _, user := range []string{"u", "z"} {
				keys = append(keys, snapshot.FeedKey(ms, org, user, 1, "00"))
			}
		}
	}
	slices.Sort(keys)
	for _, org := range []string{"acme", "ac", "b"} {
		for i, k := range keys {
			fk, _ := snapshot.ParseFeedKey(k)
			if fk.Org == org {
				continue
			}
			pos, ok := orgPosition(k, org)
			if !ok {
				t.Fatalf("no position for %s", k)
			}
			for j, other := range keys {
				ok, _ := snapshot.ParseFeedKey(other)
				if ok.Org != org {
					continue
				}
				if examined := j <= i; examined != (other <= pos) {
					t.Errorf("org %s, walk ended at %s: position %s misplaces %s (examined %v)", org, k, pos, other, examined)
				}
			}
			if strings.Contains(pos, "~"+fk.Org+"~") || strings.Contains(pos, "~"+fk.User+"~") {
				t.Errorf("position %s names %s/%s", pos, fk.Org, fk.User)
			}
			if _, err := checkCursor(pos, keyTime(k)); err != nil {
				t.Errorf("position %s is no cursor: %v", pos, err)
			}
		}
	}
}

func keyTime(k string) time.Time {
	fk, _ := snapshot.ParseFeedKey(k)
	return time.UnixMilli(fk.Millis)
}
