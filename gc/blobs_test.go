package gc_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/deltasync/deltasync/gc"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
)

func putBlob(t *testing.T, s snapshot.Store, org, user, name string) string {
	t.Helper()
	b := []byte("blob " + name)
	sum := sha256.Sum256(b)
	h := hex.EncodeToString(sum[:])
	ctx := context.Background()
	if _, err := s.Put(ctx, snapshot.BlobKey(org, h), bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, snapshot.BlobGrantKey(org, user, h), bytes.NewReader(nil), 0); err != nil {
		t.Fatal(err)
	}
	return h
}

func exists(t *testing.T, s snapshot.Store, key string) bool {
	t.Helper()
	_, err := s.Stat(context.Background(), key)
	if err != nil && !errors.Is(err, snapshot.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestGCKeepsReferencedAndPendingBlobs: gc deletes an old blob nothing
// references (and its grant), and keeps a blob a version of any user of
// the org references, one with an upload in progress, and one whose grant
// is younger than the grace period (uploaded for a patch on its way).
func TestGCKeepsReferencedAndPendingBlobs(t *testing.T) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.open(t)
			f := newFixture(t, s)
			ctx := context.Background()
			referenced := putBlob(t, s, "acme", "alice", "referenced")
			orphan := putBlob(t, s, "acme", "alice", "orphan")
			uploading := putBlob(t, s, "acme", "alice", "uploading")
			s.Put(ctx, snapshot.BlobUploadInfoKey("acme", "carol", uploading), bytes.NewReader([]byte(`{"length":5}`)), 12)
			// Bob's data set references the blob alice uploaded.
			f.build("acme", "bob", []gen.Record{{Key: "forms/1", Value: fmt.Appendf(nil, `{"photo":{"$blob":"sha256:%s","bytes":19}}`, referenced)}}, time.Now())
			time.Sleep(30 * time.Millisecond) // ModTime order: the next writes are younger than mid
			mid := time.Now()
			time.Sleep(30 * time.Millisecond)
			fresh := putBlob(t, s, "acme", "alice", "fresh")

			opts := gc.DefaultOptions()
			opts.KeepVersions, opts.Grace = 1, time.Millisecond
			opts.Now = func() time.Time { return mid }
			rep, err := gc.Run(ctx, s, opts)
			if err != nil {
				t.Fatal(err)
			}
			for name, h := range map[string]string{"referenced": referenced, "uploading": uploading, "fresh": fresh} {
				if !exists(t, s, snapshot.BlobKey("acme", h)) {
					t.Errorf("%s blob deleted", name)
				}
			}
			if exists(t, s, snapshot.BlobKey("acme", orphan)) || exists(t, s, snapshot.BlobGrantKey("acme", "alice", orphan)) {
				t.Errorf("unreferenced old blob or its grant kept")
			}
			if rep.BlobsDeleted != 1 || rep.BlobsKept != 3 {
				t.Errorf("report: %d deleted, %d kept; want 1, 3", rep.BlobsDeleted, rep.BlobsKept)
			}
		})
	}
}

// TestGCKeepsBlobWithRefreshedGrant: an old blob whose grant was written
// again within the grace period (a patch referencing it is on its way) is
// kept.
func TestGCKeepsBlobWithRefreshedGrant(t *testing.T) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.open(t)
			ctx := context.Background()
			h := putBlob(t, s, "acme", "alice", "old")
			time.Sleep(30 * time.Millisecond)
			mid := time.Now()
			time.Sleep(30 * time.Millisecond)
			s.Put(ctx, snapshot.BlobGrantKey("acme", "alice", h), bytes.NewReader(nil), 0)
			opts := gc.DefaultOptions()
			opts.KeepVersions, opts.Grace = 1, time.Millisecond
			opts.Now = func() time.Time { return mid }
			if _, err := gc.Run(ctx, s, opts); err != nil {
				t.Fatal(err)
			}
			if !exists(t, s, snapshot.BlobKey("acme", h)) {
				t.Fatal("blob with a refreshed grant deleted")
			}
		})
	}
}

// TestGCExpiresAbandonedUploads: an upload without a new byte for
// AbandonedUpload is deleted (its blob is then collected like any other);
// a younger one is kept.
func TestGCExpiresAbandonedUploads(t *testing.T) {
	for _, sc := range storeCases {
		t.Run(sc.name, func(t *testing.T) {
			s := sc.open(t)
			ctx := context.Background()
			h := putBlob(t, s, "acme", "alice", "x")
			s.Put(ctx, snapshot.BlobUploadInfoKey("acme", "carol", h), bytes.NewReader([]byte(`{"length":5}`)), 12)
			s.Put(ctx, snapshot.BlobPartKey("acme", "carol", h, 0), bytes.NewReader([]byte("bl")), 2)
			opts := gc.DefaultOptions()
			opts.KeepVersions = 1
			opts.Now = func() time.Time { return time.Now().Add(gc.AbandonedUpload - time.Hour) }
			if rep, err := gc.Run(ctx, s, opts); err != nil || rep.UploadsExpired != 0 || !exists(t, s, snapshot.BlobKey("acme", h)) {
				t.Fatalf("young upload: %+v %v", rep, err)
			}
			opts.Now = func() time.Time { return time.Now().Add(gc.AbandonedUpload + time.Hour) }
			rep, err := gc.Run(ctx, s, opts)
			if err != nil || rep.UploadsExpired != 1 {
				t.Fatalf("abandoned upload: %+v %v", rep, err)
			}
			if exists(t, s, snapshot.BlobUploadInfoKey("acme", "carol", h)) || exists(t, s, snapshot.BlobPartKey("acme", "carol", h, 0)) {
				t.Error("abandoned upload objects left")
			}
			if exists(t, s, snapshot.BlobKey("acme", h)) {
				t.Error("the blob of the abandoned upload, referenced by nothing, was kept")
			}
		})
	}
}

// TestGCBlobsOnEveryStore: on every backend (S3 included), with every
// object past the grace period, gc keeps the referenced blob and the one
// being uploaded and deletes the orphan with its grant.
func TestGCBlobsOnEveryStore(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) snapshot.Store) {
		s := open(t)
		f := newFixture(t, s)
		ctx := context.Background()
		referenced := putBlob(t, s, "acme", "alice", "referenced")
		orphan := putBlob(t, s, "acme", "alice", "orphan")
		uploading := putBlob(t, s, "acme", "alice", "uploading")
		s.Put(ctx, snapshot.BlobUploadInfoKey("acme", "carol", uploading), bytes.NewReader([]byte(`{"length":5}`)), 12)
		f.build("acme", "bob", []gen.Record{{Key: "forms/1", Value: fmt.Appendf(nil, `{"photo":{"$blob":"sha256:%s","bytes":19}}`, referenced)}}, time.Now())
		opts := gc.DefaultOptions()
		opts.KeepVersions, opts.Now = 1, aged()
		rep, err := gc.Run(ctx, s, opts)
		if err != nil {
			t.Fatal(err)
		}
		if !exists(t, s, snapshot.BlobKey("acme", referenced)) || !exists(t, s, snapshot.BlobKey("acme", uploading)) {
			t.Error("a referenced or uploading blob was deleted")
		}
		if exists(t, s, snapshot.BlobKey("acme", orphan)) || exists(t, s, snapshot.BlobGrantKey("acme", "alice", orphan)) {
			t.Error("the orphan blob or its grant was kept")
		}
		if rep.BlobsDeleted != 1 || rep.BlobsKept != 2 {
			t.Errorf("report: %d deleted, %d kept", rep.BlobsDeleted, rep.BlobsKept)
		}
	})
}
