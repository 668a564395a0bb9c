//go:build unix

package fsstore

import (
	"path/filepath"
	"testing"
	"time"
)

// flock must exclude a second open file description, which is what another
// process holds; the in-process mutex alone would not.
func TestFlockExcludes(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".lock")
	release, err := lockFileAt(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		r2, err := lockFileAt(path)
		if err != nil {
			t.Error(err)
			r2 = func() {}
		}
		got <- r2
	}()
	select {
	case r2 := <-got:
		r2()
		t.Fatal("second flock succeeded while the first was held")
	case <-time.After(200 * time.Millisecond):
	}
	release()
	select {
	case r2 := <-got:
		r2()
	case <-time.After(10 * time.Second):
		t.Fatal("second flock still blocked after release")
	}
}
