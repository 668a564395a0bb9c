package gc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/deltasync/deltasync/diff"
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

// Store is what gc does to a store: it reads, lists and deletes, and never
// writes an object. Every snapshot.Store is one.
type Store interface {
	snapshot.ReadStore
	snapshot.Deleter
}

type runner struct {
	s    Store
	opts Options
	now  time.Time
	// consumers are the registered feed consumers by org, read before the
	// listing; held counts the versions each kept (consumers.go).
	consumers map[string][]diff.Consumer
	held      map[consumerID]int
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
// deletes unreferenced packs older than the grace period. The report counts
// what was done even when a step fails.
func (r *runner) user(ctx context.Context, u *userObjects) (UserReport, error) {
	c := &collection{runner: r, u: u, rep: UserReport{Org: u.org, User: u.user}, live: newLiveSet()}
	del, err := c.planVersions(ctx)
	if err == nil {
		err = c.deleteVersions(ctx, del)
	}
	if err == nil {
		err = c.recheckHead(ctx)
	}
	if err == nil {
		err = c.deletePacks(ctx)
	}
	return c.rep, err
}

// collection is the gc run of one user.
type collection struct {
	*runner
	u     *userObjects
	live  *liveSet
	head0 uint64     // the newest version listed
	mu    sync.Mutex // guards rep.Counts from the delete workers
	rep   UserReport
}

// planVersions (phase 1) reads the manifests that exist, oldest first, and
// returns the versions to delete; the others' packs are live.
func (c *collection) planVersions(ctx context.Context) ([]*snapshot.Manifest, error) {
	versions := slices.Sorted(maps.Keys(c.u.manifests))
	if len(versions) > 0 {
		c.head0 = versions[len(versions)-1]
	}
	ms, err := c.readManifests(ctx, c.u, versions)
	if err != nil {
		return nil, err
	}
	if len(ms) > 0 {
		c.rep.Head = ms[len(ms)-1].Version
	}
	del, deferred := c.plan(c.u, ms)
	del = c.holdForConsumers(del)
	keep := ms[len(del):]
	c.rep.VersionsDeferred = deferred
	c.rep.VersionsKept = len(keep)
	if len(keep) > 0 {
		c.rep.OldestKept = keep[0].Version
	}
	for _, m := range keep {
		c.live.addManifest(m)
	}
	return del, nil
}

// deleteVersions (phase 2a) deletes versions, oldest first, one at a time:
// if the run stops halfway, what is left is still every version from some
// point up to the head. A manifest goes before its change set, so no
// remaining manifest ever names a missing change set.
func (c *collection) deleteVersions(ctx context.Context, del []*snapshot.Manifest) error {
	for _, m := range del {
		key := snapshot.ManifestKey(c.u.org, c.u.user, m.Version)
		if err := c.delete(ctx, c.u, key); err != nil {
			return err
		}
		c.rep.VersionsDeleted++
		c.rep.BytesFreed += c.u.manifests[m.Version].Size
		if err := c.deleteChangeSet(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// deleteChangeSet deletes the change-feed entry of a deleted version m,
// if its manifest names one of its own that still exists.
func (c *collection) deleteChangeSet(ctx context.Context, m *snapshot.Manifest) error {
	k, ok := snapshot.ParseFeedKey(m.Changes)
	if !ok || k.Org != c.u.org || k.User != c.u.user || k.Version != m.Version {
		return nil
	}
	oi, err := c.s.Stat(ctx, m.Changes)
	if errors.Is(err, snapshot.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", m.Changes, err)
	}
	if err := c.deleteFeedEntry(ctx, c.u, m.Version, m.Changes); err != nil {
		return err
	}
	c.rep.ChangeSetsDeleted++
	c.rep.BytesFreed += oi.Size
	return nil
}

// recheckHead (phase 2b) reads the versions claimed since the listing,
// right before unreferenced packs are deleted: they may reference packs
// that looked unreferenced.
func (c *collection) recheckHead(ctx context.Context) error {
	for v := c.head0 + 1; ; v++ {
		m, err := snapshot.ReadManifest(ctx, c.s, c.u.org, c.u.user, v)
		if errors.Is(err, snapshot.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("re-check head: %w", err)
		}
		c.live.addManifest(m)
		c.rep.Head = v
		c.rep.VersionsKept++
		if c.rep.OldestKept == 0 {
			c.rep.OldestKept = v
		}
	}
}

// deletePacks (phase 2c) deletes the unreferenced packs, each only once
// older than the grace period, by the listing and again by a Stat right
// before its Delete.
func (c *collection) deletePacks(ctx context.Context) error {
	var garbage []snapshot.ObjectInfo
	for name, oi := range c.u.packs {
		switch {
		case c.live.packs[name]:
			c.rep.PacksKept++
			c.rep.PackBytesKept += oi.Size
		case c.old(oi):
			garbage = append(garbage, oi)
		default:
			c.rep.PacksDeferred++
		}
	}
	slices.SortFunc(garbage, func(a, b snapshot.ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.Workers)
	for _, oi := range garbage {
		g.Go(func() error { return c.deletePack(gctx, oi) })
	}
	return g.Wait()
}

// deletePack deletes one pack listed as old garbage, judging it as it is
// now, not as listed: one written again since the listing (a writer
// refreshing a pack it reuses, or a re-run recreating one another gc
// removed) is young again.
func (c *collection) deletePack(ctx context.Context, oi snapshot.ObjectInfo) error {
	cur, err := c.s.Stat(ctx, oi.Key)
	if errors.Is(err, snapshot.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", oi.Key, err)
	}
	if !c.old(cur) {
		c.mu.Lock()
		c.rep.PacksDeferred++
		c.mu.Unlock()
		return nil
	}
	if err := c.delete(ctx, c.u, oi.Key); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rep.PacksDeleted++
	c.rep.BytesFreed += cur.Size
	return nil
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
