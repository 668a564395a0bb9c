package server

import (
	"context"
	"sync"

	"github.com/deltasync/deltasync/snapshot"
)

// manifestCache keeps recently used manifests. A version's manifest never
// changes once claimed, so entries need no invalidation; the cache only
// bounds how many it holds (a simple clock of insertion order).
type manifestCache struct {
	mu    sync.Mutex
	max   int
	items map[manifestKey]*snapshot.Manifest
	order []manifestKey
}

type manifestKey struct {
	org, user string
	v         uint64
}

func newManifestCache(max int) *manifestCache {
	return &manifestCache{max: max, items: map[manifestKey]*snapshot.Manifest{}}
}

// manifest returns version v of a user's data set, from the cache or the store.
func (s *Server) manifest(ctx context.Context, org, user string, v uint64) (*snapshot.Manifest, error) {
	k := manifestKey{org, user, v}
	c := s.manifests
	c.mu.Lock()
	m, ok := c.items[k]
	c.mu.Unlock()
	if ok {
		return m, nil
	}
	m, err := snapshot.ReadManifest(ctx, s.store, org, user, v)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; !ok {
		if len(c.order) >= c.max {
			delete(c.items, c.order[0])
			c.order = c.order[1:]
		}
		c.items[k] = m
		c.order = append(c.order, k)
	}
	return m, nil
}
