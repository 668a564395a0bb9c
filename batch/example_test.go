package batch_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/deltasync/deltasync/batch"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// Building the same data set twice creates one version: the second build
// finds it equal to the head and writes nothing.
func ExampleBuildUser() {
	ctx := context.Background()
	store := memstore.New() // storeurl.Open(ctx, "file://./data") in a real program
	input := `{"key":"tasks/2","value":{"title":"Ship","done":false}}
{"key":"tasks/1","value":{"title":"Plan","done":true}}
`
	opts := batch.UserOptions{Org: "acme", User: "alice"}
	for range 2 {
		res, err := batch.BuildUser(ctx, store, opts, strings.NewReader(input))
		if err != nil {
			panic(err)
		}
		fmt.Printf("version %d created=%v records=%d\n", res.Version, res.Created, res.Records)
	}
	_, err := batch.BuildUser(ctx, store, opts, strings.NewReader(input+"{\"key\":\"tasks/3\"}\n"))
	fmt.Println(err)
	// Output:
	// version 1 created=true records=2
	// version 1 created=false records=2
	// line 3: record "tasks/3": missing "value": invalid input
}
