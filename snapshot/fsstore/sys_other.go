//go:build !unix

package fsstore

import (
	"fmt"
	"io/fs"
)

// etag falls back to size and mtime where there are no inode numbers.
func etag(fi fs.FileInfo) string {
	return fmt.Sprintf("%x-%x", fi.Size(), fi.ModTime().UnixNano())
}

// syncDir is a no-op: directories cannot be fsynced on these systems.
func syncDir(string) error { return nil }

// lockFileAt only relies on the in-process mutex: cross-process locking is
// not implemented outside Unix.
func lockFileAt(string) (func(), error) { return func() {}, nil }
