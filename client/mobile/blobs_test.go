package mobile

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/deltasync/deltasync/internal/servertest"
)

// TestFacadeAttachSyncBlob: through the façade, a photo attached with no
// server, put into a record, synced, is read back by a second device; the
// status counts it while pending.
func TestFacadeAttachSyncBlob(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	srv.SetOrg(t, "acme", `{"offline_mode":true}`)
	tok := srv.UserToken(t, "acme", "alice")
	photo := make([]byte, 200_000)
	rand.Read(photo)

	a := mustOpen(t, t.TempDir(), nil)
	ref, err := a.Attach(photo, "image/jpeg")
	if err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.PendingBlobs != 1 || st.PendingBlobBytes != int64(len(photo)) {
		t.Fatalf("status: %d pending blobs, %d bytes", st.PendingBlobs, st.PendingBlobBytes)
	}
	if err := a.Put("forms/1", []byte(fmt.Sprintf(`{"photo":%s}`, ref.JSON))); err != nil {
		t.Fatal(err)
	}
	if err := a.SetServer(srv.URL, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.PendingBlobs != 0 {
		t.Fatalf("after sync: %d pending blobs", st.PendingBlobs)
	}
	cfg := NewConfig()
	cfg.ServerURL, cfg.Token = srv.URL, tok
	b := mustOpen(t, t.TempDir(), cfg)
	if _, err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := b.Blob(ref.ID)
	if err != nil || !bytes.Equal(got, photo) {
		t.Fatalf("Blob on the second device: %v, equal %v", err, bytes.Equal(got, photo))
	}
	if _, err := b.Blob("sha256:nothex"); ErrorCode(err) != CodeInvalid {
		t.Errorf("Blob of a bad id: %v (code %q)", err, ErrorCode(err))
	}
}
