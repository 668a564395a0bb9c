package gen_test

import (
	"fmt"
	"os"

	"github.com/deltasync/deltasync/internal/gen"
)

func ExampleEach() {
	n := 0
	_ = gen.Each(gen.Options{Size: 4 << 10, Seed: 1}, func(r gen.Record) error {
		if n < 3 {
			fmt.Println(r.Key)
		}
		n++
		return nil
	})
	// Output:
	// users/u0000001
	// users/u0000002
	// users/u0000003
}

func ExampleGenerate() {
	st, err := gen.Generate(os.Stdout, gen.Options{Size: 600, Seed: 1})
	if err != nil {
		fmt.Println(err)
	}
	_ = st
}

func ExampleScenarios() {
	base := gen.Dataset(gen.Options{Size: 2 << 20, Seed: 1})
	for _, sc := range gen.Scenarios(1) {
		next := sc.Apply(base)
		fmt.Printf("%s: %d → %d records\n", sc.Name, len(base), len(next))
	}
}
