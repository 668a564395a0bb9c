package server

import (
	"context"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

func TestManifestCacheBounded(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	opts := snapshot.DefaultBuildOptions()
	opts.Org, opts.Secret = "acme", []byte("s")
	recs := gen.Dataset(gen.Options{Size: 256 << 10, Seed: 1})
	for _, u := range []string{"u1", "u2", "u3", "u4", "u5"} {
		opts.User = u
		if _, _, err := diff.BuildVersion(ctx, store, opts, gen.NewSource(recs)); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{store: store, manifests: newManifestCache(100)}
	m, err := s.manifest(ctx, "acme", "u1", 1)
	if err != nil {
		t.Fatal(err)
	}
	s.manifests = newManifestCache(100)
	s.manifests.maxBytes = 4*approxSize(m) + 1 // room for four
	for _, u := range []string{"u1", "u2", "u3", "u4", "u5"} {
		if _, err := s.manifest(ctx, "acme", u, 1); err != nil {
			t.Fatal(err)
		}
	}
	c := s.manifests
	if len(c.items) != 4 || c.bytes > c.maxBytes || c.items[manifestKey{"acme", "u1", 1}] != nil {
		t.Fatalf("cache holds %d entries, %d bytes (max %d); want the four newest", len(c.items), c.bytes, c.maxBytes)
	}
	again, _ := s.manifest(ctx, "acme", "u5", 1)
	if again != c.items[manifestKey{"acme", "u5", 1}].m {
		t.Fatal("a cached manifest was read again")
	}
}
