package testkit_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/deltasync/deltasync/internal/testkit"
)

// Writers and a reader at once lose no write (and -race sees no race).
func TestBufferConcurrentWrites(t *testing.T) {
	var b testkit.Buffer
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 100 {
				fmt.Fprintf(&b, "w%d-%d\n", w, i)
				_ = b.String()
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if got, want := len(lines), 400; got != want {
		t.Fatalf("got %d lines, want %d", got, want)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		seen[l] = true
	}
	if len(seen) != 400 {
		t.Errorf("got %d distinct lines, want 400 (writes interleaved inside a line)", len(seen))
	}
}
