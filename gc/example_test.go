package gc_test

import (
	"context"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// A store with three versions of one user: keeping one version deletes the
// two older ones. The clock is moved past the grace period, as it would be
// an hour later.
func ExampleRun() {
	ctx := context.Background()
	s := memstore.New()
	secret, _ := snapshot.LoadOrCreateSecret(ctx, s)
	for i := range 3 {
		opts := snapshot.DefaultBuildOptions()
		opts.Org, opts.User, opts.Secret = "acme", "alice", secret
		var recs []gen.Record
		for k := range 100 {
			recs = append(recs, gen.Record{Key: fmt.Sprintf("tasks/%03d", k), Value: fmt.Appendf(nil, `{"rev":%d}`, i)})
		}
		if _, _, err := diff.BuildVersion(ctx, s, opts, gen.NewSource(recs)); err != nil {
			panic(err)
		}
	}

	rep, err := gc.Run(ctx, s, gc.Options{
		KeepVersions: 1,         // --keep-versions 1
		Grace:        time.Hour, // --grace 1h
		Now:          func() time.Time { return time.Now().Add(2 * time.Hour) },
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("users:", rep.UsersScanned)
	fmt.Println("versions deleted:", rep.VersionsDeleted, "kept:", rep.VersionsKept)
	head, _ := snapshot.Head(ctx, s, "acme", "alice")
	fmt.Println("head:", head)
	// Output:
	// users: 1
	// versions deleted: 2 kept: 1
	// head: 3
}
