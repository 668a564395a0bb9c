package layers_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

const module = "github.com/deltasync/deltasync"

// pkg is what `go list -json` says about one package of the module.
type pkg struct {
	ImportPath   string
	Dir          string
	Doc          string
	Imports      []string // direct, non-test
	Deps         []string // transitive, non-test
	GoFiles      []string
	TestGoFiles  []string
	XTestGoFiles []string
}

func (p *pkg) rel() string { return strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/") }

// listPackages lists the module's packages once per test binary.
var listPackages = func() func(t *testing.T) []*pkg {
	var (
		once sync.Once
		pkgs []*pkg
		err  error
	)
	return func(t *testing.T) []*pkg {
		t.Helper()
		once.Do(func() { pkgs, err = goList() })
		if err != nil {
			t.Fatal(err)
		}
		return pkgs
	}
}()

func goList() ([]*pkg, error) {
	cmd := exec.Command("go", "list", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []*pkg
	for dec := json.NewDecoder(bytes.NewReader(out)); dec.More(); {
		p := new(pkg)
		if err := dec.Decode(p); err != nil {
			return nil, err
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		return nil, fmt.Errorf("go list found %d packages; is the test run inside the module?", len(pkgs))
	}
	return pkgs, nil
}

// under reports whether the module-relative path rel is dir or below it.
func under(rel, dir string) bool { return rel == dir || strings.HasPrefix(rel, dir+"/") }

func hasPrefixIn(list []string, prefix string) string {
	for _, s := range list {
		if s == prefix || strings.HasPrefix(s, prefix+"/") {
			return s
		}
	}
	return ""
}

// TestImportRules: who may import what, directly (third-party libraries)
// or at all (the module's own layers).
func TestImportRules(t *testing.T) {
	direct := []struct {
		lib     string
		allowed func(rel string) bool
		why     string
	}{
		{"github.com/minio/minio-go", func(r string) bool { return r == "snapshot/s3store" }, "only the S3 backend talks to S3"},
		{"github.com/valyala/fasthttp", func(r string) bool { return r == "server" }, "only the server serves HTTP with fasthttp"},
		{"go.etcd.io/bbolt", func(r string) bool { return under(r, "client") }, "only the client's local state uses bbolt"},
		{"github.com/golang-jwt/jwt", func(r string) bool { return !under(r, "cmd") }, "cmd mints and checks tokens through server"},
		{"github.com/go-jose/go-jose", func(r string) bool { return !under(r, "cmd") }, "cmd mints and checks tokens through server"},
	}
	deps := []struct {
		from, to string
		why      string
	}{
		{"server", "client", "server and client never import each other"},
		{"client", "server", "server and client never import each other"},
		{"server", "internal/gen", "the server does not link the test-data generator"},
		{"wire", "server", "wire sits below server and client"},
		{"wire", "client", "wire sits below server and client"},
		{"diff", "wire", "diff sits below wire"},
		{"snapshot", "diff", "snapshot imports none of the others"},
		{"snapshot", "wire", "snapshot imports none of the others"},
		{"snapshot", "server", "snapshot imports none of the others"},
		{"snapshot", "client", "snapshot imports none of the others"},
		{"snapshot", "batch", "snapshot imports none of the others"},
		{"snapshot", "gc", "snapshot imports none of the others"},
	}
	for _, p := range listPackages(t) {
		rel := p.rel()
		for _, r := range direct {
			if imp := hasPrefixIn(p.Imports, r.lib); imp != "" && !r.allowed(rel) {
				t.Errorf("%s imports %s: %s", rel, imp, r.why)
			}
		}
		for _, r := range deps {
			if !under(rel, r.from) {
				continue
			}
			if dep := hasPrefixIn(p.Deps, module+"/"+r.to); dep != "" {
				t.Errorf("%s depends on %s: %s", rel, strings.TrimPrefix(dep, module+"/"), r.why)
			}
		}
	}
}

// TestEveryPackageHasADoc: go doc of every package says what it is for.
func TestEveryPackageHasADoc(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc", p.rel())
		}
	}
}

// configExempt are the packages outside cmd that may read the process
// environment: test kits, which find their test servers through it.
var configExempt = map[string]bool{"internal/s3test": true}

// envFuncs are the os functions that read the process environment.
var envFuncs = []string{"Getenv", "LookupEnv", "Environ", "ExpandEnv"}

// TestCmdOwnsConfiguration: library packages take options structs; only
// cmd registers flags and reads the process environment (issue 16). A
// non-test file outside cmd neither imports "flag" nor calls os.Getenv,
// os.LookupEnv, os.Environ or os.ExpandEnv.
func TestCmdOwnsConfiguration(t *testing.T) {
	fset := token.NewFileSet()
	for _, p := range listPackages(t) {
		rel := p.rel()
		if under(rel, "cmd") || configExempt[rel] {
			continue
		}
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, pos := range configReads(f) {
				t.Errorf("%s: %s: configuration belongs in cmd; take it in the package's options", fset.Position(pos.at), pos.what)
			}
		}
	}
}

type configRead struct {
	at   token.Pos
	what string
}

// configReads finds a file's import of "flag" and its calls of the os
// functions that read the environment (under whatever name os is imported).
func configReads(f *ast.File) []configRead {
	var out []configRead
	osName := ""
	for _, imp := range f.Imports {
		switch imp.Path.Value {
		case `"flag"`:
			out = append(out, configRead{imp.Pos(), `imports "flag"`})
		case `"os"`:
			osName = "os"
			if imp.Name != nil {
				osName = imp.Name.Name
			}
		}
	}
	if osName == "" {
		return out
	}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); ok && id.Name == osName && slices.Contains(envFuncs, sel.Sel.Name) {
			out = append(out, configRead{sel.Pos(), "reads the environment (os." + sel.Sel.Name + ")"})
		}
		return true
	})
	return out
}

// storeMethods are the methods of snapshot.Store, which only storetest
// and the backends implement.
var storeMethods = []string{"Get", "GetRange", "Put", "PutIfAbsent", "PutIfMatch", "Stat", "List", "ListAfter", "Delete"}

// TestOneFakeStore: test files build their fake stores on
// storetest.Faults (function fields) instead of implementing Store methods
// on a type of their own. A method with a Store method's name and a
// context first counts as one.
func TestOneFakeStore(t *testing.T) {
	fset := token.NewFileSet()
	for _, p := range listPackages(t) {
		for _, name := range slices.Concat(p.TestGoFiles, p.XTestGoFiles) {
			path := filepath.Join(p.Dir, name)
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Recv == nil || !slices.Contains(storeMethods, fd.Name.Name) || !takesContext(fd) {
					continue
				}
				t.Errorf("%s: %s implements Store.%s: build the fake on storetest.Faults", fset.Position(fd.Pos()), recvName(fd), fd.Name.Name)
			}
		}
	}
}

func takesContext(fd *ast.FuncDecl) bool {
	params := fd.Type.Params.List
	if len(params) == 0 {
		return false
	}
	sel, ok := params[0].Type.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Context"
}

func recvName(fd *ast.FuncDecl) string {
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name
	}
	return "?"
}

// maxFuncLines is the longest a non-test function may be (issue 16): a
// longer one has phases, and each phase is a function named for it.
const maxFuncLines = 80

// longFuncs are the functions over maxFuncLines that are still to be split
// (in packages being rewritten by others when this rule came). Split one,
// then remove it here; never add one.
var longFuncs = map[string]bool{}

// TestFunctionsAreShort: no non-test function is longer than maxFuncLines
// lines, the allowed ones aside.
func TestFunctionsAreShort(t *testing.T) {
	fset := token.NewFileSet()
	seen := map[string]bool{}
	for _, p := range listPackages(t) {
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
				if n <= maxFuncLines {
					continue
				}
				id := p.rel() + " " + fd.Name.Name
				if fd.Recv != nil {
					id = p.rel() + " " + recvName(fd) + "." + fd.Name.Name
				}
				seen[id] = true
				if !longFuncs[id] {
					t.Errorf("%s: %s has %d lines, more than %d: split it into named phases", fset.Position(fd.Pos()), id, n, maxFuncLines)
				}
			}
		}
	}
	for id := range longFuncs {
		if !seen[id] {
			t.Logf("%s is no longer too long: remove it from longFuncs", id)
		}
	}
}
