package mobile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// The binding checks of issue 12: gobind (pinned in scripts/test,
// installed into .bin) generates the Java and Objective-C bindings of this
// package; nothing may be skipped. The Java bindings are then compiled
// with a JDK and run through JNI on Linux (jni_test.go), and the README's
// snippets are checked against the generated names (readme_test.go).
//
// Without gobind or a JDK these tests skip, except under CI (CI set, as
// scripts/test's CI runs have it), where they fail: a check that silently
// passes when its tool is missing is no check.

const (
	pkgPath    = "github.com/deltasync/deltasync/client/mobile"
	javaPkg    = "io.deltasync" // Java classes io.deltasync.mobile.*
	objcPrefix = "DS"           // Objective-C names DSMobile*
)

// generated is the output of gobind for this package.
type generated struct {
	module string // a scratch module requiring deltasync (this tree) and x/mobile
	java   string // gobind -lang=go,java output
	objc   string // gobind -lang=go,objc output
}

var (
	genOnce    sync.Once
	genResult  *generated
	genErr     error
	genSkip    string
	scratchDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if scratchDir != "" {
		os.RemoveAll(scratchDir)
	}
	os.Exit(code)
}

// need skips the test (or fails it under CI) when a tool is missing.
func need(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s: CI must run this check (scripts/test installs gobind; a JDK must be installed)", what)
	}
	t.Skip(what)
}

// bindings runs gobind once per test binary and returns its output.
func bindings(t *testing.T) *generated {
	t.Helper()
	genOnce.Do(func() { genResult, genSkip, genErr = generate() })
	if genSkip != "" {
		need(t, genSkip)
	}
	if genErr != nil {
		t.Fatal(genErr)
	}
	return genResult
}

// repoRoot is the directory of this module's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// gobindTool returns the gobind binary and the x/mobile version it was
// built from (its generated code needs that version's bind/seq).
func gobindTool(root string) (path, version, skip string) {
	path = os.Getenv("DELTASYNC_GOBIND")
	if path == "" {
		path = filepath.Join(root, ".bin", "gobind")
	}
	if _, err := os.Stat(path); err != nil {
		return "", "", fmt.Sprintf("gobind not installed (%v): run scripts/test, or set DELTASYNC_GOBIND", err)
	}
	out, err := exec.Command("go", "version", "-m", path).Output()
	if err != nil {
		return "", "", fmt.Sprintf("go version -m %s: %v", path, err)
	}
	m := regexp.MustCompile(`(?m)^\s*mod\s+golang\.org/x/mobile\s+(\S+)`).FindSubmatch(out)
	if m == nil {
		return "", "", fmt.Sprintf("%s is not gobind from golang.org/x/mobile:\n%s", path, out)
	}
	return path, string(m[1]), ""
}

func generate() (*generated, string, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, "", err
	}
	gobind, version, skip := gobindTool(root)
	if skip != "" {
		return nil, skip, nil
	}
	if scratchDir, err = os.MkdirTemp("", "deltasync-bind-"); err != nil {
		return nil, "", err
	}
	g := &generated{
		module: filepath.Join(scratchDir, "module"),
		java:   filepath.Join(scratchDir, "java"),
		objc:   filepath.Join(scratchDir, "objc"),
	}
	if err := scratchModule(g.module, root, version); err != nil {
		return nil, "", err
	}
	runs := []struct{ out, lang, flag string }{
		{g.java, "go,java", "-javapkg=" + javaPkg},
		{g.objc, "go,objc", "-prefix=" + objcPrefix},
	}
	for _, r := range runs {
		cmd := exec.Command(gobind, "-lang="+r.lang, r.flag, "-outdir="+r.out, pkgPath)
		cmd.Dir = g.module
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			return nil, "", fmt.Errorf("gobind -lang=%s: %v\n%s", r.lang, err, out)
		}
	}
	return g, "", nil
}

// scratchModule writes a module that requires this tree (by a replace)
// and golang.org/x/mobile at version: gobind loads the package to bind and
// x/mobile's support files through it, and the JNI library builds in it.
// Our own go.mod stays free of x/mobile.
func scratchModule(dir, root, version string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	goMod := fmt.Sprintf(`module deltasyncbind

go 1.26

require (
	github.com/deltasync/deltasync v0.0.0
	golang.org/x/mobile %s
)

replace github.com/deltasync/deltasync => %s
`, version, root)
	imports := `package deltasyncbind

import (
	_ "github.com/deltasync/deltasync/client/mobile"
	_ "golang.org/x/mobile/bind"
	_ "golang.org/x/mobile/bind/seq"
)
`
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		return err
	}
	for name, content := range map[string]string{"go.mod": goMod, "imports.go": imports, "go.sum": string(sum)} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	cmd := exec.Command("go", "mod", "tidy")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go mod tidy in the binding module: %v\n%s", err, out)
	}
	return nil
}

// TestBindingsSkipNothing is issue 12's first acceptance: gobind binds
// every exported function, method, type, field, constant and variable of
// the façade, for Java and for Objective-C. gobind does not fail on what
// it cannot bind: it writes a "skipped" comment into the generated code
// and leaves the item out, so those lines are what this test looks for.
func TestBindingsSkipNothing(t *testing.T) {
	g := bindings(t)
	var skipped []string
	files := 0
	for _, out := range []string{g.java, g.objc} {
		err := filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			files++
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "skipped") {
					rel, _ := filepath.Rel(filepath.Dir(out), path)
					skipped = append(skipped, rel+": "+strings.TrimSpace(line))
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(skipped) > 0 {
		t.Errorf("gobind skipped %d item(s):\n%s", len(skipped), strings.Join(skipped, "\n"))
	}
	// The check must see real output: the classes and the header.
	for _, f := range []string{
		filepath.Join(g.java, "java", "io", "deltasync", "mobile", "Client.java"),
		filepath.Join(g.objc, "src", "gobind", objcPrefix+"Mobile.objc.h"),
	} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("gobind output lacks %s: %v", f, err)
		}
	}
	t.Logf("%d generated files checked", files)
}
