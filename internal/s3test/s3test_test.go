package s3test

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseServers(t *testing.T) {
	got, err := ParseServers(`versitygw=s3://deltasync-test?endpoint=127.0.0.1:7070&secure=false
		minio=s3://mk:m%2Fsecret@deltasync-test/base?endpoint=127.0.0.1:9000&secure=false&create=true`, "AK", "SK")
	if err != nil {
		t.Fatal(err)
	}
	want := []Server{
		{Name: "versitygw", BaseURL: "s3://deltasync-test?endpoint=127.0.0.1:7070&secure=false", AccessKey: "AK", SecretKey: "SK"},
		{Name: "minio", BaseURL: "s3://deltasync-test/base?endpoint=127.0.0.1:9000&secure=false&create=true", AccessKey: "mk", SecretKey: "m/secret"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseServers =\n%+v, want\n%+v", got, want)
	}
	// The single URL of older setups: one server named s3.
	got, err = ParseServers("s3://b?endpoint=h:1&secure=false", "AK", "SK")
	if err != nil || len(got) != 1 || got[0].Name != "s3" || got[0].AccessKey != "AK" {
		t.Errorf("single URL: %+v, %v", got, err)
	}
	got, err = ParseServers("s3://b?endpoint=h:1 s3://c?endpoint=h:2", "AK", "SK")
	if err != nil || len(got) != 2 || got[1].Name != "s3-2" {
		t.Errorf("two unnamed: %+v, %v", got, err)
	}
}

func TestParseServersErrors(t *testing.T) {
	for _, tt := range []struct{ raw, key, want string }{
		{"", "AK", "no servers"},
		{"a=s3://b?endpoint=h:1 a=s3://c?endpoint=h:2", "AK", `"a" used twice`},
		{"bad name=s3://b?endpoint=h:1", "AK", "want [NAME=]"},
		{"x=file:///tmp", "AK", "want an s3:// URL"},
		{"x=s3://b?endpoint=h:1", "", "no credentials"},
		{"x=s3://onlykey@b?endpoint=h:1", "AK", "ACCESS_KEY:SECRET_KEY@"},
		{"x=s3://k:topsecret@b?endpont=h:1", "AK", `unknown option "endpont"`},
	} {
		_, err := ParseServers(tt.raw, tt.key, "SK")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseServers(%q) = %v, want an error containing %q", tt.raw, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "topsecret") {
			t.Errorf("error leaks the secret: %v", err)
		}
	}
}

func TestWithPrefix(t *testing.T) {
	for _, tt := range []struct{ raw, prefix, want string }{
		{"s3://b?endpoint=h:1", "p/q", "s3://b/p/q?endpoint=h:1"},
		{"s3://b/base?endpoint=h:1&create=true", "base/t1", "s3://b/base/t1?endpoint=h:1&create=true"},
	} {
		if got := withPrefix(tt.raw, tt.prefix); got != tt.want {
			t.Errorf("withPrefix(%q, %q) = %q, want %q", tt.raw, tt.prefix, got, tt.want)
		}
	}
}
