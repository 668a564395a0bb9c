package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/server"
)

// TestClientCLIBlobs: `client attach` stores a file offline and prints its
// reference, status shows the pending blob bytes, sync uploads it with the
// record that references it, and `client blob` on a second device writes
// the same bytes.
func TestClientCLIBlobs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	url := startServe(t, "file://"+t.TempDir())
	admin, _ := server.MintToken([]byte(replicaSecret), server.Claims{Admin: true}, time.Hour)
	user, _ := server.MintToken([]byte(replicaSecret), server.Claims{Org: "acme", User: "alice"}, time.Hour)
	if code, b := call(t, "PUT", url+"/v1/admin/orgs/acme", admin, []byte(`{"offline_mode":true}`)); code != 200 {
		t.Fatalf("settings: %d %s", code, b)
	}
	photo := make([]byte, 300_000)
	rand.Read(photo)
	file := filepath.Join(t.TempDir(), "photo.jpg")
	os.WriteFile(file, photo, 0o600)
	run := func(dir string, args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, "", append(append([]string{"client"}, args...), "--dir", dir)...)
		if code != 0 {
			t.Fatalf("client %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
		return out
	}
	d1, d2 := t.TempDir(), t.TempDir()
	var ref struct {
		Blob  string
		Bytes int64
	}
	out := run(d1, "attach", file, "--json")
	if err := json.Unmarshal([]byte(out), &ref); err != nil || !strings.HasPrefix(ref.Blob, "sha256:") || ref.Bytes != int64(len(photo)) {
		t.Fatalf("attach --json printed %q", out)
	}
	run(d1, "put", "forms/1", fmt.Sprintf(`{"photo":{"$blob":%q,"bytes":%d}}`, ref.Blob, ref.Bytes))
	if out := run(d1, "status", "--json"); !strings.Contains(out, `"pending_blob_bytes":300000`) {
		t.Fatalf("status before sync: %s", out)
	}
	if out := run(d1, "status"); !strings.Contains(out, "pending blobs") {
		t.Fatalf("status does not show pending blobs:\n%s", out)
	}
	run(d1, "sync", "--server", url, "--token", user)
	if out := run(d1, "status", "--json"); !strings.Contains(out, `"pending_blob_bytes":0`) {
		t.Fatalf("status after sync: %s", out)
	}
	run(d2, "sync", "--server", url, "--token", user)
	dst := filepath.Join(t.TempDir(), "copy.jpg")
	run(d2, "blob", ref.Blob, "--out", dst)
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, photo) {
		t.Fatal("the second device's copy differs")
	}
}
