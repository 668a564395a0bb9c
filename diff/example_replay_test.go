package diff_test

import (
	"context"
	"fmt"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// A client edited a task offline against version 1 while the server changed
// the same task: the disjoint field merges, the field both changed is a
// conflict that the client wins, and the server's value is in the receipt.
func ExampleApply() {
	ctx := context.Background()
	s := memstore.New()
	opts := diff.DefaultApplyOptions()
	opts.Org, opts.User, opts.Secret = "acme", "alice", []byte("example-secret-0123456789")

	apply := func(body string) *diff.Result {
		p, err := diff.DecodePatch([]byte(body), opts.Limits)
		if err != nil {
			panic(err)
		}
		res, err := diff.Apply(ctx, s, opts, p)
		if err != nil {
			panic(err)
		}
		return res
	}
	apply(`{"id":"setup","base":0,"ops":[{"op":"put","key":"tasks/1","value":{"title":"call","status":"open"}}]}`)
	apply(`{"id":"server","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"doing","title":"call Bob"}}]}`)

	res := apply(`{"id":"offline-7","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"done","done_by":"alice"}}]}`)
	r := res.Receipts[0]
	fmt.Println(res.Version, r.Status, r.Fields, r.Won)
	fmt.Printf("server had %s\n", r.ServerValue)

	again := apply(`{"id":"offline-7","base":1,"ops":[{"op":"merge","key":"tasks/1","patch":{"status":"done","done_by":"alice"}}]}`)
	fmt.Println(again.Version, again.Duplicate)
	// Output:
	// 3 conflict [/status] true
	// server had {"status":"doing","title":"call Bob"}
	// 3 true
}
