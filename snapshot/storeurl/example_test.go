package storeurl_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storeurl"
)

// A version is claimed with a create-only write; the loser of a race sees
// ErrExist and re-reads the head.
func ExampleOpen() {
	ctx := context.Background()
	s, err := storeurl.Open(ctx, "mem://", storeurl.Options{}) // or "file://./data", "s3://bucket/prefix?endpoint=..."
	if err != nil {
		panic(err)
	}
	key := snapshot.ManifestKey("acme", "alice", 1)
	for _, who := range []string{"replica-a", "replica-b"} {
		_, err := s.PutIfAbsent(ctx, key, strings.NewReader(who), int64(len(who)))
		switch {
		case err == nil:
			fmt.Println(who, "created version 1")
		case errors.Is(err, snapshot.ErrExist):
			fmt.Println(who, "lost the race")
		default:
			panic(err)
		}
	}
	// Output:
	// replica-a created version 1
	// replica-b lost the race
}
