package gc

import (
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// TestPlan pins which versions are deleted from manifest ages alone: the
// retention rule picks the oldest retained version, everything older goes
// oldest first, and the run stops at the first version whose successor is
// younger than the grace period.
func TestPlan(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const day = 24 * time.Hour
	type ver struct {
		created time.Duration // before now (Manifest.CreatedUnix)
		written time.Duration // before now (manifest ModTime)
	}
	old := func(createdDays float64) ver {
		return ver{created: time.Duration(createdDays * float64(day)), written: 10 * day}
	}
	cases := []struct {
		name         string
		opts         Options
		vers         []ver // versions 1, 2, …
		wantDel      int   // versions 1..wantDel are deleted
		wantDeferred int
	}{
		{"no versions", Options{KeepVersions: 1}, nil, 0, 0},
		{"the head alone is never deleted", Options{KeepVersions: 1}, []ver{old(9)}, 0, 0},
		{"keep 2 of 5", Options{KeepVersions: 2}, []ver{old(9), old(8), old(7), old(6), old(5)}, 3, 0},
		{"keep more than exist", Options{KeepVersions: 9}, []ver{old(9), old(8)}, 0, 0},
		{"keep-days keeps the head when all are older", Options{KeepDays: 1}, []ver{old(9), old(8), old(7)}, 2, 0},
		{"keep-days", Options{KeepDays: 3}, []ver{old(5), old(4), old(2.5), old(1), old(0)}, 2, 0},
		// CreatedUnix comes from the builders' clocks, which may disagree:
		// everything from the oldest version inside the window up is kept,
		// so the retained versions stay one contiguous range.
		{"keep-days with skewed clocks", Options{KeepDays: 3}, []ver{old(9), old(1), old(8), old(7), old(0)}, 1, 0},
		{"a recently superseded version stops the deletions", Options{KeepVersions: 1},
			[]ver{{0, 5 * time.Hour}, {0, 4 * time.Hour}, {0, 3 * time.Hour}, {0, 30 * time.Minute}, {0, 10 * time.Minute}}, 2, 2},
		{"superseded exactly a grace period ago counts as old", Options{KeepVersions: 1},
			[]ver{{0, 5 * time.Hour}, {0, time.Hour}}, 1, 0},
		{"superseded within the grace period", Options{KeepVersions: 1},
			[]ver{{0, 5 * time.Hour}, {0, time.Hour - time.Second}}, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			opts.Now = func() time.Time { return now }
			if err := opts.fill(); err != nil {
				t.Fatal(err)
			}
			r := &runner{opts: opts, now: now}
			u := newUserObjects("acme", "alice")
			var ms []*snapshot.Manifest
			for i, v := range tc.vers {
				n := uint64(i + 1)
				key := snapshot.ManifestKey("acme", "alice", n)
				u.add(key[len("acme/alice/"):], snapshot.ObjectInfo{Key: key, ModTime: now.Add(-v.written)})
				ms = append(ms, &snapshot.Manifest{Org: "acme", User: "alice", Version: n, CreatedUnix: now.Add(-v.created).Unix()})
			}
			del, deferred := r.plan(u, ms)
			if len(del) != tc.wantDel || deferred != tc.wantDeferred {
				t.Fatalf("deletes %d versions, defers %d; want %d, %d", len(del), deferred, tc.wantDel, tc.wantDeferred)
			}
			for i, m := range del {
				if m.Version != uint64(i+1) {
					t.Fatalf("deletes version %d at position %d: want oldest first", m.Version, i)
				}
			}
		})
	}
}

func TestClassify(t *testing.T) {
	u := newUserObjects("acme", "alice")
	for _, rest := range []string{
		"versions/00000000000000000007.manifest",
		"packs/0123abcd.pack",
		// never collected:
		"versions/00000000000000000007.changes",
		"versions/00000000000000000007.changes.0123456789abcdef",
		"head",
		"patches/0123.json",
		"versions/7.manifest",
		"versions/00000000000000000007.manifest.bak",
		"versions/00000000000000000007.changes.XYZ",
		"versions/00000000000000000007.changes.",
		"versions/0000000000000000000x.changes",
		"packs/.pack",
		"packs/a/b.pack",
		"packs/0123abcd.tmp",
	} {
		u.add(rest, snapshot.ObjectInfo{Key: "acme/alice/" + rest})
	}
	if len(u.manifests) != 1 || len(u.packs) != 1 {
		t.Errorf("classified %d manifests, %d packs; want 1, 1", len(u.manifests), len(u.packs))
	}
	if _, ok := u.packs["0123abcd"]; !ok {
		t.Errorf("pack name: %v", u.packs)
	}
	for _, key := range []string{"_deltasync/secret", "acme/_settings.json", "acme/alice", "_org/u/packs/x.pack", "acme/-u/packs/x.pack", "acme/alice/"} {
		if org, user, rest, ok := splitUserKey(key); ok {
			t.Errorf("splitUserKey(%q) = %q, %q, %q: want not a user key", key, org, user, rest)
		}
	}
}
