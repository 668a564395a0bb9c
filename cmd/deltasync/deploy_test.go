package main

import (
	"bufio"
	"flag"
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeMatchesFlags parses the serve command line of the shipped
// docker-compose.yml against the real flag set, so the documentation cannot
// drift from the code.
func TestComposeMatchesFlags(t *testing.T) {
	data, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	cmd := compose.Services["deltasync"].Command
	if len(cmd) == 0 || cmd[0] != "serve" {
		t.Fatalf("deltasync service command %q does not run serve", cmd)
	}
	e := &env{getenv: func(string) string { return "" }}
	so, _, fs := serveFlags(e)
	if err := parseFlags(fs, cmd[1:]); err != nil {
		t.Fatalf("compose command %q: %v", cmd, err)
	}
	if !strings.HasPrefix(so.Store, "s3://") {
		t.Fatalf("compose store %q is not S3", so.Store)
	}
}

// TestSampleConfigNamesRealVariables checks that every DELTASYNC_* variable
// in deploy/deltasync.env is one a flag of serve reads.
func TestSampleConfigNamesRealVariables(t *testing.T) {
	f, err := os.Open("../../deploy/deltasync.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e := &env{getenv: func(string) string { return "" }}
	known := map[string]bool{}
	_, _, fs := serveFlags(e)
	fs.VisitAll(func(fl *flag.Flag) {
		for _, w := range strings.FieldsFunc(fl.Usage, func(r rune) bool { return r == ' ' || r == '(' || r == ')' || r == ',' }) {
			if strings.HasPrefix(w, "DELTASYNC_") {
				known[w] = true
			}
		}
	})
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "#"))
		name, _, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(name, "DELTASYNC_") || strings.Contains(name, " ") {
			continue
		}
		n++
		if !known[name] {
			t.Errorf("deploy/deltasync.env sets %s, which no flag reads", name)
		}
	}
	if n < 5 {
		t.Fatalf("only %d variables found in the sample config", n)
	}
}

// TestComposePinsMinIORelease: the compose file names a MinIO release, not a
// moving tag, so what an operator starts is what the README describes.
func TestComposePinsMinIORelease(t *testing.T) {
	data, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image string `yaml:"image"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	img := compose.Services["minio"].Image
	if !strings.HasPrefix(img, "minio/minio:RELEASE.") {
		t.Fatalf("compose MinIO image %q: want a pinned minio/minio:RELEASE.… tag", img)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), img) {
		t.Errorf("README does not name the compose MinIO image %s", img)
	}
}
