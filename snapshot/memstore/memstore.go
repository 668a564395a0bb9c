// Package memstore is an in-memory snapshot.Store for unit tests of code
// above the Store interface. It follows the same contract as the durable
// backends (it passes the same conformance suite), including key rules, so
// code tested against it behaves the same on a directory or a bucket.
package memstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// Store keeps objects in a map. It is safe for concurrent use.
type Store struct {
	mu      sync.Mutex
	objects map[string]object
	gen     uint64 // bumped on every write; the ETag of an object is its generation
}

type object struct {
	data    []byte
	etag    string
	modTime time.Time
}

var _ snapshot.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store { return &Store{objects: make(map[string]object)} }

func (o object) info(key string) snapshot.ObjectInfo {
	return snapshot.ObjectInfo{Key: key, Size: int64(len(o.data)), ETag: o.etag, ModTime: o.modTime}
}

func notExist(op, key string) error {
	return &snapshot.ObjectError{Op: op, Key: key, Err: snapshot.ErrNotExist}
}

// Get implements snapshot.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
	if err := check(ctx, "get", key); err != nil {
		return nil, snapshot.ObjectInfo{}, err
	}
	s.mu.Lock()
	o, ok := s.objects[key]
	s.mu.Unlock()
	if !ok {
		return nil, snapshot.ObjectInfo{}, notExist("get", key)
	}
	// Stored slices are never modified in place, so handing out a reader
	// over them without copying is safe.
	return io.NopCloser(bytes.NewReader(o.data)), o.info(key), nil
}

// GetRange implements snapshot.Store.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := check(ctx, "get range", key); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, &snapshot.ObjectError{Op: "get range", Key: key,
			Err: fmt.Errorf("negative range %d+%d: %w", offset, length, snapshot.ErrInvalid)}
	}
	s.mu.Lock()
	o, ok := s.objects[key]
	s.mu.Unlock()
	if !ok {
		return nil, notExist("get range", key)
	}
	size := int64(len(o.data))
	if offset > size || length > size-offset {
		return nil, &snapshot.ObjectError{Op: "get range", Key: key,
			Err: fmt.Errorf("range %d+%d past end of %d-byte object: %w", offset, length, size, snapshot.ErrInvalid)}
	}
	return io.NopCloser(bytes.NewReader(o.data[offset : offset+length])), nil
}

// readAll reads exactly size bytes from r.
func readAll(ctx context.Context, op, key string, r io.Reader, size int64) ([]byte, error) {
	if size < 0 {
		return nil, &snapshot.ObjectError{Op: op, Key: key, Err: fmt.Errorf("negative size %d: %w", size, snapshot.ErrInvalid)}
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, &snapshot.ObjectError{Op: op, Key: key, Err: fmt.Errorf("read %d bytes: %w", size, err)}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return buf, nil
}

// store saves data under key; the caller holds s.mu.
func (s *Store) store(key string, data []byte) snapshot.ObjectInfo {
	s.gen++
	o := object{data: data, etag: "m" + strconv.FormatUint(s.gen, 10), modTime: time.Now()}
	s.objects[key] = o
	return o.info(key)
}

// Put implements snapshot.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	if err := check(ctx, "put", key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	data, err := readAll(ctx, "put", key, r, size)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.store(key, data), nil
}

// PutIfAbsent implements snapshot.Store.
func (s *Store) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	if err := check(ctx, "put if absent", key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	data, err := readAll(ctx, "put if absent", key, r, size)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objects[key]; ok {
		return snapshot.ObjectInfo{}, &snapshot.ObjectError{Op: "put if absent", Key: key, Err: snapshot.ErrExist}
	}
	return s.store(key, data), nil
}

// PutIfMatch implements snapshot.Store.
func (s *Store) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (snapshot.ObjectInfo, error) {
	if err := check(ctx, "put if match", key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	data, err := readAll(ctx, "put if match", key, r, size)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[key]
	if !ok {
		return snapshot.ObjectInfo{}, notExist("put if match", key)
	}
	if o.etag != etag {
		return snapshot.ObjectInfo{}, &snapshot.ObjectError{Op: "put if match", Key: key,
			Err: fmt.Errorf("etag is %q, not %q: %w", o.etag, etag, snapshot.ErrPrecondition)}
	}
	return s.store(key, data), nil
}

// Stat implements snapshot.Store.
func (s *Store) Stat(ctx context.Context, key string) (snapshot.ObjectInfo, error) {
	if err := check(ctx, "stat", key); err != nil {
		return snapshot.ObjectInfo{}, err
	}
	s.mu.Lock()
	o, ok := s.objects[key]
	s.mu.Unlock()
	if !ok {
		return snapshot.ObjectInfo{}, notExist("stat", key)
	}
	return o.info(key), nil
}

// List implements snapshot.Store. It works on a snapshot of the matching
// keys, so fn may call back into the store.
func (s *Store) List(ctx context.Context, prefix string, fn func(snapshot.ObjectInfo) error) error {
	return s.ListAfter(ctx, prefix, "", fn)
}

// ListAfter implements snapshot.Store.
func (s *Store) ListAfter(ctx context.Context, prefix, after string, fn func(snapshot.ObjectInfo) error) error {
	s.mu.Lock()
	infos := make([]snapshot.ObjectInfo, 0, len(s.objects))
	for k, o := range s.objects {
		if strings.HasPrefix(k, prefix) && k > after {
			infos = append(infos, o.info(k))
		}
	}
	s.mu.Unlock()
	sort.Slice(infos, func(i, j int) bool { return infos[i].Key < infos[j].Key })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements snapshot.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := check(ctx, "delete", key); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.objects, key)
	s.mu.Unlock()
	return nil
}

func check(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validKey(key); err != nil {
		return &snapshot.ObjectError{Op: op, Key: key, Err: err}
	}
	return nil
}

// validKey applies the key rules every backend shares.
func validKey(key string) error { return snapshot.ValidateObjectKey(key) }
