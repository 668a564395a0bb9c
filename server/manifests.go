package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// manifestCache keeps recently used manifests. A version's manifest never
// changes once claimed, but gc may retire the version: liveManifest checks
// that a cached version other than the head still exists and drops it when
// it does not. The cache bounds how many manifests it holds and their
// approximate memory, evicting in insertion order.
type manifestCache struct {
	mu       sync.Mutex
	max      int // entries
	maxBytes int
	bytes    int
	items    map[manifestKey]*cachedManifest
	order    []manifestKey
}

// approxSize estimates a decoded manifest's memory: its chunk entries
// dominate (IDs, hashes, keys), plus the chunk index once built.
func approxSize(m *snapshot.Manifest) int { return 1024 + len(m.Chunks)*160 }

// cachedManifest is a manifest plus, built on first use, an index of its
// chunks by ID for /v1/chunks.
type cachedManifest struct {
	m    *snapshot.Manifest
	once sync.Once
	idx  map[snapshot.ChunkID]int
}

func (c *cachedManifest) chunkIndex(id snapshot.ChunkID) (int, bool) {
	c.once.Do(func() {
		c.idx = make(map[snapshot.ChunkID]int, len(c.m.Chunks))
		for i := range c.m.Chunks {
			c.idx[c.m.Chunks[i].ID] = i
		}
	})
	i, ok := c.idx[id]
	return i, ok
}

type manifestKey struct {
	org, user string
	v         uint64
}

func newManifestCache(max int) *manifestCache {
	return &manifestCache{max: max, maxBytes: 256 << 20, items: map[manifestKey]*cachedManifest{}}
}

// manifest returns version v of a user's data set, from the cache or the store.
func (s *Server) manifest(ctx context.Context, org, user string, v uint64) (*snapshot.Manifest, error) {
	cm, err := s.cachedManifest(ctx, org, user, v)
	if err != nil {
		return nil, err
	}
	return cm.m, nil
}

// liveManifest is manifest for a version that gc may have retired since
// this replica cached it (any version but the head): a cached manifest is
// only used after a Stat shows it still exists, and dropped when it is gone,
// so a retired version reads as unknown here as on every other replica.
func (s *Server) liveManifest(ctx context.Context, org, user string, v uint64) (*snapshot.Manifest, error) {
	k := manifestKey{org, user, v}
	if cm, ok := s.manifests.get(k); ok {
		key := snapshot.ManifestKey(org, user, v)
		_, err := s.store.Stat(ctx, key)
		if errors.Is(err, snapshot.ErrNotExist) {
			s.manifests.drop(k)
			return nil, &snapshot.ObjectError{Op: "read manifest", Key: key, Err: err}
		}
		if err != nil {
			return nil, fmt.Errorf("stat version %d: %w", v, err)
		}
		return cm.m, nil
	}
	return s.manifest(ctx, org, user, v)
}

func (c *manifestCache) get(k manifestKey) (*cachedManifest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cm, ok := c.items[k]
	return cm, ok
}

// drop forgets a manifest whose version no longer exists.
func (c *manifestCache) drop(k manifestKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cm, ok := c.items[k]
	if !ok {
		return
	}
	c.bytes -= approxSize(cm.m)
	delete(c.items, k)
	if i := slices.Index(c.order, k); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
}

func (s *Server) cachedManifest(ctx context.Context, org, user string, v uint64) (*cachedManifest, error) {
	k := manifestKey{org, user, v}
	c := s.manifests
	if cm, ok := c.get(k); ok {
		return cm, nil
	}
	m, err := snapshot.ReadManifest(ctx, s.store, org, user, v)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cm, ok := c.items[k]; ok {
		return cm, nil
	}
	cm := &cachedManifest{m: m}
	size := approxSize(m)
	if size > c.maxBytes/4 {
		return cm, nil // too big to be worth keeping
	}
	for len(c.order) > 0 && (len(c.order) >= c.max || c.bytes+size > c.maxBytes) {
		c.bytes -= approxSize(c.items[c.order[0]].m)
		delete(c.items, c.order[0])
		c.order = c.order[1:]
	}
	c.items[k] = cm
	c.order = append(c.order, k)
	c.bytes += size
	return cm, nil
}

// chunkCache keeps recently served raw chunks, verified when first read.
// Chunks are immutable (named by their keyed content hash, per user), so
// entries never go stale; the cache is bounded by total bytes.
type chunkCache struct {
	mu    sync.Mutex
	max   int
	size  int
	items map[chunkKey][]byte
	order []chunkKey
}

type chunkKey struct {
	scope string // org/user
	id    snapshot.ChunkID
}

func (c *chunkCache) get(k chunkKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.items[k]
	return b, ok
}

func (c *chunkCache) put(k chunkKey, b []byte) {
	if len(b) > c.max/16 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	for c.size+len(b) > c.max && len(c.order) > 0 {
		c.size -= len(c.items[c.order[0]])
		delete(c.items, c.order[0])
		c.order = c.order[1:]
	}
	c.items[k] = b
	c.order = append(c.order, k)
	c.size += len(b)
}

// headCache remembers each user's head for a short time, so that frequent
// polls do not each cost two store requests. A version committed through
// this replica updates it at once; one committed through another replica
// shows after at most the TTL, or at once to a client that names it
// (min=V). Long polls do not use it: they wait in the hub (hub.go).
type headCache struct {
	mu    sync.Mutex
	ttl   time.Duration
	items map[string]headEntry
}

type headEntry struct {
	v  uint64
	at time.Time
}

const maxCachedHeads = 100_000

func (s *Server) head(ctx context.Context, org, user string) (uint64, error) {
	c := s.heads
	k := org + "/" + user
	if c.ttl > 0 {
		c.mu.Lock()
		e, ok := c.items[k]
		c.mu.Unlock()
		if ok && s.opts.now().Sub(e.at) < c.ttl {
			return e.v, nil
		}
	}
	v, err := snapshot.Head(ctx, s.store, org, user)
	if err != nil {
		return 0, err
	}
	s.hub.observe(org, user, v)
	s.noteHead(org, user, v)
	return v, nil
}

// noteHead records a head learned from the store or from a local commit
// (every commit through this replica comes here: it wakes the long polls
// of the user at once); it never moves a cached head backwards.
func (s *Server) noteHead(org, user string, v uint64) {
	s.hub.publish(org, user, v, "local")
	c := s.heads
	if c.ttl <= 0 {
		return
	}
	k := org + "/" + user
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok && e.v > v {
		return
	}
	if len(c.items) >= maxCachedHeads {
		c.items = map[string]headEntry{}
	}
	c.items[k] = headEntry{v: v, at: s.opts.now()}
}
