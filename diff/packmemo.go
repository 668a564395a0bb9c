package diff

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"

	"github.com/deltasync/deltasync/snapshot"
)

// packMemo remembers the pack bytes one replay reads. Planning a patch
// reads the chunks that hold its keys (lookup), and building the new
// version reads them again to rebuild them (snapshot.ApplyEdits): packs
// never change, so a range inside one read before is served from it
// instead of costing another store round trip. It keeps at most
// maxPackMemo bytes; past that, reads pass through.
type packMemo struct {
	snapshot.Store

	mu    sync.Mutex
	spans map[string][]packSpan // pack key -> spans read
	bytes int
}

type packSpan struct {
	off int64
	b   []byte
}

const maxPackMemo = 8 << 20

func newPackMemo(s snapshot.Store) *packMemo {
	return &packMemo{Store: s, spans: map[string][]packSpan{}}
}

func (m *packMemo) GetRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if !strings.Contains(key, "/packs/") || n <= 0 {
		return m.Store.GetRange(ctx, key, off, n)
	}
	if b := m.lookup(key, off, n); b != nil {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	rc, err := m.Store.GetRange(ctx, key, off, n)
	if err != nil || !m.room(n) {
		return rc, err
	}
	defer rc.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(rc, b)
	if err != nil {
		// The caller sees what it would have: the bytes, then the error.
		return io.NopCloser(io.MultiReader(bytes.NewReader(b[:k]), errReader{err})), nil
	}
	m.mu.Lock()
	if m.bytes+len(b) <= maxPackMemo {
		m.spans[key] = append(m.spans[key], packSpan{off: off, b: b})
		m.bytes += len(b)
	}
	m.mu.Unlock()
	return io.NopCloser(bytes.NewReader(b)), nil
}

// lookup returns [off, off+n) of key if one span read before holds it.
func (m *packMemo) lookup(key string, off, n int64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.spans[key] {
		if off >= s.off && off+n <= s.off+int64(len(s.b)) {
			return s.b[off-s.off : off-s.off+n]
		}
	}
	return nil
}

// room tells whether n more bytes may be kept.
func (m *packMemo) room(n int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(m.bytes)+n <= maxPackMemo
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// Unwrap exposes the store for snapshot.AsTempSweeper.
func (m *packMemo) Unwrap() snapshot.Store { return m.Store }
