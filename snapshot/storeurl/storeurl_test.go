package storeurl

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/snapshot/fsstore"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/s3store"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		url  string
		want Location
	}{
		{"./data", Location{Scheme: "file", Path: "./data"}},
		{"data", Location{Scheme: "file", Path: "data"}},
		{"/var/lib/deltasync", Location{Scheme: "file", Path: "/var/lib/deltasync"}},
		{"file://./data", Location{Scheme: "file", Path: "./data"}},
		{"file:///abs/path", Location{Scheme: "file", Path: "/abs/path"}},
		{"file://localhost/abs", Location{Scheme: "file", Path: "/abs"}},
		{"FILE://rel/dir", Location{Scheme: "file", Path: "rel/dir"}},
		{"mem://", Location{Scheme: "mem"}},
		{"s3://bucket/some/prefix?endpoint=127.0.0.1:7070&secure=false&region=us-east-1", Location{
			Scheme: "s3",
			S3: s3store.Options{Endpoint: "127.0.0.1:7070", Bucket: "bucket", Prefix: "some/prefix",
				Region: "us-east-1"},
		}},
		{"s3://bucket", Location{Scheme: "s3", S3: s3store.Options{
			Endpoint: "s3.amazonaws.com", Bucket: "bucket", Secure: true}}},
		{"s3://b/p/?endpoint=minio:9000&create=true", Location{Scheme: "s3", CreateBucket: true, S3: s3store.Options{
			Endpoint: "minio:9000", Bucket: "b", Prefix: "p", Secure: true}}},
		// One letter before ':' is a drive, not a scheme; "./" keeps a colon.
		{`C:\data`, Location{Scheme: "file", Path: `C:\data`}},
		{"./data:2024", Location{Scheme: "file", Path: "./data:2024"}},
	} {
		got, err := Parse(tt.url)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.url, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) =\n%+v, want\n%+v", tt.url, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct{ url, wantErr string }{
		{"", "empty"},
		{"ftp://host/x", `unknown scheme "ftp"`},
		{"gs://bucket", `unknown scheme "gs"`},
		{"file://", "no directory"},
		{"file://./data?x=1", "no query"},
		{"mem://x", "no path"},
		{"s3:///prefix?endpoint=h:1", "no bucket"},
		{"s3://b?endpoint=h:1&secure=maybe", `secure="maybe" is not a boolean`},
		{"s3://b?endpoint=h:1&create=", "exactly one non-empty value"},
		{"s3://b?endpoint=h:1&endpoint=h:2", "exactly one"},
		{"s3://b?endpoint=http://h:1", "without scheme"},
		{"s3://b?endpont=h:1", `unknown option "endpont"`},
		{"s3://key:secret@b?endpoint=h:1", "AWS_ACCESS_KEY_ID"},
		{"s3://b?endpoint=h:1&%zz", "query"},
		// A scheme with one slash or none is a mistyped URL, not a
		// relative directory named "file:" or "s3:".
		{"file:/srv/data", `scheme "file:" without "//"`},
		{"file:data", `scheme "file:" without "//"`},
		{"s3:/bucket/prefix?endpoint=h:1", `scheme "s3:" without "//"`},
		{"s3:bucket", `scheme "s3:" without "//"`},
		{"S3:/bucket", `scheme "S3:" without "//"`},
		{"mem:", `scheme "mem:" without "//"`},
		{"data:2024", "./data:2024"},
		{"file:x://y", `scheme "file:" without "//"`},
	} {
		_, err := Parse(tt.url)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Parse(%q) error = %v, want one containing %q", tt.url, err, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error leaks the secret: %v", tt.url, err)
		}
	}
}

func TestOpen(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(ctx, "file://"+dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if fs, ok := s.(*fsstore.Store); !ok || fs.Dir() != dir {
		t.Errorf("Open(file://%s) = %T %v", dir, s, s)
	}
	if s, err := Open(ctx, "mem://", Options{}); err != nil {
		t.Fatal(err)
	} else if _, ok := s.(*memstore.Store); !ok {
		t.Errorf("Open(mem://) = %T", s)
	}
	if s, err := Open(ctx, "s3://b/p?endpoint=127.0.0.1:1&secure=false", Options{AccessKey: "AK", SecretKey: "SK"}); err != nil {
		t.Fatal(err)
	} else if _, ok := s.(*s3store.Store); !ok {
		t.Errorf("Open(s3://...) = %T", s)
	}
	if _, err := Open(ctx, "nope://x", Options{}); err == nil {
		t.Error("Open(nope://x) succeeded")
	}
}

// Credentials come from Options only: a library reads no environment, and
// two stores in one process may need different credentials.
func TestOpenS3NeedsCredentialsFromOptions(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AK")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SK")
	const u = "s3://b/p?endpoint=127.0.0.1:1&secure=false"
	for _, o := range []Options{{}, {AccessKey: "AK"}, {SecretKey: "SK"}} {
		s, err := Open(t.Context(), u, o)
		if !errors.Is(err, ErrNoCredentials) {
			t.Errorf("Open(%s, %+v) = %T, %v; want ErrNoCredentials", u, o, s, err)
		} else if !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("error %q does not name the endpoint", err)
		}
	}
}

// A mistyped URL must not become a directory: nothing is created.
func TestOpenOneSlashCreatesNothing(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, u := range []string{"file:/srv/data", "file:data", "s3:/bucket"} {
		if _, err := Open(t.Context(), u, Options{}); err == nil {
			t.Errorf("Open(%q) succeeded", u)
		}
	}
	if ents, _ := filepath.Glob("*"); len(ents) != 0 {
		t.Errorf("refused URLs left %v in the working directory", ents)
	}
}
