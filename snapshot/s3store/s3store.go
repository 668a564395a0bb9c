// Package s3store is the snapshot.Store over S3-compatible object storage
// (AWS S3, MinIO, versitygw) through minio-go. It is the only package that
// imports minio-go; errors are translated to the snapshot sentinels here.
//
// Create-only writes send If-None-Match: * and compare-and-swap sends
// If-Match. minio-go drops those headers from CompleteMultipartUpload, so
// conditional writes always go as one PUT (DisableMultipart), whatever the
// size; plain Puts of big objects may use multipart.
//
// minio-go retries failed requests itself; this package adds no retry loop.
//
// Notes on servers: a range that starts inside an object but ends past it
// is answered with the bytes that exist (206), so GetRange compares the
// length it got; ETags come back quoted and are unquoted here; the
// ObjectInfo a write returns has a zero ModTime (S3 does not report one on
// PUT; Stat has it). versitygw's posix backend, like fsstore, cannot hold
// both "a" and "a/b".
package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/deltasync/deltasync/snapshot"
)

// Options configure a Store.
type Options struct {
	Endpoint  string // host[:port], without scheme
	Bucket    string
	Prefix    string // key prefix inside the bucket, with or without a trailing "/"
	Secure    bool   // use HTTPS
	Region    string
	AccessKey string
	SecretKey string
}

// Store is a snapshot.Store in one bucket, below an optional prefix. It is
// safe for concurrent use.
type Store struct {
	client *minio.Client
	core   minio.Core // the same client, for GETs that return the response headers
	bucket string
	prefix string // "" or ends with "/"
}

var _ snapshot.Store = (*Store)(nil)

// New creates a Store. It does not contact the server; see EnsureBucket.
func New(ctx context.Context, opts Options) (*Store, error) {
	if opts.Endpoint == "" {
		return nil, errors.New("s3store: no endpoint")
	}
	if opts.Bucket == "" {
		return nil, errors.New("s3store: no bucket")
	}
	prefix := strings.Trim(opts.Prefix, "/")
	if prefix != "" {
		if err := validKey(prefix); err != nil {
			return nil, fmt.Errorf("s3store: prefix: %w", err)
		}
		prefix += "/"
	}
	client, err := minio.New(opts.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(opts.AccessKey, opts.SecretKey, ""),
		Secure: opts.Secure,
		Region: opts.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("s3store: %w", err)
	}
	return &Store{client: client, core: minio.Core{Client: client}, bucket: opts.Bucket, prefix: prefix}, nil
}

// EnsureBucket creates the bucket if it does not exist.
func (s *Store) EnsureBucket(ctx context.Context) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("s3store: bucket %s: %w", s.bucket, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{})
	if err != nil {
		// Another process may have created it in between.
		switch minio.ToErrorResponse(err).Code {
		case "BucketAlreadyOwnedByYou", "BucketAlreadyExists":
			return nil
		}
		return fmt.Errorf("s3store: create bucket %s: %w", s.bucket, err)
	}
	return nil
}

// RemoveAll deletes every object whose key starts with prefix, in batches
// (one request per 1,000 keys). Tests use it to clean up.
func (s *Store) RemoveAll(ctx context.Context, prefix string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objects := s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true})
	var listErr error
	keys := func(yield func(minio.ObjectInfo) bool) {
		for obj := range objects {
			if obj.Err != nil {
				listErr = obj.Err
				return
			}
			if !yield(obj) {
				return
			}
		}
	}
	results, err := s.client.RemoveObjectsWithIter(ctx, s.bucket, keys, minio.RemoveObjectsOptions{})
	if err != nil {
		return fmt.Errorf("s3store: remove %q: %w", prefix, err)
	}
	for r := range results {
		if r.Err != nil && err == nil {
			err = fmt.Errorf("s3store: remove %s: %w", r.ObjectName, r.Err)
		}
	}
	if listErr != nil {
		return fmt.Errorf("s3store: list %q: %w", prefix, listErr)
	}
	return err
}

func (s *Store) object(op, key string) (string, error) {
	if err := validKey(key); err != nil {
		return "", &snapshot.ObjectError{Op: op, Key: key, Err: err}
	}
	return s.prefix + key, nil
}

// Condition kinds for translate: what a failed precondition means.
const (
	plain = iota
	createOnly
	compareAndSwap
)

// translate maps an S3 error onto the snapshot sentinels, keeping the
// original error in the chain.
func translate(op, key string, err error, cond int) error {
	resp := minio.ToErrorResponse(err)
	var sentinel error
	switch resp.Code {
	case "NoSuchKey", "NoSuchBucket", "NotFound":
		sentinel = snapshot.ErrNotExist
	case "InvalidRange":
		sentinel = snapshot.ErrInvalid
	case "PreconditionFailed", "ConditionalRequestConflict":
		// 412 is a lost condition. 409 ConditionalRequestConflict (AWS, when
		// another conditional write to the key is in flight) means the same
		// for our callers: someone else is writing the key, re-read it.
		switch cond {
		case createOnly:
			sentinel = snapshot.ErrExist
		case compareAndSwap:
			sentinel = snapshot.ErrPrecondition
		}
	}
	if sentinel == nil && resp.Code == "" && resp.StatusCode == http.StatusNotFound {
		sentinel = snapshot.ErrNotExist
	}
	if sentinel != nil {
		err = fmt.Errorf("%w: %w", sentinel, err)
	}
	return &snapshot.ObjectError{Op: op, Key: key, Err: err}
}

func normETag(etag string) string { return strings.Trim(etag, `"`) }

func (s *Store) info(key string, o minio.ObjectInfo) snapshot.ObjectInfo {
	return snapshot.ObjectInfo{Key: key, Size: o.Size, ETag: normETag(o.ETag), ModTime: o.LastModified}
}

// exactReader turns a body that ends early into io.ErrUnexpectedEOF, so a
// connection cut mid-object is never mistaken for a shorter object.
type exactReader struct {
	rc   io.ReadCloser
	left int64
}

func (r *exactReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= int64(n)
	if err == io.EOF {
		if r.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		if n > 0 {
			err = nil
		}
	}
	return n, err
}

func (r *exactReader) Close() error { return r.rc.Close() }

// Get implements snapshot.Store.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, snapshot.ObjectInfo, error) {
	name, err := s.object("get", key)
	if err != nil {
		return nil, snapshot.ObjectInfo{}, err
	}
	body, oi, _, err := s.core.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, snapshot.ObjectInfo{}, translate("get", key, err, plain)
	}
	info := s.info(key, oi)
	return &exactReader{rc: body, left: info.Size}, info, nil
}

// GetRange implements snapshot.Store.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	const op = "get range"
	name, err := s.object(op, key)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, &snapshot.ObjectError{Op: op, Key: key, Err: fmt.Errorf("negative range %d+%d: %w", offset, length, snapshot.ErrInvalid)}
	}
	pastEnd := func(size int64) error {
		return &snapshot.ObjectError{Op: op, Key: key,
			Err: fmt.Errorf("range %d+%d past end of %d-byte object: %w", offset, length, size, snapshot.ErrInvalid)}
	}
	if length == 0 {
		// HTTP cannot ask for zero bytes; check the bounds with a HEAD.
		oi, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
		if err != nil {
			return nil, translate(op, key, err, plain)
		}
		if offset > oi.Size {
			return nil, pastEnd(oi.Size)
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(offset, offset+length-1); err != nil {
		return nil, &snapshot.ObjectError{Op: op, Key: key, Err: err}
	}
	body, oi, hdr, err := s.core.GetObject(ctx, s.bucket, name, opts)
	if err != nil {
		// A range that starts past the end is 416 InvalidRange.
		return nil, translate(op, key, err, plain)
	}
	// A range that starts inside the object but ends past it is answered
	// with the bytes that exist (206, shorter Content-Length): S3 semantics.
	if oi.Size != length {
		body.Close()
		return nil, pastEnd(totalSize(hdr.Get("Content-Range"), oi.Size))
	}
	return &exactReader{rc: body, left: length}, nil
}

// totalSize extracts the object size from "bytes a-b/total".
func totalSize(contentRange string, fallback int64) int64 {
	i := strings.LastIndexByte(contentRange, '/')
	if i < 0 {
		return fallback
	}
	n, err := strconv.ParseInt(contentRange[i+1:], 10, 64)
	if err != nil {
		return fallback
	}
	return n
}

func (s *Store) put(ctx context.Context, op, key string, r io.Reader, size int64, opts minio.PutObjectOptions, cond int) (snapshot.ObjectInfo, error) {
	name, err := s.object(op, key)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	if size < 0 {
		return snapshot.ObjectInfo{}, &snapshot.ObjectError{Op: op, Key: key, Err: fmt.Errorf("negative size %d: %w", size, snapshot.ErrInvalid)}
	}
	// A reader that runs dry before size bytes must fail the upload rather
	// than let a short object through.
	cr := &countingReader{r: r}
	ui, err := s.client.PutObject(ctx, s.bucket, name, cr, size, opts)
	if err != nil {
		return snapshot.ObjectInfo{}, translate(op, key, err, cond)
	}
	if ui.Size != size || cr.n < size {
		// Not expected (the request would have failed), but a short object
		// must not pass silently.
		return snapshot.ObjectInfo{}, &snapshot.ObjectError{Op: op, Key: key,
			Err: fmt.Errorf("stored %d of %d bytes: %w", ui.Size, size, io.ErrUnexpectedEOF)}
	}
	return snapshot.ObjectInfo{Key: key, Size: ui.Size, ETag: normETag(ui.ETag), ModTime: ui.LastModified}, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Put implements snapshot.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	return s.put(ctx, "put", key, r, size, minio.PutObjectOptions{}, plain)
}

// PutIfAbsent implements snapshot.Store.
func (s *Store) PutIfAbsent(ctx context.Context, key string, r io.Reader, size int64) (snapshot.ObjectInfo, error) {
	if size >= earlyAnswerSize {
		// A server may refuse an existing key as soon as it has the
		// headers and close the connection while a big body is still
		// being sent (versitygw does): the client then sees a reset, not
		// the 412. Asking first turns the common case into a clean
		// ErrExist; the conditional PUT still decides any race.
		if _, err := s.Stat(ctx, key); err == nil {
			return snapshot.ObjectInfo{}, &snapshot.ObjectError{Op: "put if absent", Key: key, Err: snapshot.ErrExist}
		} else if !errors.Is(err, snapshot.ErrNotExist) {
			return snapshot.ObjectInfo{}, err
		}
	}
	opts := minio.PutObjectOptions{DisableMultipart: true}
	opts.SetMatchETagExcept("*")
	return s.put(ctx, "put if absent", key, r, size, opts, createOnly)
}

// earlyAnswerSize is the body size from which PutIfAbsent checks for an
// existing key before sending the body.
const earlyAnswerSize = 1 << 20

// PutIfMatch implements snapshot.Store.
func (s *Store) PutIfMatch(ctx context.Context, key string, r io.Reader, size int64, etag string) (snapshot.ObjectInfo, error) {
	if etag == "*" {
		// On the wire "*" would turn the swap into "exists at all"; as an
		// ETag it matches no object.
		if _, err := s.Stat(ctx, key); err != nil {
			return snapshot.ObjectInfo{}, err
		}
		return snapshot.ObjectInfo{}, &snapshot.ObjectError{Op: "put if match", Key: key,
			Err: fmt.Errorf("etag %q: %w", etag, snapshot.ErrPrecondition)}
	}
	opts := minio.PutObjectOptions{DisableMultipart: true}
	opts.SetMatchETag(etag)
	return s.put(ctx, "put if match", key, r, size, opts, compareAndSwap)
}

// Stat implements snapshot.Store.
func (s *Store) Stat(ctx context.Context, key string) (snapshot.ObjectInfo, error) {
	name, err := s.object("stat", key)
	if err != nil {
		return snapshot.ObjectInfo{}, err
	}
	oi, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		return snapshot.ObjectInfo{}, translate("stat", key, err, plain)
	}
	return s.info(key, oi), nil
}

// List implements snapshot.Store. minio-go pages through the listing
// (1,000 keys a request); S3 lists in lexical key order.
func (s *Store) List(ctx context.Context, prefix string, fn func(snapshot.ObjectInfo) error) error {
	return s.ListAfter(ctx, prefix, "", fn)
}

// ListAfter implements snapshot.Store with ListObjectsV2's StartAfter: the
// server skips the keys up to after, so their pages are never sent.
func (s *Store) ListAfter(ctx context.Context, prefix, after string, fn func(snapshot.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	opts := minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}
	if after != "" {
		opts.StartAfter = s.prefix + after
	}
	// Cancelling stops minio-go's paging when fn fails.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for obj := range s.client.ListObjectsIter(lctx, s.bucket, opts) {
		if obj.Err != nil {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fmt.Errorf("list %q: %w", prefix, translate("list", prefix, obj.Err, plain))
		}
		if strings.HasSuffix(obj.Key, "/") {
			continue // a directory marker, not an object
		}
		if err := fn(s.info(strings.TrimPrefix(obj.Key, s.prefix), obj)); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Delete implements snapshot.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := s.object("delete", key)
	if err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{}); err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil
		}
		return translate("delete", key, err, plain)
	}
	return nil
}

// validKey applies the key rules every backend shares.
func validKey(key string) error { return snapshot.ValidateObjectKey(key) }
