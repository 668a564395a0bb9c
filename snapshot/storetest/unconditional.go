package storetest

import (
	"context"
	"io"

	"github.com/deltasync/deltasync/snapshot"
)

// Unconditional is a store that accepts conditional writes and ignores the
// conditions, like an S3 server that takes If-None-Match and If-Match and
// does not enforce them. It is the negative case of the start-up probe
// (snapshot.ProbeConditionalWrites): with it two writers both "create" one
// version, and one is lost.
type Unconditional struct {
	snapshot.Store
	// CreateOnly makes PutIfAbsent a plain Put.
	CreateOnly bool
	// CompareAndSwap makes PutIfMatch a plain Put.
	CompareAndSwap bool
}

var _ snapshot.Store = (*Unconditional)(nil)

// IgnoreConditions wraps s so that both PutIfAbsent and PutIfMatch just Put.
func IgnoreConditions(s snapshot.Store) *Unconditional {
	return &Unconditional{Store: s, CreateOnly: true, CompareAndSwap: true}
}

// PutIfAbsent implements snapshot.Store.
func (u *Unconditional) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	if u.CreateOnly {
		return u.Store.Put(ctx, key, r, size)
	}
	return u.Store.PutIfAbsent(ctx, key, r, size)
}

// PutIfMatch implements snapshot.Store.
func (u *Unconditional) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (snapshot.ObjectInfo, error) {
	if u.CompareAndSwap {
		return u.Store.Put(ctx, key, r, size)
	}
	return u.Store.PutIfMatch(ctx, key, r, size, etag)
}
