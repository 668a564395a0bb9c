package snapshot

import (
	"errors"
	"fmt"
)

// Sentinel errors classify conditions; match them with errors.Is.
var (
	// ErrNotExist reports that an object, version or record does not exist.
	ErrNotExist = errors.New("does not exist")
	// ErrExist reports that a create-only write lost: the object already exists.
	ErrExist = errors.New("already exists")
	// ErrPrecondition reports that a compare-and-swap write saw a different ETag.
	ErrPrecondition = errors.New("precondition failed")
	// ErrCorrupt reports data that fails verification: bad magic, checksum,
	// hash mismatch, truncated or malformed encoding.
	ErrCorrupt = errors.New("corrupt data")
	// ErrUnsupportedVersion reports a manifest or stream written in a format
	// version this build does not understand.
	ErrUnsupportedVersion = errors.New("unsupported format version")
	// ErrInvalid reports input that breaks the data model rules (bad key,
	// oversize value, duplicate key, malformed JSON).
	ErrInvalid = errors.New("invalid input")
	// ErrUnavailable reports a store that did not answer in time (see
	// snapshot/deadline). A write that fails so may still take effect
	// later, as with any request lost on a network.
	ErrUnavailable = errors.New("store unavailable")
)

// ObjectError names the store object an error concerns.
type ObjectError struct {
	Op  string // "read manifest", "read pack", ...
	Key string // object key in the store
	Err error
}

func (e *ObjectError) Error() string { return fmt.Sprintf("%s %s: %v", e.Op, e.Key, e.Err) }
func (e *ObjectError) Unwrap() error { return e.Err }

// ChunkError names the chunk an error concerns.
type ChunkError struct {
	Op  string
	ID  ChunkID
	Err error
}

func (e *ChunkError) Error() string { return fmt.Sprintf("%s chunk %s: %v", e.Op, e.ID, e.Err) }
func (e *ChunkError) Unwrap() error { return e.Err }

// LineError names the input line an error concerns.
type LineError struct {
	Line int64
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }
