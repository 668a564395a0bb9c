package gen_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// genDir writes users generated data sets of 2–64 KiB into a temp dir and
// returns the files, relative to it, with their contents.
func genDir(t *testing.T, users int, seed int64, zst bool) map[string]string {
	t.Helper()
	dir := t.TempDir()
	res, err := gen.GenerateDir(t.Context(), gen.DirOptions{Dir: dir, Users: users, MinSize: 2 << 10, MaxSize: 64 << 10, Seed: seed, Zstd: zst})
	if err != nil {
		t.Fatal(err)
	}
	if res.Users != users || res.Records == 0 || res.Bytes == 0 {
		t.Fatalf("result %+v", res)
	}
	files := map[string]string{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// Equal options give equal files, of mixed sizes, named as batch builds
// read them (org-NNN/user-NNNNN.ndjson, or .ndjson.zst), and no temp file
// is left.
func TestGenerateDirIsDeterministic(t *testing.T) {
	a, b := genDir(t, 8, 9, false), genDir(t, 8, 9, false)
	if len(a) != 8 || len(b) != 8 {
		t.Fatalf("%d and %d files", len(a), len(b))
	}
	sizes := map[int]bool{}
	for name, data := range a {
		if b[name] != data {
			t.Fatalf("%s differs between two runs", name)
		}
		if org, file, ok := strings.Cut(name, "/"); !ok || !strings.HasPrefix(org, "org-") || !strings.HasPrefix(file, "user-") || !strings.HasSuffix(file, ".ndjson") {
			t.Errorf("file name %q, want org-NNN/user-NNNNN.ndjson", name)
		}
		if n := len(data); n < 1<<10 || n > 70<<10 {
			t.Errorf("%s: %d bytes, want about 2–64 KiB", name, n)
		}
		sizes[len(data)] = true
	}
	if len(sizes) < 6 {
		t.Errorf("sizes are not mixed: %v", sizes)
	}
	for name := range genDir(t, 2, 9, true) {
		if !strings.HasSuffix(name, ".ndjson.zst") {
			t.Errorf("compressed file name %q, want .ndjson.zst", name)
		}
	}
}
