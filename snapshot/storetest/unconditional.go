package storetest

import (
	"context"
	"io"

	"github.com/deltasync/deltasync/snapshot"
)

// Unconditional wraps s in a store that accepts conditional writes and
// ignores the conditions, like an S3 server that takes If-None-Match and
// If-Match and does not enforce them: with createOnly PutIfAbsent is a
// plain Put, with compareAndSwap PutIfMatch is. It is the negative case of
// the start-up probe (snapshot.ProbeConditionalWrites): with it two
// writers both "create" one version, and one is lost.
func Unconditional(s snapshot.Store, createOnly, compareAndSwap bool) *Faults {
	f := Wrap(s)
	if createOnly {
		f.PutIfAbsentFunc = s.Put
	}
	if compareAndSwap {
		f.PutIfMatchFunc = func(ctx context.Context, key string, r io.Reader, size int64, _ string) (snapshot.ObjectInfo, error) {
			return s.Put(ctx, key, r, size)
		}
	}
	return f
}

// IgnoreConditions wraps s so that both PutIfAbsent and PutIfMatch just Put.
func IgnoreConditions(s snapshot.Store) *Faults { return Unconditional(s, true, true) }
