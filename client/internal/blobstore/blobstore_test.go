package blobstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func hexOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeClock returns a store clock that moves one second per call, so the
// LRU order is the order of use.
func fakeClock() func() time.Time {
	t := time.Unix(1_000_000, 0)
	return func() time.Time { t = t.Add(time.Second); return t }
}

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.now = fakeClock()
	return s
}

// TestPutIsDurableAndPending: a Put blob survives a reopen as pending,
// with its bytes, and counts in PendingBytes.
func TestPutIsDurableAndPending(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data := []byte("a photo")
	m, err := s.Put(bytes.NewReader(data), "image/jpeg", 0)
	if err != nil {
		t.Fatal(err)
	}
	if m.Hex != hexOf(data) || m.Bytes != int64(len(data)) || !m.Pending {
		t.Fatalf("meta %+v", m)
	}
	s2 := open(t, dir)
	if n, k := s2.PendingBytes(); n != int64(len(data)) || k != 1 {
		t.Fatalf("after reopen: %d pending bytes in %d blobs", n, k)
	}
	f, err := s2.Open(m.Hex)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, 100)
	n, _ := f.Read(got)
	if !bytes.Equal(got[:n], data) {
		t.Fatalf("bytes %q", got[:n])
	}
}

// TestPutOverLimitKeepsNothing: a blob over max is refused and leaves no
// file behind.
func TestPutOverLimitKeepsNothing(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if _, err := s.Put(bytes.NewReader(make([]byte, 11)), "", 10); err == nil || !strings.Contains(err.Error(), "limit of 10 bytes") {
		t.Fatalf("over the limit: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("left %d files", len(ents))
	}
}

// TestEvictNeverTakesPending: eviction removes cached blobs least recently
// used first, and never a pending one, whatever the limit.
func TestEvictNeverTakesPending(t *testing.T) {
	s := open(t, t.TempDir())
	var hs []string
	for _, b := range []string{"one.", "two.", "three", "four."} {
		m, err := s.Put(strings.NewReader(b), "", 0)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, m.Hex)
	}
	for _, h := range hs[:3] {
		if err := s.MarkUploaded(h); err != nil {
			t.Fatal(err)
		}
	}
	f, _ := s.Open(hs[0]) // used last: evicted last
	f.Close()
	n, err := s.Evict(5, "")
	if err != nil || n != 2 {
		t.Fatalf("Evict removed %d, %v; want 2", n, err)
	}
	for i, want := range []bool{true, false, false, true} {
		if _, err := s.Get(hs[i]); (err == nil) != want {
			t.Errorf("blob %d kept %v, want %v", i, err == nil, want)
		}
	}
	if n, _ := s.Evict(0, ""); n != 1 {
		t.Errorf("Evict(0) removed %d, want the one cached blob", n)
	}
	if _, k := s.PendingBytes(); k != 1 {
		t.Errorf("the pending blob was evicted")
	}
}

// TestPartialDownloadResumesAndVerifies: a download appended in two pieces
// becomes the blob only if it hashes to its name.
func TestPartialDownloadResumesAndVerifies(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data := []byte("0123456789abcdef")
	h := hexOf(data)
	if _, err := s.AppendPartial(h, 0, bytes.NewReader(data[:7])); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir) // a new process resumes
	if got := s.PartialSize(h); got != 7 {
		t.Fatalf("partial size %d", got)
	}
	if _, err := s.AppendPartial(h, 3, bytes.NewReader(data[3:])); err == nil {
		t.Fatal("append at the wrong offset accepted")
	}
	if _, err := s.AppendPartial(h, 7, bytes.NewReader(data[7:])); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishPartial(h, ""); err != nil {
		t.Fatal(err)
	}
	if m, err := s.Get(h); err != nil || m.Pending || m.Bytes != 16 {
		t.Fatalf("after finish: %+v %v", m, err)
	}
	bad := []byte("not what the name says")
	if _, err := s.AppendPartial(hexOf([]byte("other")), 0, bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishPartial(hexOf([]byte("other")), ""); !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong bytes: %v, want ErrMismatch", err)
	}
	if _, err := os.Stat(filepath.Join(dir, hexOf([]byte("other"))+".part")); !os.IsNotExist(err) {
		t.Error("the wrong partial file was kept")
	}
}

// TestOpenCleansCrashLeftovers: temp files and a blob file without its
// manifest (a Put that never returned) are removed at Open; a blob whose
// file is gone loses its manifest unless pending.
func TestOpenCleansCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	m, _ := s.Put(strings.NewReader("kept"), "", 0)
	orphan := hexOf([]byte("orphan"))
	os.WriteFile(filepath.Join(dir, orphan), []byte("orphan"), 0o600)
	os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("x"), 0o600)
	open(t, dir)
	for _, name := range []string{orphan, ".tmp-123"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s not removed", name)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, m.Hex)); err != nil {
		t.Errorf("the blob was removed: %v", err)
	}
}

// TestDamagedManifestKeepsBlob: a manifest that cannot be read does not
// stop Open; the blob is kept as pending (never evicted).
func TestDamagedManifestKeepsBlob(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	m, _ := s.Put(strings.NewReader("photo"), "", 0)
	s.MarkUploaded(m.Hex)
	os.WriteFile(filepath.Join(dir, m.Hex+".json"), []byte("{garbage"), 0o600)
	s2 := open(t, dir)
	if got, err := s2.Get(m.Hex); err != nil || !got.Pending || got.Bytes != 5 {
		t.Fatalf("after a damaged manifest: %+v %v", got, err)
	}
}
