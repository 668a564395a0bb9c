// Package storeurl opens a snapshot.Store from a URL, choosing the backend
// by scheme with an explicit switch (no registration from init):
//
//	./data, /abs/path              a local directory (fsstore)
//	file://./data, file:///abs     the same, as a URL
//	s3://bucket/prefix?endpoint=127.0.0.1:7070&secure=false&region=us-east-1
//	                               S3-compatible storage (s3store); the
//	                               credentials come from Options (cmd reads
//	                               them from AWS_ACCESS_KEY_ID and
//	                               AWS_SECRET_ACCESS_KEY); create=true creates
//	                               the bucket if it is missing
//	mem://                         a fresh in-memory store (memstore), for tests
//
// A scheme with one slash or none ("file:/srv/data", "s3:/bucket") is refused
// rather than taken as a relative directory of that odd name: an operator who
// typed it meant a URL. This package reads no environment: what a URL does
// not say (the credentials) comes in Options, so each store may have its own.
package storeurl

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/s3store"
)

// Location is a parsed store URL.
type Location struct {
	Scheme string // "file", "s3" or "mem"
	// Path is the directory of a file store, as given (relative or absolute).
	Path string
	// S3 configures an s3 store. Parse leaves the credentials empty; Open
	// fills them from Options.
	S3 s3store.Options
	// CreateBucket asks Open to create a missing bucket (s3 only).
	CreateBucket bool
}

// Options are what a store URL does not carry.
type Options struct {
	// AccessKey and SecretKey authenticate to an s3:// store. Both are
	// required for s3://; other schemes ignore them.
	AccessKey, SecretKey string
}

// ErrNoCredentials reports an s3:// store opened without an access key or
// secret key.
var ErrNoCredentials = errors.New("no S3 credentials")

// oneSlash matches a URL scheme not followed by "//": "file:/x", "s3:bucket".
// One letter is left alone (a Windows drive, "C:\data").
var oneSlash = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]+):`)

// Parse parses a store URL without opening the store.
func Parse(rawURL string) (Location, error) {
	if rawURL == "" {
		return Location{}, fmt.Errorf("store URL is empty")
	}
	i := strings.Index(rawURL, "://")
	if m := oneSlash.FindStringSubmatch(rawURL); m != nil && (i < 0 || i > len(m[1])) {
		return Location{}, fmt.Errorf("store URL %q: scheme %q without \"//\" (write file:///abs/dir, file://./rel/dir or s3://bucket/prefix?endpoint=host:port; "+
			"a directory whose name contains ':' is written ./%s)", rawURL, m[1]+":", rawURL)
	}
	if i < 0 {
		return Location{Scheme: "file", Path: rawURL}, nil
	}
	switch scheme := strings.ToLower(rawURL[:i]); scheme {
	case "file":
		return parseFile(rawURL, rawURL[i+len("://"):])
	case "s3":
		return parseS3(rawURL)
	case "mem":
		if rest := rawURL[i+len("://"):]; rest != "" {
			return Location{}, fmt.Errorf("store URL %q: mem:// takes no path or options", rawURL)
		}
		return Location{Scheme: "mem"}, nil
	default:
		return Location{}, fmt.Errorf("store URL %q: unknown scheme %q (want file, s3 or mem)", rawURL, scheme)
	}
}

// parseFile takes the path after "file://" literally, so that both
// file://./data (relative) and file:///abs/path work; net/url would read
// "." as a host name.
func parseFile(rawURL, path string) (Location, error) {
	if strings.ContainsAny(path, "?#") {
		return Location{}, fmt.Errorf("store URL %q: file URLs take no query or fragment", rawURL)
	}
	if rest, ok := strings.CutPrefix(path, "localhost/"); ok {
		path = "/" + rest
	}
	if path == "" {
		return Location{}, fmt.Errorf("store URL %q: no directory", rawURL)
	}
	return Location{Scheme: "file", Path: path}, nil
}

func parseS3(rawURL string) (Location, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return Location{}, fmt.Errorf("store URL: %w", err)
	}
	if u.User != nil {
		// A URL ends up in logs and process listings; credentials must not.
		return Location{}, fmt.Errorf("store URL %q: put credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL", u.Redacted())
	}
	if u.Host == "" {
		return Location{}, fmt.Errorf("store URL %q: no bucket (want s3://bucket/prefix?endpoint=host:port)", rawURL)
	}
	if u.Fragment != "" {
		return Location{}, fmt.Errorf("store URL %q: unexpected fragment", rawURL)
	}
	loc := Location{Scheme: "s3", S3: s3store.Options{
		Endpoint: "s3.amazonaws.com",
		Bucket:   u.Host,
		Prefix:   strings.Trim(u.Path, "/"),
		Secure:   true,
	}}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Location{}, fmt.Errorf("store URL %q: query: %w", rawURL, err)
	}
	for name, vals := range q {
		if len(vals) != 1 || vals[0] == "" {
			return Location{}, fmt.Errorf("store URL %q: option %s needs exactly one non-empty value", rawURL, name)
		}
		v := vals[0]
		switch name {
		case "endpoint":
			if strings.Contains(v, "/") {
				return Location{}, fmt.Errorf("store URL %q: endpoint %q must be host[:port], without scheme (use secure=false for http)", rawURL, v)
			}
			loc.S3.Endpoint = v
		case "region":
			loc.S3.Region = v
		case "secure", "create":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Location{}, fmt.Errorf("store URL %q: %s=%q is not a boolean", rawURL, name, v)
			}
			if name == "secure" {
				loc.S3.Secure = b
			} else {
				loc.CreateBucket = b
			}
		default:
			return Location{}, fmt.Errorf("store URL %q: unknown option %q (want endpoint, secure, region or create)", rawURL, name)
		}
	}
	return loc, nil
}

// Open parses rawURL and opens the store it names. An s3:// store needs both
// credentials in opts (an error matching ErrNoCredentials otherwise); it is
// not contacted unless create=true asks for the bucket.
func Open(ctx context.Context, rawURL string, opts Options) (snapshot.Store, error) {
	loc, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	switch loc.Scheme {
	case "file":
		return fsstore.New(loc.Path)
	case "mem":
		return memstore.New(), nil
	case "s3":
		if opts.AccessKey == "" || opts.SecretKey == "" {
			return nil, fmt.Errorf("store %s (endpoint %s): %w", Redact(rawURL), loc.S3.Endpoint, ErrNoCredentials)
		}
		loc.S3.AccessKey, loc.S3.SecretKey = opts.AccessKey, opts.SecretKey
		s, err := s3store.New(ctx, loc.S3)
		if err != nil {
			return nil, err
		}
		if loc.CreateBucket {
			if err := s.EnsureBucket(ctx); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
	panic("storeurl: unhandled scheme " + loc.Scheme) // Parse returns only the schemes above
}

// Redact returns a store URL fit for logs and errors: a password in it (which
// Parse refuses, but an operator may still have typed) is replaced by "xxxxx".
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	return u.Redacted()
}
