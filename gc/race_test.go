package gc_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// pausedBuild runs diff.BuildVersion of recs on org/user in a goroutine
// and stops it right before it claims its version: its packs and change
// set are written, its manifest is not. release lets the claim go ahead;
// wait returns the build's outcome.
type pausedBuild struct {
	release func()
	wait    func() (*snapshot.BuildResult, error)
}

func startPausedBuild(t *testing.T, f *fixture, org, user string, recs []gen.Record) *pausedBuild {
	t.Helper()
	claim, release := make(chan struct{}), make(chan struct{})
	bs := hooked(f.s, storetest.OpPutIfAbsent, func(key string) {
		if strings.HasSuffix(key, ".manifest") {
			close(claim)
			<-release
		}
	})
	var (
		res  *snapshot.BuildResult
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		res, _, err = diff.BuildVersion(context.Background(), bs, f.buildOpts(org, user, time.Now()), gen.NewSource(recs))
	}()
	select {
	case <-claim:
	case <-done:
		t.Fatalf("build ended before claiming a version: %v", err)
	}
	var once sync.Once
	return &pausedBuild{
		release: func() { once.Do(func() { close(release) }) },
		wait: func() (*snapshot.BuildResult, error) {
			<-done
			if err == nil {
				f.remember(res.Manifest, recs)
			}
			return res, err
		},
	}
}

// unclaimedPacks are the packs of org/user that no committed version
// references: the paused build's.
func unclaimedPacks(t *testing.T, f *fixture, org, user string) []string {
	t.Helper()
	var committed []*snapshot.Manifest
	for _, m := range f.mans[org+"/"+user] {
		committed = append(committed, m)
	}
	live := livePacks(committed...)
	var out []string
	for _, p := range packKeys(t, f.s, org, user) {
		if !slices.Contains(live, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		t.Fatal("the paused build wrote no pack of its own; the test data should make it")
	}
	return out
}

// TestInProgressBuildSurvives: a build has written its packs but not yet
// claimed the manifest that references them. gc with the default grace
// leaves them alone, and the build then commits a version that reads back.
func TestInProgressBuildSurvives(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) snapshot.Store) {
		ctx := context.Background()
		s := open(t)
		f := newFixture(t, s)
		now := time.Now()
		f.history("acme", "alice", 1, []time.Time{now, now})
		b := startPausedBuild(t, f, "acme", "alice", gen.EditScattered(f.recs["acme/alice"][2], 50, 9))
		defer b.release()
		pending := unclaimedPacks(t, f, "acme", "alice")

		// Only the grace period protects them: with it used up, gc would
		// count them as garbage.
		dry, err := gc.Run(ctx, s, gc.Options{KeepVersions: 1, DryRun: true, Now: aged()})
		if err != nil {
			t.Fatal(err)
		}
		if dry.PacksDeleted < len(pending) {
			t.Fatalf("aged dry run would delete %d packs; want at least the build's %d", dry.PacksDeleted, len(pending))
		}

		rep, err := gc.Run(ctx, s, gc.Options{KeepVersions: 1})
		if err != nil {
			t.Fatal(err)
		}
		if rep.PacksDeferred != len(pending) || rep.PacksDeleted != 0 || rep.ChangeSetsDeleted != 0 {
			t.Errorf("deferred %d packs, deleted %d packs and %d change sets; want the build's %d deferred, none deleted",
				rep.PacksDeferred, rep.PacksDeleted, rep.ChangeSetsDeleted, len(pending))
		}
		for _, p := range pending {
			mustExist(t, s, p)
		}

		b.release()
		res, err := b.wait()
		if err != nil {
			t.Fatal(err)
		}
		if res.Manifest.Version != 3 {
			t.Fatalf("build claimed version %d, want 3", res.Manifest.Version)
		}
		f.verify("acme", "alice", 3)

		// Once claimed, its packs are live: a run with the grace used up
		// deletes the old versions and keeps exactly the head's packs.
		rep, err = gc.Run(ctx, s, gc.Options{KeepVersions: 1, Now: aged()})
		if err != nil {
			t.Fatal(err)
		}
		if rep.VersionsDeleted != 2 {
			t.Errorf("deleted %d versions, want 2", rep.VersionsDeleted)
		}
		f.verify("acme", "alice", 3)
		if got, want := packKeys(t, s, "acme", "alice"), livePacks(res.Manifest); !slices.Equal(got, want) {
			t.Errorf("packs left %v, want the head's %v", got, want)
		}
	})
}

// TestBuildRacingGCLosesNothing: gc runs with every object past a tiny
// grace period, so the only thing between a concurrent build's packs and
// deletion is phase 2's re-check of the head. The build claims its version
// after gc computed its live set (phase 1) and right before gc re-checks:
// exactly the window the re-check exists for. The interleaving is forced
// by store hooks, not by timing.
func TestBuildRacingGCLosesNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) snapshot.Store) {
		ctx := context.Background()
		s := open(t)
		f := newFixture(t, s)
		now := time.Now()
		f.history("acme", "alice", 1, []time.Time{now, now})
		v1 := f.mans["acme/alice"][1]
		b := startPausedBuild(t, f, "acme", "alice", gen.EditScattered(f.recs["acme/alice"][2], 50, 9))
		defer b.release()
		pending := unclaimedPacks(t, f, "acme", "alice")

		// gc's first read of version 3 is its re-check of the head: let
		// the build claim version 3 just before it.
		probe := snapshot.ManifestKey("acme", "alice", 3)
		var claimed sync.Once
		gs := hooked(s, storetest.OpGet, func(key string) {
			if key == probe {
				claimed.Do(func() {
					b.release()
					if _, err := b.wait(); err != nil {
						t.Errorf("build: %v", err)
					}
				})
			}
		})
		rep, err := gc.Run(ctx, gs, gc.Options{KeepVersions: 1, Grace: time.Nanosecond, Now: aged()})
		if err != nil {
			t.Fatal(err)
		}
		res, err := b.wait()
		if err != nil {
			t.Fatal(err)
		}
		if res.Manifest.Version != 3 {
			t.Fatalf("build claimed version %d, want 3", res.Manifest.Version)
		}

		// The build lost nothing: its version reads back and verifies,
		// change set included, and every pack it wrote is still there.
		f.verify("acme", "alice", 3)
		for _, p := range pending {
			mustExist(t, s, p)
		}
		// gc did its work around it: version 1 and the packs only it
		// referenced are gone, version 2 (the head gc saw) stays.
		if rep.VersionsDeleted != 1 || rep.VersionsKept != 2 {
			t.Errorf("deleted %d versions, kept %d; want 1, 2 (v2 and the racing v3)", rep.VersionsDeleted, rep.VersionsKept)
		}
		mustNotExist(t, s, snapshot.ManifestKey("acme", "alice", 1))
		mustNotExist(t, s, v1.Changes) // its change-feed entry went with it
		f.verify("acme", "alice", 2)
		if got, want := packKeys(t, s, "acme", "alice"), livePacks(f.mans["acme/alice"][2], res.Manifest); !slices.Equal(got, want) {
			t.Errorf("packs left %v, want those of v2 and v3 %v", got, want)
		}
	})
}
