package gc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/snapshot"
)

// userObjects are the objects of one user that gc may consider, as listed.
// Anything else under the user (head hint, patch answers, unknown names) is
// never collected, so it is never deleted.
type userObjects struct {
	org, user string
	manifests map[uint64]snapshot.ObjectInfo
	packs     map[string]snapshot.ObjectInfo // by pack name (Manifest.Packs)
}

func newUserObjects(org, user string) *userObjects {
	return &userObjects{org: org, user: user,
		manifests: map[uint64]snapshot.ObjectInfo{},
		packs:     map[string]snapshot.ObjectInfo{}}
}

// add files one listed object; rest is the key below "<org>/<user>/".
// Only exact layout names are accepted, so a key gc did not expect is left
// alone rather than guessed at.
func (u *userObjects) add(rest string, oi snapshot.ObjectInfo) {
	switch {
	case strings.HasPrefix(rest, "versions/"):
		if v, ok := snapshot.ParseManifestKey(oi.Key); ok && oi.Key == snapshot.ManifestKey(u.org, u.user, v) {
			u.manifests[v] = oi
		}
	case strings.HasPrefix(rest, "packs/"):
		name, ok := strings.CutSuffix(rest[len("packs/"):], ".pack")
		if ok && name != "" && !strings.Contains(name, "/") {
			u.packs[name] = oi
		}
	}
}

type runner struct {
	s    snapshot.Store
	opts Options
	now  time.Time
}

// old reports whether an object is older than the grace period.
func (r *runner) old(oi snapshot.ObjectInfo) bool {
	return !oi.ModTime.After(r.now.Add(-r.opts.Grace))
}

// user collects one user in two phases. Phase 1 reads the manifests that
// existed at listing time, picks the versions to delete, and computes the
// live set (the packs the remaining versions reference). Phase 2 deletes the
// versions with their change-feed entries, then re-reads any versions
// claimed since the listing (their packs join the live set) and only then
// deletes unreferenced packs older than the grace period.
func (r *runner) user(ctx context.Context, u *userObjects) (UserReport, error) {
	rep := UserReport{Org: u.org, User: u.user}

	// Phase 1: the manifests that exist, oldest first.
	versions := make([]uint64, 0, len(u.manifests))
	for v := range u.manifests {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	ms, err := r.readManifests(ctx, u, versions)
	if err != nil {
		return rep, err
	}
	if len(ms) > 0 {
		rep.Head = ms[len(ms)-1].Version
	}
	del, deferred := r.plan(u, ms)
	keep := ms[len(del):]
	rep.VersionsDeferred = deferred
	rep.VersionsKept = len(keep)
	if len(keep) > 0 {
		rep.OldestKept = keep[0].Version
	}
	live := newLiveSet()
	for _, m := range keep {
		live.addManifest(m)
	}

	// Phase 2a: versions, oldest first, one at a time: if the run stops
	// halfway, what is left is still every version from some point up to
	// the head. A manifest goes before its change set, so no remaining
	// manifest ever names a missing change set.
	var mu sync.Mutex // guards rep.Counts from the delete workers
	for _, m := range del {
		key := snapshot.ManifestKey(u.org, u.user, m.Version)
		if err := r.delete(ctx, u, key); err != nil {
			return rep, err
		}
		rep.VersionsDeleted++
		rep.BytesFreed += u.manifests[m.Version].Size
		if k, ok := snapshot.ParseFeedKey(m.Changes); ok && k.Org == u.org && k.User == u.user && k.Version == m.Version {
			// The version's change set in the change feed goes with it.
			oi, err := r.s.Stat(ctx, m.Changes)
			if errors.Is(err, snapshot.ErrNotExist) {
				continue
			}
			if err != nil {
				return rep, fmt.Errorf("stat %s: %w", m.Changes, err)
			}
			if err := r.deleteFeedEntry(ctx, u, m.Version, m.Changes); err != nil {
				return rep, err
			}
			rep.ChangeSetsDeleted++
			rep.BytesFreed += oi.Size
		}
	}

	// Phase 2b: re-check the head right before deleting unreferenced
	// packs. A version claimed since the listing may reference packs that
	// looked unreferenced.
	var head0 uint64
	if len(versions) > 0 {
		head0 = versions[len(versions)-1]
	}
	for v := head0 + 1; ; v++ {
		m, err := snapshot.ReadManifest(ctx, r.s, u.org, u.user, v)
		if errors.Is(err, snapshot.ErrNotExist) {
			break
		}
		if err != nil {
			return rep, fmt.Errorf("re-check head: %w", err)
		}
		live.addManifest(m)
		rep.Head = v
		rep.VersionsKept++
		if rep.OldestKept == 0 {
			rep.OldestKept = v
		}
	}

	// Phase 2c: unreferenced packs, each only once older than the grace
	// period, by the listing and again by a Stat right before its Delete.
	var garbage []snapshot.ObjectInfo
	for name, oi := range u.packs {
		switch {
		case live.packs[name]:
			rep.PacksKept++
			rep.PackBytesKept += oi.Size
		case r.old(oi):
			garbage = append(garbage, oi)
		default:
			rep.PacksDeferred++
		}
	}
	slices.SortFunc(garbage, func(a, b snapshot.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.opts.Workers)
	for _, oi := range garbage {
		g.Go(func() error {
			// Judge the object as it is now, not as listed: one written
			// again since the listing (a writer refreshing a pack it
			// reuses, or a re-run recreating one another gc removed) is
			// young again.
			cur, err := r.s.Stat(gctx, oi.Key)
			if errors.Is(err, snapshot.ErrNotExist) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("stat %s: %w", oi.Key, err)
			}
			if !r.old(cur) {
				mu.Lock()
				rep.PacksDeferred++
				mu.Unlock()
				return nil
			}
			if err := r.delete(gctx, u, oi.Key); err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			rep.PacksDeleted++
			rep.BytesFreed += cur.Size
			return nil
		})
	}
	err = g.Wait()
	return rep, err
}

// readManifests reads the listed manifests, in version order. One that has
// vanished since the listing (another gc) is skipped; one that cannot be
// read or decoded stops the user: gc cannot know what it references.
func (r *runner) readManifests(ctx context.Context, u *userObjects, versions []uint64) ([]*snapshot.Manifest, error) {
	ms := make([]*snapshot.Manifest, len(versions))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.opts.Workers)
	for i, v := range versions {
		g.Go(func() error {
			m, err := snapshot.ReadManifest(gctx, r.s, u.org, u.user, v)
			if errors.Is(err, snapshot.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			ms[i] = m
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(ms, func(m *snapshot.Manifest) bool { return m == nil }), nil
}

// plan picks the versions to delete: a prefix of ms (oldest first) below
// the oldest retained version, never the head. The prefix ends early at the
// first version whose successor is younger than the grace period: that
// version was the head until recently, so a sync may still be reading it,
// and a build that read it as its parent may still be writing. deferred
// counts the versions beyond retention kept for that reason.
func (r *runner) plan(u *userObjects, ms []*snapshot.Manifest) (del []*snapshot.Manifest, deferred int) {
	if len(ms) == 0 {
		return nil, 0
	}
	oldest := len(ms) - 1 // the head is always kept
	if r.opts.KeepVersions > 0 {
		oldest = max(0, len(ms)-r.opts.KeepVersions)
	} else {
		cutoff := r.now.Add(-time.Duration(r.opts.KeepDays) * 24 * time.Hour).Unix()
		for i, m := range ms {
			if m.CreatedUnix >= cutoff {
				oldest = i
				break
			}
		}
	}
	for i := range oldest {
		succ := u.manifests[ms[i+1].Version]
		if !r.old(succ) {
			return ms[:i], oldest - i
		}
	}
	return ms[:oldest], 0
}

// delete removes one object of u. Every key comes from u's classified
// listing already; the prefix check makes "nothing outside a user's packs/
// and versions/" hold even if that ever changes.
func (r *runner) delete(ctx context.Context, u *userObjects, key string) error {
	prefix := snapshot.UserPrefix(u.org, u.user)
	if !strings.HasPrefix(key, prefix+"packs/") && !strings.HasPrefix(key, prefix+"versions/") {
		return fmt.Errorf("refusing to delete %s: not below %spacks/ or %sversions/", key, prefix, prefix)
	}
	return r.remove(ctx, key)
}

// deleteFeedEntry removes the change-feed object of a retired version of u:
// only a feed key naming exactly that org, user and version passes.
func (r *runner) deleteFeedEntry(ctx context.Context, u *userObjects, v uint64, key string) error {
	k, ok := snapshot.ParseFeedKey(key)
	if !ok || k.Org != u.org || k.User != u.user || k.Version != v {
		return fmt.Errorf("refusing to delete %s: not the feed entry of %s/%s version %d", key, u.org, u.user, v)
	}
	return r.remove(ctx, key)
}

// remove deletes a key that passed a caller's guard (or, in a dry run,
// only logs it).
func (r *runner) remove(ctx context.Context, key string) error {
	if r.opts.DryRun {
		r.opts.Logger.Debug("gc: would delete", "key", key)
		return nil
	}
	r.opts.Logger.Debug("gc: delete", "key", key)
	if err := r.s.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// liveSet holds the packs the remaining versions reference.
type liveSet struct {
	packs map[string]bool
}

func newLiveSet() *liveSet {
	return &liveSet{packs: map[string]bool{}}
}

func (l *liveSet) addManifest(m *snapshot.Manifest) {
	for _, p := range m.Packs {
		l.packs[p] = true
	}
}
