package gc_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

const day = 24 * time.Hour

// untouchable are objects gc must never delete, whatever their age: the
// secret, org settings, the head hint, patch answers, and names gc does not
// recognise (even below packs/ and versions/), plus pack-like names outside
// any user.
var untouchable = []string{
	"acme/_settings.json",
	"globex/_settings.json",
	"acme/alice/patches/0123abcd.json",
	"acme/alice/notes.txt",
	"acme/alice/packs/README",
	"acme/alice/packs/sub/x.pack",
	"acme/alice/versions/notes.txt",
	"acme/alice/versions/00000000000000000001.manifest.bak",
	"acme/alice/versions/1.changes",
	// change sets below versions/ (a layout no writer has used since the
	// change feed) are names gc does not recognise
	"acme/alice/versions/00000000000000000001.changes",
	"acme/carol/versions/00000000000000000001.changes.abcdef0123456789",
	"_deltasync/x/packs/old.pack",
	"_org/alice/packs/old.pack",
	"_feed/2026010100/1767225600000+acme+alice+00000000000000000001+00ff.changes",
}

// retentionFixture builds three users with history and one with only
// leftovers, all dated relative to now:
//
//	acme/alice    v1..v5 created 4.5, 3.5, 2.5, 1.5, 0.5 days ago
//	acme/bob      v1..v2 created 6.5, 5.5 days ago
//	globex/dan    v1     created 0.2 days ago
//	acme/carol    no version: one orphan pack
func retentionFixture(t *testing.T, s snapshot.Store, now time.Time) *fixture {
	f := newFixture(t, s)
	ago := func(days float64) time.Time { return now.Add(-time.Duration(days * float64(day))) }
	f.history("acme", "alice", 1, []time.Time{ago(4.5), ago(3.5), ago(2.5), ago(1.5), ago(0.5)})
	f.history("acme", "bob", 2, []time.Time{ago(6.5), ago(5.5)})
	f.history("globex", "dan", 3, []time.Time{ago(0.2)})
	putObject(t, s, snapshot.PackKey("acme", "carol", "00ff00ff00ff00ff"), strings.Repeat("p", 1000))
	for _, k := range untouchable {
		putObject(t, s, k, "keep me")
	}
	return f
}

func TestRetention(t *testing.T) {
	cases := []struct {
		name string
		opts gc.Options
		// oldest version each user keeps
		alice, bob, dan uint64
		// a pack first written by a deleted version is still referenced
		// by a retained one (the data sets make this so)
		shared bool
	}{
		{name: "keep-versions=1", opts: gc.Options{KeepVersions: 1}, alice: 5, bob: 2, dan: 1, shared: true},
		{name: "keep-versions=2", opts: gc.Options{KeepVersions: 2}, alice: 4, bob: 1, dan: 1, shared: true},
		{name: "keep-versions=100", opts: gc.Options{KeepVersions: 100}, alice: 1, bob: 1, dan: 1},
		{name: "keep-days=3", opts: gc.Options{KeepDays: 3}, alice: 3, bob: 2, dan: 1},
		{name: "keep-days=1 keeps the head of every user", opts: gc.Options{KeepDays: 1}, alice: 5, bob: 2, dan: 1, shared: true},
		{name: "keep-days=30", opts: gc.Options{KeepDays: 30}, alice: 1, bob: 1, dan: 1},
	}
	eachStore(t, func(t *testing.T, open func(*testing.T) snapshot.Store) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ctx := context.Background()
				s := open(t)
				clock := aged()
				f := retentionFixture(t, s, clock())
				before := listing(t, s)

				opts := tc.opts
				opts.Now, opts.PerUser, opts.DryRun = clock, true, true
				dry, err := gc.Run(ctx, s, opts)
				if err != nil {
					t.Fatal(err)
				}
				if after := listing(t, s); !reflect.DeepEqual(after, before) {
					t.Fatalf("dry run changed the store: %d objects gone", len(gone(before, after)))
				}

				opts.DryRun = false
				rep, err := gc.Run(ctx, s, opts)
				if err != nil {
					t.Fatal(err)
				}
				dry.DryRun = false
				if !reflect.DeepEqual(dry, rep) {
					t.Errorf("dry run reported\n%+v\nthe run\n%+v", dry, rep)
				}

				// Every deleted object is accounted for, and nothing else is.
				after := listing(t, s)
				var freed int64
				var manifests, changes, packs int
				for _, oi := range gone(before, after) {
					freed += oi.Size
					switch {
					case strings.HasSuffix(oi.Key, ".manifest"):
						manifests++
					case strings.Contains(oi.Key, ".changes"):
						changes++
					case strings.HasSuffix(oi.Key, ".pack"):
						packs++
					default:
						t.Errorf("deleted %s", oi.Key)
					}
				}
				if rep.BytesFreed != freed {
					t.Errorf("reported %d bytes freed, deleted objects hold %d", rep.BytesFreed, freed)
				}
				got := [3]int{rep.VersionsDeleted, rep.ChangeSetsDeleted, rep.PacksDeleted}
				if want := [3]int{manifests, changes, packs}; got != want {
					t.Errorf("reported (versions, change sets, packs) deleted = %v, store lost %v", got, want)
				}
				wantDeleted := int(tc.alice-1) + int(tc.bob-1) + int(tc.dan-1)
				if rep.VersionsDeleted != wantDeleted || rep.VersionsKept != 8-wantDeleted {
					t.Errorf("versions deleted/kept = %d/%d, want %d/%d", rep.VersionsDeleted, rep.VersionsKept, wantDeleted, 8-wantDeleted)
				}
				if rep.UsersScanned != 4 || rep.UsersFailed != 0 || len(rep.PerUser) != 4 {
					t.Errorf("users scanned %d, failed %d, lines %d; want 4, 0, 4", rep.UsersScanned, rep.UsersFailed, len(rep.PerUser))
				}
				if rep.VersionsDeferred != 0 || rep.PacksDeferred != 0 {
					t.Errorf("deferred %d versions, %d packs; with everything aged past the grace, want none",
						rep.VersionsDeferred, rep.PacksDeferred)
				}

				for _, u := range []struct {
					org, user string
					oldest    uint64
				}{{"acme", "alice", tc.alice}, {"acme", "bob", tc.bob}, {"globex", "dan", tc.dan}} {
					mans := f.mans[u.org+"/"+u.user]
					var kept, deleted []*snapshot.Manifest
					for _, v := range slices.Sorted(maps.Keys(mans)) {
						m := mans[v]
						if v < u.oldest {
							deleted = append(deleted, m)
							mustNotExist(t, s, snapshot.ManifestKey(u.org, u.user, v))
							mustNotExist(t, s, m.Changes) // its change-feed entry goes with it
							continue
						}
						kept = append(kept, m)
						f.verify(u.org, u.user, v)
					}
					// Exactly the packs the retained versions reference remain.
					if got, want := packKeys(t, s, u.org, u.user), livePacks(kept...); !slices.Equal(got, want) {
						t.Errorf("%s/%s: packs left\n%v\nwant the retained versions' packs\n%v", u.org, u.user, got, want)
					}
					if u.user == "alice" {
						shared := 0
						for _, p := range livePacks(deleted...) {
							if slices.Contains(livePacks(kept...), p) {
								shared++
								mustExist(t, s, p)
							}
						}
						if tc.shared && shared == 0 {
							t.Errorf("alice: no pack shared by a deleted and a retained version; the test data should make some")
						}
						if len(deleted) > 0 && rep.PacksDeleted == 0 {
							t.Errorf("alice lost %d versions but no pack was deleted", len(deleted))
						}
					}
				}
				if got := packKeys(t, s, "acme", "carol"); len(got) != 0 {
					t.Errorf("carol's orphan packs survived: %v", got)
				}
				for _, k := range append(slices.Clone(untouchable), snapshot.SecretKey,
					snapshot.HeadKey("acme", "alice"), snapshot.HeadKey("acme", "bob"), snapshot.HeadKey("globex", "dan")) {
					if after[k] != before[k] {
						t.Errorf("%s changed or vanished", k)
					}
				}

				// A second run finds nothing more to do.
				again, err := gc.Run(ctx, s, opts)
				if err != nil {
					t.Fatal(err)
				}
				if again.VersionsDeleted+again.PacksDeleted+again.ChangeSetsDeleted != 0 || again.BytesFreed != 0 {
					t.Errorf("second run deleted more: %v", again)
				}
			})
		}
	})
}

// TestGraceDefersRecentlySuperseded: versions outside retention whose
// successor is younger than the grace period are kept (a sync or build may
// still read them), and so are unreferenced packs younger than it.
func TestGraceDefersRecentlySuperseded(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) snapshot.Store) {
		ctx := context.Background()
		s := open(t)
		f := newFixture(t, s)
		now := time.Now()
		f.history("acme", "alice", 1, []time.Time{now, now, now, now})
		orphan := snapshot.PackKey("acme", "alice", "00ff00ff00ff00ff")
		putObject(t, s, orphan, "fresh orphan")
		before := listing(t, s)

		rep, err := gc.Run(ctx, s, gc.Options{KeepVersions: 1}) // real clock, default grace
		if err != nil {
			t.Fatal(err)
		}
		if n := len(gone(before, listing(t, s))); n != 0 || rep.BytesFreed != 0 {
			t.Fatalf("within the grace period gc deleted %d objects (%d bytes)", n, rep.BytesFreed)
		}
		if rep.VersionsDeferred != 3 || rep.VersionsKept != 4 || rep.PacksDeferred != 1 {
			t.Errorf("deferred %d versions (kept %d), %d packs; want 3 (4), 1", rep.VersionsDeferred, rep.VersionsKept, rep.PacksDeferred)
		}

		rep, err = gc.Run(ctx, s, gc.Options{KeepVersions: 1, Now: aged()})
		if err != nil {
			t.Fatal(err)
		}
		if rep.VersionsDeleted != 3 || rep.VersionsDeferred != 0 || rep.PacksDeferred != 0 {
			t.Errorf("past the grace: deleted %d versions, deferred %d versions and %d packs; want 3, 0, 0",
				rep.VersionsDeleted, rep.VersionsDeferred, rep.PacksDeferred)
		}
		mustNotExist(t, s, orphan)
		f.verify("acme", "alice", 4)
	})
}

// TestLostRaceLeftovers: a writer that loses the race for a version number
// leaves its change set and packs behind; gc removes them once they are
// older than the grace period and keeps the winner's.
func TestLostRaceLeftovers(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) snapshot.Store) {
		ctx := context.Background()
		s := open(t)
		f := newFixture(t, s)
		now := time.Now()
		ms := f.history("acme", "alice", 1, []time.Time{now, now})
		v2 := ms[1]

		// The loser built version 2 from other data, then lost the claim.
		loser := f.recs["acme/alice"][1]
		loser = append(slices.Clone(loser[:len(loser)/2]), loser[len(loser)/2+10:]...)
		res, err := snapshot.BuildOn(ctx, s, f.buildOpts("acme", "alice", now), ms[0], gen.NewSource(loser))
		if err != nil {
			t.Fatal(err)
		}
		err = diff.CommitVersion(ctx, s, res.Manifest, &diff.ChangeSet{Kind: diff.KindBuild})
		if !errors.Is(err, snapshot.ErrExist) {
			t.Fatalf("loser's commit: %v, want ErrExist", err)
		}
		var orphanPacks []string
		for _, p := range livePacks(res.Manifest) {
			if !slices.Contains(livePacks(ms...), p) {
				orphanPacks = append(orphanPacks, p)
			}
		}
		if len(orphanPacks) == 0 {
			t.Fatal("the loser wrote no pack of its own; test data should make it")
		}
		before := listing(t, s)

		// Young leftovers stay: the "loser" might still be a winner about to claim.
		rep, err := gc.Run(ctx, s, gc.Options{KeepVersions: 10})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(gone(before, listing(t, s))); n != 0 {
			t.Fatalf("within the grace period gc deleted %d objects", n)
		}
		if rep.PacksDeferred != len(orphanPacks) {
			t.Errorf("deferred %d packs, want the loser's %d", rep.PacksDeferred, len(orphanPacks))
		}

		rep, err = gc.Run(ctx, s, gc.Options{KeepVersions: 10, Now: aged()})
		if err != nil {
			t.Fatal(err)
		}
		lost := gone(before, listing(t, s))
		var keys []string
		for _, oi := range lost {
			keys = append(keys, oi.Key)
		}
		want := slices.Clone(orphanPacks)
		slices.Sort(want)
		if !slices.Equal(keys, want) {
			t.Errorf("deleted\n%v\nwant the loser's packs (its feed entry stays: the feed skips it)\n%v", keys, want)
		}
		if rep.ChangeSetsDeleted != 0 || rep.PacksDeleted != len(orphanPacks) || rep.VersionsDeleted != 0 {
			t.Errorf("report %v", rep)
		}
		f.verify("acme", "alice", 1)
		f.verify("acme", "alice", 2)
		mustExist(t, s, v2.Changes)
	})
}

// TestCorruptManifestStopsOnlyThatUser: gc cannot know what an unreadable
// manifest references, so it deletes nothing of that user, reports it, and
// goes on with the others.
func TestCorruptManifestStopsOnlyThatUser(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) snapshot.Store) {
		ctx := context.Background()
		s := open(t)
		f := newFixture(t, s)
		now := time.Now()
		f.history("acme", "alice", 1, []time.Time{now, now})
		f.history("acme", "bob", 2, []time.Time{now, now})
		putObject(t, s, snapshot.ManifestKey("acme", "bob", 3), "not a manifest")
		bobBefore := packKeys(t, s, "acme", "bob")

		rep, err := gc.Run(ctx, s, gc.Options{KeepVersions: 1, Now: aged()})
		if err == nil || !errors.Is(err, snapshot.ErrCorrupt) || !strings.Contains(err.Error(), "acme/bob") {
			t.Fatalf("err = %v, want bob's corrupt manifest", err)
		}
		if rep.UsersScanned != 2 || rep.UsersFailed != 1 || len(rep.PerUser) != 1 || rep.PerUser[0].User != "bob" || rep.PerUser[0].Error == "" {
			t.Errorf("report %+v", rep)
		}
		if rep.VersionsDeleted != 1 {
			t.Errorf("deleted %d versions, want alice's v1", rep.VersionsDeleted)
		}
		mustNotExist(t, s, snapshot.ManifestKey("acme", "alice", 1))
		mustExist(t, s, snapshot.ManifestKey("acme", "bob", 1))
		if got := packKeys(t, s, "acme", "bob"); !slices.Equal(got, bobBefore) {
			t.Errorf("bob's packs changed: %v, want %v", got, bobBefore)
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	cases := []struct {
		opts gc.Options
		ok   bool
	}{
		{gc.Options{KeepVersions: 3}, true},
		{gc.Options{KeepDays: 7, Grace: time.Minute, DryRun: true}, true},
		{gc.Options{}, false},
		{gc.Options{KeepVersions: 1, KeepDays: 1}, false},
		{gc.Options{KeepVersions: -1}, false},
		{gc.Options{KeepDays: -1}, false},
		{gc.Options{KeepVersions: 1, Grace: -time.Second}, false},
		{gc.Options{KeepVersions: 1, Workers: -1}, false},
	}
	for _, tc := range cases {
		err := tc.opts.Validate()
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tc.opts, err, tc.ok)
		}
		if !tc.ok {
			if _, err := gc.Run(context.Background(), nil, tc.opts); !errors.Is(err, snapshot.ErrInvalid) {
				t.Errorf("%+v: Run = %v, want ErrInvalid", tc.opts, err)
			}
		}
	}
}

func TestReportJSON(t *testing.T) {
	rep := &gc.Report{DryRun: true, UsersScanned: 2, Counts: gc.Counts{VersionsDeleted: 3, BytesFreed: 42},
		PerUser: []gc.UserReport{{Org: "acme", User: "alice", Head: 5, OldestKept: 4, Counts: gc.Counts{PacksDeleted: 1}}}}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"dry_run": true, "users_scanned": 2.0, "versions_deleted": 3.0, "bytes_freed": 42.0} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (in %s)", k, got[k], want, b)
		}
	}
	u := got["per_user"].([]any)[0].(map[string]any)
	if u["org"] != "acme" || u["packs_deleted"] != 1.0 || u["oldest_kept"] != 4.0 {
		t.Errorf("per-user line %v", u)
	}
	if s := rep.String(); !strings.Contains(s, "would delete 3 versions") {
		t.Errorf("String() = %q", s)
	}
}

// TestRewrittenSinceListingIsYoung: gc judges a garbage object's age by a
// Stat right before deleting it, not by the listing, so an object written
// again meanwhile (a writer refreshing a pack it reuses) survives. Only the
// directory store can backdate an object, so this runs on it alone.
func TestRewrittenSinceListingIsYoung(t *testing.T) {
	ctx := context.Background()
	s, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, s)
	f.history("acme", "alice", 1, []time.Time{time.Now()})
	pack := snapshot.PackKey("acme", "alice", "00ff00ff00ff00ff")
	backdated := func() {
		putObject(t, s, pack, "orphan")
		old := time.Now().Add(-3 * time.Hour)
		if err := os.Chtimes(filepath.Join(s.Dir(), filepath.FromSlash(pack)), old, old); err != nil {
			t.Fatal(err)
		}
	}

	backdated()
	// gc's re-check of the head comes after the listing and before the
	// deletes: rewrite the pack there.
	gs := hooked(s, storetest.OpGet, func(key string) {
		if key == snapshot.ManifestKey("acme", "alice", 2) {
			putObject(t, s, pack, "orphan")
		}
	})
	rep, err := gc.Run(ctx, gs, gc.Options{KeepVersions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksDeleted != 0 || rep.PacksDeferred != 1 {
		t.Errorf("deleted %d packs, deferred %d; want the rewritten pack deferred", rep.PacksDeleted, rep.PacksDeferred)
	}
	mustExist(t, s, pack)

	// Control: left alone, the backdated pack goes.
	backdated()
	rep, err = gc.Run(ctx, s, gc.Options{KeepVersions: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksDeleted != 1 {
		t.Errorf("deleted %d packs, want the backdated orphan", rep.PacksDeleted)
	}
	mustNotExist(t, s, pack)
}
