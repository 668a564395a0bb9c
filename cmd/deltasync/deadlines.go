package main

import (
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/deadline"
)

// withDeadlines gives every store call of build and gc the default
// deadlines (see snapshot/deadline): a hung store fails the run, which can
// be run again, instead of hanging it. serve sets its own (--store-timeout).
func withDeadlines(s snapshot.Store) snapshot.Store {
	d, err := deadline.New(s, deadline.DefaultOptions())
	if err != nil {
		panic(err) // the defaults are valid
	}
	return d
}
