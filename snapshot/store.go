package snapshot

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ETag    string // opaque; changes whenever the content changes
	ModTime time.Time
}

// Store is the object storage every backend implements: a flat namespace of
// immutable-by-convention objects with create-only and compare-and-swap writes.
//
// Keys are slash-separated relative paths ("org/user/packs/ab12"). All writes
// are atomic: a reader sees either the whole old object or the whole new one.
type Store interface {
	// Get opens the whole object. A missing key returns an error matching ErrNotExist.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
	// GetRange opens length bytes starting at offset. Reading past the end of
	// the object is an error.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Put writes (or replaces) the object with size bytes read from r.
	Put(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error)
	// PutIfAbsent writes the object only if the key does not exist yet; if it
	// does, it returns an error matching ErrExist and changes nothing. Of any
	// number of concurrent callers exactly one wins.
	PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error)
	// PutIfMatch replaces the object only if its current ETag equals etag;
	// otherwise (or if it is missing) it returns an error matching
	// ErrPrecondition (or ErrNotExist) and changes nothing.
	PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (ObjectInfo, error)
	// Stat returns the object's metadata, or an error matching ErrNotExist.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix, in
	// lexical key order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// ListAfter is List restricted to the keys that sort after the key
	// after (S3 ListObjectsV2's StartAfter), so a reader that remembers
	// the last key it saw lists only what came since, whatever came
	// before. after need not exist nor start with prefix; "" lists all.
	ListAfter(ctx context.Context, prefix, after string, fn func(ObjectInfo) error) error
	// Delete removes the object. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
}

// TempSweeper is a store that keeps temporary files of its own (the local
// directory store's in-flight writes) and can remove those that writers
// killed mid-write abandoned. gc sweeps through it.
type TempSweeper interface {
	// SweepTemp removes the temporary files older than olderThan and
	// returns how many it removed.
	SweepTemp(ctx context.Context, olderThan time.Duration) (removed int, err error)
}

// AsTempSweeper finds the TempSweeper in s or in the stores it wraps (a
// wrapper for deadlines, metrics or limits exposes its store with
// Unwrap() Store).
func AsTempSweeper(s Store) (TempSweeper, bool) {
	for s != nil {
		if sw, ok := s.(TempSweeper); ok {
			return sw, true
		}
		u, ok := s.(interface{ Unwrap() Store })
		if !ok {
			break
		}
		s = u.Unwrap()
	}
	return nil, false
}

// GetBytes reads a whole object into memory. It is meant for small objects
// (manifests, settings, change sets); max bounds what it will read.
func GetBytes(ctx context.Context, s Getter, key string, max int64) ([]byte, error) {
	rc, info, err := s.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if max > 0 && info.Size > max {
		return nil, &ObjectError{Op: "read", Key: key, Err: ErrCorrupt}
	}
	n := info.Size
	if n < 0 || n > 64<<20 {
		n = 0
	}
	buf := make([]byte, 0, n)
	lr := io.Reader(rc)
	if max > 0 {
		lr = io.LimitReader(rc, max+1)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if max > 0 && int64(len(buf)) > max {
		return nil, &ObjectError{Op: "read", Key: key, Err: ErrCorrupt}
	}
	return buf, nil
}

// ValidateObjectKey applies the key rules every backend shares: a key is a
// relative slash-separated path with no empty, "." or ".." segments, no
// backslash or NUL, and a first segment that does not start with "."
// (reserved for store internals such as fsstore's .tmp directory). S3 would
// take more, but keys that work on one backend then work on every backend.
func ValidateObjectKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty key: %w", ErrInvalid)
	}
	if strings.ContainsAny(key, "\\\x00") {
		return fmt.Errorf("key %q contains a backslash or NUL: %w", key, ErrInvalid)
	}
	if key[0] == '.' {
		return fmt.Errorf("key %q starts with '.': %w", key, ErrInvalid)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("key %q has an empty, '.' or '..' segment: %w", key, ErrInvalid)
		}
	}
	return nil
}
