package mobile

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deltasync/deltasync/client"
)

func mustOpen(t *testing.T, dir string, cfg *Config) *Client {
	t.Helper()
	c, err := Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConfigRefusesBadNumbers: every bad input gets a clear error and
// changes nothing (no state directory is created).
func TestConfigRefusesBadNumbers(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"LongPollSeconds", func(c *Config) { c.LongPollSeconds = -1 }},
		{"RetryMaxMillis", func(c *Config) { c.RetryMaxMillis = 1 << 40 }},
		{"CallTimeoutMillis", func(c *Config) { c.CallTimeoutMillis = -5 }},
	} {
		cfg := NewConfig()
		tc.set(cfg)
		dir := filepath.Join(t.TempDir(), "state")
		_, err := Open(dir, cfg)
		if ErrorCode(err) != CodeInvalid || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s: Open = %v (code %q), want invalid naming the field", tc.name, err, ErrorCode(err))
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the refused Open created the state directory", tc.name)
		}
	}
	if _, err := Open("", nil); ErrorCode(err) != CodeInvalid {
		t.Errorf("Open without a directory: %v", err)
	}
}

// TestFacadeReadsWritesAndLists: nil for a missing key, lists with
// zero values out of range, the change listener, closed clients.
func TestFacadeReadsWritesAndLists(t *testing.T) {
	c := mustOpen(t, t.TempDir(), nil)
	var got []*Change
	c.AddChangeListener(changeFunc(func(ch *Change) { got = append(got, ch) }))
	if v, err := c.Get("tasks/1"); v != nil || err != nil {
		t.Fatalf("Get of a missing key = %q, %v; want nil, nil", v, err)
	}
	if err := c.Put("tasks/1", []byte(`{"a": 1}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.Put("tasks/2", []byte(`{`)); ErrorCode(err) != CodeInvalid {
		t.Fatalf("Put of bad JSON: %v (code %q)", err, ErrorCode(err))
	}
	if v, _ := c.Get("tasks/1"); string(v) != `{"a":1}` {
		t.Fatalf("Get = %s", v)
	}
	if len(got) != 1 || got[0].Source != ChangeLocal || got[0].KeyCount() != 1 || got[0].Key(0) != "tasks/1" ||
		got[0].CollectionName(0) != "tasks" || got[0].CollectionChanges(0) != 1 || got[0].Key(5) != "" || got[0].CollectionChanges(-1) != 0 {
		t.Fatalf("change events: %+v", got)
	}
	page, err := c.Scan("tasks/", "", 10)
	if err != nil || page.Len() != 1 || page.More || page.Last != "tasks/1" || page.Key(1) != "" || page.Value(-1) != nil {
		t.Fatalf("Scan = %+v, %v", page, err)
	}
	if _, err := c.Scan("tasks/", "", 0); ErrorCode(err) != CodeInvalid {
		t.Fatalf("Scan with limit 0: %v", err)
	}
	keys := NewKeyList()
	keys.Add("tasks/1")
	keys.Add("tasks/9")
	many, err := c.GetMany(keys)
	if err != nil || many.Len() != 2 || !many.Found(0) || many.Found(1) || many.Found(2) {
		t.Fatalf("GetMany = %+v, %v", many, err)
	}
	if n, err := c.Count(""); n != 1 || err != nil {
		t.Fatalf("Count = %d, %v", n, err)
	}
	if err := c.SetOfflineMode(true); ErrorCode(err) != CodeNotSynced {
		t.Fatalf("offline mode before a sync: %v (code %q)", err, ErrorCode(err))
	}
	if s := c.Status(); s.PendingEdits != 1 || s.State != StateSyncing {
		t.Fatalf("status: %+v", s)
	}
	out := filepath.Join(t.TempDir(), "export.ndjson")
	if err := c.ExportFile(out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != `{"key":"tasks/1","value":{"a":1}}`+"\n" {
		t.Fatalf("export: %q", b)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get("tasks/1"); ErrorCode(err) != CodeClosed {
		t.Fatalf("Get after Close: %v (code %q)", err, ErrorCode(err))
	}
	if err := c.Put("tasks/1", []byte(`1`)); ErrorCode(err) != CodeClosed {
		t.Fatalf("Put after Close: %v", err)
	}
}

type changeFunc func(*Change)

func (f changeFunc) OnChange(c *Change) { f(c) }

type tokenFunc func() (string, error)

func (f tokenFunc) Token() (string, error) { return f() }

// holdServer accepts requests and answers none until the test ends.
func holdServer(t *testing.T) (url string, entered chan struct{}) {
	entered = make(chan struct{}, 16)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(release)
		srv.Close()
	})
	return srv.URL, entered
}

// TestCancelAndCallTimeout: without a context, Cancel ends a sync in
// progress and CallTimeoutMillis bounds one; both are classified.
func TestCancelAndCallTimeout(t *testing.T) {
	url, entered := holdServer(t)
	cfg := NewConfig()
	cfg.ServerURL, cfg.Token = url, "t"
	c := mustOpen(t, t.TempDir(), cfg)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Sync()
		errc <- err
	}()
	<-entered
	c.Cancel()
	if err := <-errc; ErrorCode(err) != CodeCancelled {
		t.Fatalf("sync after Cancel: %v (code %q)", err, ErrorCode(err))
	}
	// Cancel ends what runs, not what comes later.
	cfg.CallTimeoutMillis = 50
	c.Close()
	c = mustOpen(t, t.TempDir(), cfg)
	start := time.Now()
	_, err := c.Pull()
	if ErrorCode(err) != CodeTimeout {
		t.Fatalf("pull past CallTimeoutMillis: %v (code %q) after %v", err, ErrorCode(err), time.Since(start))
	}
}

// TestTokenProviderErrorIsAuth: the app's provider failing is CodeAuth,
// with the app's reason in the message.
func TestTokenProviderErrorIsAuth(t *testing.T) {
	url, _ := holdServer(t)
	cfg := NewConfig()
	cfg.ServerURL = url
	cfg.TokenProvider = tokenFunc(func() (string, error) { return "", errors.New("signed out") })
	c := mustOpen(t, t.TempDir(), cfg)
	_, err := c.Sync()
	if ErrorCode(err) != CodeAuth || !strings.Contains(err.Error(), "signed out") {
		t.Fatalf("sync with a failing provider: %v (code %q)", err, ErrorCode(err))
	}
	if s := c.Status(); s.State != StateError || s.Reason != ReasonAuth {
		t.Fatalf("status %s/%s", s.State, s.Reason)
	}
}

func TestErrorCodes(t *testing.T) {
	for err, want := range map[error]string{
		nil:                                 CodeNone,
		client.ErrNotSynced:                 CodeNotSynced,
		fmt.Errorf("x: %w", client.ErrAuth): CodeAuth,
		client.ErrTooLarge:                  CodeTooLarge,
		fmt.Errorf("wipe: %w: %w", client.ErrPendingEdits, client.ErrNoConnection): CodePendingEdits,
		errors.New("something else"): CodeOther,
	} {
		if got := ErrorCode(err); got != want {
			t.Errorf("ErrorCode(%v) = %q, want %q", err, got, want)
		}
	}
}
