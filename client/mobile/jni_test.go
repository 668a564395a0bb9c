package mobile

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/client"
	"github.com/deltasync/deltasync/internal/testkit"
	"github.com/deltasync/deltasync/server"
)

// Issue 12 item 2: the generated Java, compiled with a JDK, runs a small
// app through JNI against a real `deltasync serve`.
//
// gobind's runtime is made for Android, yet the JNI glue it generates is
// plain JNI and runs on a Linux JVM once three Android-only pieces are
// stood in for (nothing of the bindings is changed):
//   - the Go and C files carry an _android suffix, which only GOOS=android
//     builds: they are copied under other names, and __GOBIND_ANDROID__
//     (set by a "#cgo android" line) is passed in CGO_CFLAGS;
//   - the C glue includes <android/log.h> and links -llog: a header that
//     logs to stderr (testdata/jni/include) and an empty liblog.a stand in;
//     the NDK's jni.h types AttachCurrentThread's env as JNIEnv**, the JDK's
//     as void**, so -Wno-incompatible-pointer-types (the glue builds with
//     -Werror);
//   - go.Seq names android.content.Context (only in setContext, which
//     Android apps call): an empty class stands in at compile time.
// Seq's static initialiser then loads libgojni.so with System.loadLibrary
// from java.library.path, as on Android.

// jdk is a JDK's tools and JNI headers.
type jdk struct{ javac, java, home string }

func findJDK(t *testing.T) jdk {
	t.Helper()
	home := os.Getenv("JAVA_HOME")
	if home == "" {
		javac, err := exec.LookPath("javac")
		if err != nil {
			need(t, "no JDK: javac is not on PATH and JAVA_HOME is not set")
		}
		if javac, err = filepath.EvalSymlinks(javac); err != nil {
			t.Fatal(err)
		}
		home = filepath.Dir(filepath.Dir(javac))
	}
	j := jdk{javac: filepath.Join(home, "bin", "javac"), java: filepath.Join(home, "bin", "java"), home: home}
	for _, f := range []string{j.javac, j.java, filepath.Join(home, "include", "jni.h")} {
		if _, err := os.Stat(f); err != nil {
			need(t, fmt.Sprintf("JDK at %s is incomplete: %v", home, err))
		}
	}
	return j
}

func run(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// buildJNILibrary builds libgojni.so (gobind's Go side and JNI glue) for
// Linux and returns its directory.
func buildJNILibrary(t *testing.T, g *generated, j jdk) string {
	t.Helper()
	src := filepath.Join(g.java, "src", "gobind")
	pkg := filepath.Join(g.module, "gojni")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".h") {
			name = strings.Replace(name, "_android.", "_jni.", 1)
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkg, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shim, err := filepath.Abs(filepath.Join("testdata", "jni", "include"))
	if err != nil {
		t.Fatal(err)
	}
	libdir := t.TempDir()
	run(t, libdir, nil, "ar", "rcs", "liblog.a") // -llog: nothing is needed from it
	env := []string{
		"CGO_ENABLED=1",
		"CGO_CFLAGS=-D__GOBIND_ANDROID__ -Wno-incompatible-pointer-types -I" + shim +
			" -I" + filepath.Join(j.home, "include") + " -I" + filepath.Join(j.home, "include", "linux"),
		"CGO_LDFLAGS=-L" + libdir,
		"GOFLAGS=-mod=mod",
	}
	run(t, g.module, env, "go", "build", "-buildmode=c-shared", "-o", filepath.Join(libdir, "libgojni.so"), "./gojni")
	return libdir
}

// compileJava compiles the generated classes, the Context stand-in and
// the check program, and returns the class directory.
func compileJava(t *testing.T, g *generated, j jdk) string {
	t.Helper()
	classes := t.TempDir()
	var files []string
	for _, root := range []string{filepath.Join(g.java, "java"), filepath.Join("testdata", "jni", "java"), filepath.Join("testdata", "java")} {
		err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
			if err == nil && strings.HasSuffix(path, ".java") {
				files = append(files, path)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	run(t, ".", nil, j.javac, append([]string{"-d", classes, "-Xlint:-options"}, files...)...)
	return classes
}

const (
	serveSecret = "mobile-jni-test-jwt-secret-0123456789abcdef"
	org, user   = "acme", "alice"
)

// serve is a `deltasync serve` process.
type serve struct {
	t     *testing.T
	url   string
	admin string
}

func startServe(t *testing.T) *serve {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "deltasync")
	run(t, root, nil, "go", "build", "-o", bin, "./cmd/deltasync")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--addr", addr, "--store", "file://"+t.TempDir(), "--jwt-secret", serveSecret)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	s := &serve{t: t, url: "http://" + addr}
	if s.admin, err = server.MintToken([]byte(serveSecret), server.Claims{Admin: true}, time.Hour); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not come up: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *serve) do(method, path, body string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
}

// upload makes records (key → JSON) the user's next version.
func (s *serve) upload(records map[string]string) {
	s.t.Helper()
	var b strings.Builder
	for k, v := range records {
		fmt.Fprintf(&b, "{\"key\":%q,\"value\":%s}\n", k, v)
	}
	s.do(http.MethodPut, "/v1/admin/orgs/"+org+"/users/"+user+"/dataset", b.String())
}

func (s *serve) token() string {
	s.t.Helper()
	tok, err := server.MintToken([]byte(serveSecret), server.Claims{Org: org, User: user}, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// TestJavaAppThroughJNI runs testdata/java/DeltasyncCheck.java on the
// generated bindings through JNI against a real `deltasync serve`; the
// server changes data when the program asks (STEP lines).
func TestJavaAppThroughJNI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a JNI library and the server, runs a JVM")
	}
	g := bindings(t)
	j := findJDK(t)
	lib := buildJNILibrary(t, g, j)
	classes := compileJava(t, g, j)
	srv := startServe(t)
	srv.do(http.MethodPut, "/v1/admin/orgs/"+org, `{"offline_mode":true,"conflict_policy":"client-wins"}`)
	data := map[string]string{"tasks/1": `{"s":"open"}`, "tasks/2": `{"s":"open"}`, "tasks/3": `{"s":"open"}`}
	srv.upload(data)

	state := filepath.Join(t.TempDir(), "alice")
	cmd := exec.Command(j.java, "-Djava.library.path="+lib, "-cp", classes, "DeltasyncCheck", state, srv.url, srv.token())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testkit.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	steps := map[string]func(){
		"edit-one": func() {
			data["tasks/2"] = `{"s":"done"}`
			srv.upload(data)
		},
		"insert-500": func() {
			data["tasks/4"] = `{"s":"from java"}` // the program's put, now on the server
			for i := 0; i < 300; i++ {
				data[fmt.Sprintf("forms/%03d", i)] = `{"a":1}`
			}
			for i := 0; i < 200; i++ {
				data[fmt.Sprintf("photos/%03d", i)] = `{"p":1}`
			}
			srv.upload(data)
		},
	}
	ok := false
	timeout := time.NewTimer(5 * time.Minute) // a hang guard, not an assertion
	defer timeout.Stop()
	for !ok {
		select {
		case line, open := <-lines:
			if !open {
				cmd.Wait()
				t.Fatalf("the Java program ended without OK\nstderr:\n%s", stderr.String())
			}
			t.Log("java: " + line)
			switch {
			case line == "OK":
				ok = true
			case strings.HasPrefix(line, "STEP "):
				step, found := steps[strings.TrimPrefix(line, "STEP ")]
				if !found {
					t.Fatalf("unknown step %q", line)
				}
				step()
				io.WriteString(stdin, "GO\n")
			case strings.HasPrefix(line, "FAIL"):
				t.Fatalf("the Java program: %s\nstderr:\n%s", line, stderr.String())
			}
		case <-timeout.C:
			t.Fatalf("the Java program hangs\nstderr:\n%s", stderr.String())
		}
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("java: %v\nstderr:\n%s", err, stderr.String())
	}

	// The edit the Java app made is on the server: another device gets it.
	opts := client.DefaultOptions()
	opts.ServerURL, opts.Token = srv.url, srv.token()
	other, err := client.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Pull(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := other.Get("tasks/4"); err != nil || string(v) != `{"s":"from java"}` {
		t.Fatalf("tasks/4 on another device: %s, %v", v, err)
	}
}
