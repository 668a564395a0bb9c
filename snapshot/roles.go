package snapshot

import (
	"context"
	"io"
)

// Role interfaces: what a function that needs less than a whole Store asks
// for, so its signature says what it may do to the store (after restic's
// Lister and desync's read-only and write stores). Store is their
// composition, so every Store plays each of them.

// Getter reads objects, whole or by range.
type Getter interface {
	// Get opens the whole object. A missing key returns an error matching ErrNotExist.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// GetRange opens length bytes starting at offset. Reading past the end of
	// the object is an error.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// Lister lists objects by key prefix.
type Lister interface {
	// List calls fn for every object whose key starts with prefix, in
	// lexical key order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// ListAfter is List restricted to the keys that sort after the key
	// after (S3 ListObjectsV2's StartAfter), so a reader that remembers
	// the last key it saw lists only what came since, whatever came
	// before. after need not exist nor start with prefix; "" lists all.
	ListAfter(ctx context.Context, prefix, after string, fn func(ObjectInfo) error) error
}

// ReadStore reads a store and changes nothing in it.
type ReadStore interface {
	Getter
	Lister
	// Stat returns the object's metadata, or an error matching ErrNotExist.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
}

// Creator writes objects create-only: it can add an object, never change
// or remove one.
type Creator interface {
	// PutIfAbsent writes the object only if the key does not exist yet; if it
	// does, it returns an error matching ErrExist and changes nothing. Of any
	// number of concurrent callers exactly one wins.
	PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error)
}

// Swapper replaces objects by compare-and-swap: only an object that has not
// changed since its reader saw it.
type Swapper interface {
	// PutIfMatch replaces the object only if its current ETag equals etag;
	// otherwise (or if it is missing) it returns an error matching
	// ErrPrecondition (or ErrNotExist) and changes nothing.
	PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (ObjectInfo, error)
}

// Deleter removes objects.
type Deleter interface {
	// Delete removes the object. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// CreateStore reads a store and adds objects to it create-only: it never
// replaces nor removes one. A build writes its packs through it.
type CreateStore interface {
	ReadStore
	Creator
}
