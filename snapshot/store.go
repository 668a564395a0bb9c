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
// It is the composition of the roles (roles.go) with the one write no role
// names, a blind Put.
//
// Keys are slash-separated relative paths ("org/user/packs/ab12"). All writes
// are atomic: a reader sees either the whole old object or the whole new one.
type Store interface {
	ReadStore // Get, GetRange, List, ListAfter, Stat
	Creator   // PutIfAbsent
	Swapper   // PutIfMatch
	Deleter   // Delete
	// Put writes (or replaces) the object with size bytes read from r.
	Put(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error)
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
// Unwrap() Store). It asks for the least role every store plays, so gc,
// which holds a store it may only read and delete in, can ask too.
func AsTempSweeper(s ReadStore) (TempSweeper, bool) {
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
