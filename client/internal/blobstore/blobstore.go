// Package blobstore keeps a client's blobs (photos, files) on the device:
// the ones attached here and not yet uploaded (pending: never evicted, as
// durable as an edit), and the ones downloaded or already uploaded
// (cached: evicted least recently used first when the cache outgrows its
// limit).
//
// Each blob is a file named by its SHA-256 under <client dir>/blobs/,
// beside a small manifest file (<hex>.json) saying whether it is pending,
// its size, type and when it was last used. Both are written atomically
// (temp file, fsync, rename, fsync of the directory): a blob is pending
// once Put returns, and a crash leaves either the whole blob or none of
// it. A download in progress is <hex>.part, appended to and resumed from
// its length; it becomes the blob once its bytes hash to the name.
//
// The store has an index of its own (the manifests) and touches none of
// the client's other state, so the client's state database can change
// without it.
package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrNotExist: the blob is not on the device.
var ErrNotExist = errors.New("blob not on this device")

// ErrMismatch: bytes do not hash to the blob's name.
var ErrMismatch = errors.New("blob bytes do not match their SHA-256")

// Meta is a blob's manifest.
type Meta struct {
	Hex      string `json:"-"`
	Bytes    int64  `json:"bytes"`
	Mime     string `json:"mime,omitempty"`
	Pending  bool   `json:"pending"`
	UsedNano int64  `json:"used_ns"`
}

// Store is the blob directory of one client. It is safe for concurrent use.
type Store struct {
	dir string
	mu  sync.Mutex
	// metas mirrors the manifests on disk.
	metas map[string]*Meta
	now   func() time.Time
}

// Open opens (creating) the blob directory dir, reads its manifests, and
// removes what a crash left behind: temp files, and blob files without a
// manifest (a Put that did not return).
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create blob directory: %w", err)
	}
	s := &Store{dir: dir, metas: map[string]*Meta{}, now: time.Now}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read blob directory: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if h, ok := strings.CutSuffix(name, ".json"); ok && validHex(h) {
			m, err := s.readMeta(h)
			if err != nil {
				// A damaged manifest: the blob's file is its own proof (its
				// name is its hash), so keep it, as pending (never evicted;
				// uploading it again costs a request).
				fi, serr := os.Stat(s.path(h))
				if serr != nil {
					os.Remove(s.metaPath(h))
					continue
				}
				m = &Meta{Hex: h, Bytes: fi.Size(), Pending: true}
			}
			s.metas[h] = m
		}
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".tmp-"):
			os.Remove(filepath.Join(dir, name))
		case validHex(name) && s.metas[name] == nil:
			os.Remove(filepath.Join(dir, name))
		}
	}
	for h, m := range s.metas {
		if fi, err := os.Stat(s.path(h)); err != nil || fi.Size() != m.Bytes {
			// A manifest whose blob is missing or short: a cached blob is
			// simply gone; a pending one is reported by Verify.
			if !m.Pending {
				os.Remove(s.metaPath(h))
				delete(s.metas, h)
			}
		}
	}
	return s, nil
}

func validHex(h string) bool {
	if len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

func (s *Store) path(h string) string     { return filepath.Join(s.dir, h) }
func (s *Store) metaPath(h string) string { return filepath.Join(s.dir, h+".json") }
func (s *Store) partPath(h string) string { return filepath.Join(s.dir, h+".part") }

func (s *Store) readMeta(h string) (*Meta, error) {
	b, err := os.ReadFile(s.metaPath(h))
	if err != nil {
		return nil, fmt.Errorf("read blob manifest: %w", err)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("blob manifest %s is corrupt: %w", s.metaPath(h), err)
	}
	m.Hex = h
	return &m, nil
}

// writeFileAtomic writes b to path: temp file, fsync, rename, directory fsync.
func (s *Store) writeFileAtomic(path string, fill func(w io.Writer) error) error {
	f, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(s.dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *Store) writeMeta(m *Meta) error {
	b, _ := json.Marshal(m)
	return s.writeFileAtomic(s.metaPath(m.Hex), func(w io.Writer) error { _, err := w.Write(b); return err })
}

// Put stores r's bytes as a pending blob (to upload) and returns its
// manifest; the blob is durable when Put returns. A blob already here
// becomes pending again if it was only cached (this device must make sure
// the server has it before a patch references it). max (>0) bounds the
// size: more is an error and nothing is kept.
func (s *Store) Put(r io.Reader, mime string, max int64) (*Meta, error) {
	f, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return nil, fmt.Errorf("store blob: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	src := r
	if max > 0 {
		src = io.LimitReader(r, max+1)
	}
	n, err := io.Copy(io.MultiWriter(f, h), src)
	if err == nil && max > 0 && n > max {
		err = fmt.Errorf("blob is over the organization's limit of %d bytes", max)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("store blob: %w", err)
	}
	hexd := hex.EncodeToString(h.Sum(nil))
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.metas[hexd]; old != nil && fileSize(s.path(hexd)) == old.Bytes {
		m := *old
		m.Pending, m.UsedNano = true, s.now().UnixNano()
		if mime != "" {
			m.Mime = mime
		}
		return s.setMetaLocked(&m)
	}
	if err := os.Rename(tmp, s.path(hexd)); err != nil {
		return nil, fmt.Errorf("store blob: %w", err)
	}
	m := &Meta{Hex: hexd, Bytes: n, Mime: mime, Pending: true, UsedNano: s.now().UnixNano()}
	return s.setMetaLocked(m) // syncs the directory: the rename is durable too
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

func (s *Store) setMetaLocked(m *Meta) (*Meta, error) {
	if err := s.writeMeta(m); err != nil {
		return nil, fmt.Errorf("store blob manifest: %w", err)
	}
	s.metas[m.Hex] = m
	c := *m
	return &c, nil
}

// Get returns a blob's manifest, or ErrNotExist.
func (s *Store) Get(hexd string) (Meta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.metas[hexd]
	if m == nil {
		return Meta{}, ErrNotExist
	}
	return *m, nil
}

// Open opens a blob's bytes and marks it used (for LRU).
func (s *Store) Open(hexd string) (*os.File, error) {
	s.mu.Lock()
	m := s.metas[hexd]
	if m != nil {
		// In memory only: a read must not cost two fsyncs. After a
		// restart the order is that of the last write (attach, download).
		m.UsedNano = s.now().UnixNano()
	}
	s.mu.Unlock()
	if m == nil {
		return nil, ErrNotExist
	}
	f, err := os.Open(s.path(hexd))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotExist
	}
	return f, err
}

// Verify checks that a blob's file hashes to its name (ErrMismatch if not,
// ErrNotExist if there is none).
func (s *Store) Verify(hexd string) error {
	f, err := s.Open(hexd)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != hexd {
		return fmt.Errorf("blob %s: %w", hexd, ErrMismatch)
	}
	return nil
}

// Path is the file holding a blob (read it, never change it).
func (s *Store) Path(hexd string) string { return s.path(hexd) }

// MarkUploaded turns a pending blob into a cached one: the server has it.
func (s *Store) MarkUploaded(hexd string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.metas[hexd]
	if m == nil || !m.Pending {
		return nil
	}
	c := *m
	c.Pending = false
	_, err := s.setMetaLocked(&c)
	return err
}

// MarkPending makes a blob pending again (the server lost it and it must
// be uploaded again); ErrNotExist if it is not here.
func (s *Store) MarkPending(hexd string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.metas[hexd]
	if m == nil {
		return ErrNotExist
	}
	if m.Pending {
		return nil
	}
	c := *m
	c.Pending = true
	_, err := s.setMetaLocked(&c)
	return err
}

// Pending lists the pending blobs.
func (s *Store) Pending() []Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Meta
	for _, m := range s.metas {
		if m.Pending {
			out = append(out, *m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hex < out[j].Hex })
	return out
}

// PendingBytes is the size of the pending blobs, and their number.
func (s *Store) PendingBytes() (int64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	k := 0
	for _, m := range s.metas {
		if m.Pending {
			n += m.Bytes
			k++
		}
	}
	return n, k
}

// CachedBytes is the size of the blobs that are not pending.
func (s *Store) CachedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, m := range s.metas {
		if !m.Pending {
			n += m.Bytes
		}
	}
	return n
}

// PartialSize is how much of a download of hexd is on disk (0 if none).
func (s *Store) PartialSize(hexd string) int64 {
	return max(fileSize(s.partPath(hexd)), 0)
}

// AppendPartial appends r to the download of hexd, which must be at off
// bytes (else it starts over from 0 if off is 0, or fails), and syncs it,
// so that what arrived survives an interruption. It returns the bytes
// appended; on a read error what was read is kept.
func (s *Store) AppendPartial(hexd string, off int64, r io.Reader) (int64, error) {
	if !validHex(hexd) {
		return 0, fmt.Errorf("blob digest %q: %w", hexd, ErrMismatch)
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if off == 0 {
		flags |= os.O_TRUNC
	} else if got := s.PartialSize(hexd); got != off {
		return 0, fmt.Errorf("partial download of %s has %d bytes, not %d", hexd, got, off)
	}
	f, err := os.OpenFile(s.partPath(hexd), flags, 0o600)
	if err != nil {
		return 0, err
	}
	n, rerr := io.Copy(f, r)
	serr := f.Sync()
	cerr := f.Close()
	return n, errors.Join(rerr, serr, cerr)
}

// FinishPartial checks that the download of hexd is complete and hashes to
// its name, and makes it a cached blob (ErrMismatch, and the partial file
// removed, if not).
func (s *Store) FinishPartial(hexd, mime string) error {
	f, err := os.Open(s.partPath(hexd))
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != hexd {
		os.Remove(s.partPath(hexd))
		return fmt.Errorf("downloaded blob %s: %w", hexd, ErrMismatch)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Rename(s.partPath(hexd), s.path(hexd)); err != nil {
		return err
	}
	_, err = s.setMetaLocked(&Meta{Hex: hexd, Bytes: n, Mime: mime, UsedNano: s.now().UnixNano()})
	return err
}

// Evict removes cached (never pending) blobs, least recently used first,
// until the cached ones take at most limit bytes; keep is never removed
// (the blob being read). It returns how many it removed.
func (s *Store) Evict(limit int64, keep string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cached []*Meta
	var total int64
	for _, m := range s.metas {
		if !m.Pending {
			cached = append(cached, m)
			total += m.Bytes
		}
	}
	sort.Slice(cached, func(i, j int) bool {
		if cached[i].UsedNano != cached[j].UsedNano {
			return cached[i].UsedNano < cached[j].UsedNano
		}
		return cached[i].Hex < cached[j].Hex
	})
	removed := 0
	for _, m := range cached {
		if total <= limit {
			break
		}
		if m.Hex == keep {
			continue
		}
		if err := os.Remove(s.metaPath(m.Hex)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, err
		}
		os.Remove(s.path(m.Hex))
		delete(s.metas, m.Hex)
		total -= m.Bytes
		removed++
	}
	return removed, nil
}
