// Package s3test connects tests to the S3-compatible server that
// scripts/test starts (versitygw). The server is named by DELTASYNC_TEST_S3,
// an s3:// store URL such as
//
//	s3://deltasync-test?endpoint=127.0.0.1:7070&secure=false
//
// with credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Without
// it the tests skip, except under CI (CI=true), where a skipped S3 suite
// would hide a broken setup and fails instead.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/s3store"
	"github.com/deltasync/deltasync/snapshot/storeurl"
)

// EnvVar names the variable that enables the S3 tests.
const EnvVar = "DELTASYNC_TEST_S3"

// URL returns a store URL for a fresh, random prefix below the configured
// one, after making sure the bucket exists. Objects under the prefix are
// deleted when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	u, _ := open(t)
	return u
}

// Store returns a store over a fresh, random prefix, like URL.
func Store(t testing.TB) snapshot.Store {
	t.Helper()
	_, s := open(t)
	return s
}

// Check skips the test when no S3 server is configured (fails it under CI)
// and returns the configured URL. URL and Store call it; a test with many
// subtests calls it first to skip once instead of in every subtest.
func Check(t testing.TB) string {
	t.Helper()
	raw := os.Getenv(EnvVar)
	if raw == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("S3 suite not run: %s not set; under CI the S3 suite must run (scripts/test sets it)", EnvVar)
		}
		t.Skipf("S3 suite skipped: %s not set (scripts/test sets it)", EnvVar)
	}
	return raw
}

func open(t testing.TB) (string, *s3store.Store) {
	t.Helper()
	raw := Check(t)
	loc, err := storeurl.Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", EnvVar, err)
	}
	if loc.Scheme != "s3" {
		t.Fatalf("%s=%q: want an s3:// URL", EnvVar, raw)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	sub := "test-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(rnd[:])
	base := loc.S3.Prefix
	if base != "" {
		loc.S3.Prefix = base + "/" + sub
	} else {
		loc.S3.Prefix = sub
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := s3store.New(ctx, loc.S3)
	if err != nil {
		t.Fatalf("%s: %v", EnvVar, err)
	}
	if err := s.EnsureBucket(ctx); err != nil {
		t.Fatalf("%s: %v", EnvVar, err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := s.RemoveAll(ctx, ""); err != nil {
			t.Errorf("clean up S3 prefix %s: %v", loc.S3.Prefix, err)
		}
	})
	return withPrefix(raw, loc.S3.Prefix), s
}

// withPrefix replaces the path of an s3:// URL, keeping its query.
func withPrefix(raw, prefix string) string {
	rest := strings.TrimPrefix(raw, "s3://")
	query := ""
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, query = rest[:i], rest[i:]
	}
	bucket, _, _ := strings.Cut(rest, "/")
	return "s3://" + bucket + "/" + prefix + query
}
