package snapshot

import (
	"context"
	"io"
)

// Role interfaces: what a function that needs less than a whole Store asks
// for, so its signature says what it may do to the store (after restic's
// Lister and desync's read-only store). Every Store is each of them.

// Getter reads objects, whole or by range.
type Getter interface {
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// Lister lists objects by key prefix.
type Lister interface {
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
}

// ReadStore reads a store and changes nothing in it.
type ReadStore interface {
	Getter
	Lister
	Stat(ctx context.Context, key string) (ObjectInfo, error)
}

// Creator writes objects create-only: it can add an object, never change
// or remove one.
type Creator interface {
	PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error)
}

var (
	_ ReadStore = Store(nil)
	_ Creator   = Store(nil)
)
