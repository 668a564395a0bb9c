package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// The offline story: sync, go offline, make 50 edits (some to records the
// server changes meanwhile), come back online; every edit reaches the
// server or is reported as a conflict with both values, and the status
// moves synced → offline → syncing → synced.
func TestOfflineStory(t *testing.T) {
	ts := newTestServer(t)
	var recs []gen.Record
	for i := 0; i < 40; i++ {
		recs = append(recs, gen.Record{Key: fmt.Sprintf("tasks/%02d", i), Value: []byte(fmt.Sprintf(`{"state":"open","title":"t%d","n":%d}`, i, i))})
	}
	ts.upload("ann", recs)
	c := ts.client("ann", nil)
	log := watch(c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mustDo(t, c.Start(ctx))
	defer c.Stop()
	log.waitFor(t, c, "first sync", func(s Status) bool { return s.State == StateSynced && s.LocalVersion > 0 })

	mustDo(t, c.SetOfflineMode(true))
	// 50 edits: 20 to tasks 0..9 (the server changes tasks 0..4 meanwhile,
	// 0..1 on the same field), 30 to new records.
	for i := 0; i < 10; i++ {
		mustDo(t, c.Merge(fmt.Sprintf("tasks/%02d", i), []byte(`{"state":"done"}`)))
		mustDo(t, c.Merge(fmt.Sprintf("tasks/%02d", i), []byte(fmt.Sprintf(`{"note":"offline %d"}`, i))))
	}
	for i := 0; i < 30; i++ {
		mustDo(t, c.Put(fmt.Sprintf("forms/%02d", i), []byte(fmt.Sprintf(`{"answer":%d}`, i))))
	}
	if s := c.Status(); s.State != StateOffline || s.Reason != ReasonOfflineMode || s.PendingEdits != 50 {
		t.Fatalf("offline status: %+v", s)
	}
	server := slices.Clone(recs)
	for i := 0; i < 5; i++ {
		field := `"title":"server %d"`
		if i < 2 {
			field = `"state":"blocked by server %d"`
		}
		server[i].Value = []byte(fmt.Sprintf(`{"state":"open","title":"t%d","n":%d,`, i, i) + fmt.Sprintf(field, i) + `}`)
		if i < 2 {
			server[i].Value = []byte(fmt.Sprintf(`{"title":"t%d","n":%d,`, i, i) + fmt.Sprintf(field, i) + `}`)
		}
	}
	serverHead := ts.upload("ann", server)

	mustDo(t, c.SetOfflineMode(false))
	log.waitFor(t, c, "synced after coming back", func(s Status) bool {
		return s.State == StateSynced && s.PendingEdits == 0 && s.LocalVersion > serverHead
	})
	states := log.states()
	want := []string{StateSynced, StateOffline, StateSyncing, StateSynced}
	if !containsInOrder(states, want) {
		t.Errorf("states %v do not pass through %v", states, want)
	}
	// synced → offline directly, and offline → syncing directly.
	for i := 1; i < len(states); i++ {
		if states[i-1] == StateOffline && states[i] != StateSyncing {
			t.Errorf("after offline came %s (states %v)", states[i], states)
		}
	}

	final := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(ts.export("ann")), "\n") {
		var r struct {
			Key   string         `json:"key"`
			Value map[string]any `json:"value"`
		}
		mustDo(t, json.Unmarshal([]byte(line), &r))
		final[r.Key] = r.Value
	}
	conflicts, err := c.Conflicts()
	mustDo(t, err)
	t.Logf("states %v; %d conflicts reported", states, len(conflicts))
	conflicted := map[string]Conflict{}
	for _, cf := range conflicts {
		conflicted[cf.Key] = cf
		if len(cf.ClientValue) == 0 || len(cf.ServerValue) == 0 {
			t.Errorf("conflict on %s lacks a side: %+v", cf.Key, cf)
		}
	}
	for i := 0; i < 10; i++ {
		k := fmt.Sprintf("tasks/%02d", i)
		v := final[k]
		if v["note"] != fmt.Sprintf("offline %d", i) {
			t.Errorf("%s on the server: %v (the offline note is missing)", k, v)
		}
		switch {
		case v["state"] == "done": // applied (client wins where both changed)
		case conflicted[k].Key == k: // reported
		default:
			t.Errorf("%s: state %v on the server and no conflict reported", k, v["state"])
		}
		if i < 2 && conflicted[k].Key != k {
			t.Errorf("%s changed on both sides (same field) but no conflict reported", k)
		}
		if i >= 2 && i < 5 && v["title"] != fmt.Sprintf("server %d", i) {
			t.Errorf("%s lost the server's change: %v", k, v)
		}
	}
	for i := 0; i < 30; i++ {
		if v := final[fmt.Sprintf("forms/%02d", i)]; v["answer"] != float64(i) {
			t.Errorf("forms/%02d on the server: %v", i, v)
		}
	}
	if got, want := exportOf(t, c), ts.export("ann"); got != want {
		t.Errorf("client view differs from the server after sync")
	}
	if s := c.Status(); s.BytesUpSinceOnline == 0 || s.BytesDownSinceOnline == 0 || s.Conflicts != len(conflicts) {
		t.Errorf("counters after coming back: %+v", s)
	}
}

func containsInOrder(got, want []string) bool {
	i := 0
	for _, s := range got {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}

// The loop long-polls: a version uploaded while it waits arrives without
// any call, and an edit made during the wait is pushed at once.
func TestLoopLongPollAndWake(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	c := ts.client("ann", nil)
	c.opts.LongPollSeconds = 30 // an edit must cut the wait short
	log := watch(c)
	mustDo(t, c.Start(context.Background()))
	defer c.Stop()
	log.waitFor(t, c, "first sync", func(s Status) bool { return s.State == StateSynced && s.LocalVersion == 1 })
	v2 := ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`2`)}})
	log.waitFor(t, c, "the new version", func(s Status) bool { return s.LocalVersion == v2 && s.State == StateSynced })
	if got := get(t, c, "a"); got != "2" {
		t.Errorf("a = %s after the long poll", got)
	}
	mustDo(t, c.Put("b", []byte(`3`)))
	log.waitFor(t, c, "the edit pushed", func(s Status) bool { return s.PendingEdits == 0 && s.LocalVersion > v2 })
	if !strings.Contains(ts.export("ann"), `{"key":"b","value":3}`) {
		t.Error("edit not on the server")
	}
	if err := c.Start(context.Background()); err != ErrRunning {
		t.Errorf("second Start: %v", err)
	}
}

// Server errors are retried with backoff; the status reports syncing
// while retrying and error/server once the retries are used up; recovery
// syncs.
func TestLoopRetriesServerErrors(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	log := watch(c)
	mustDo(t, c.Put("b", []byte(`2`)))
	ft.fail503.Store(5)
	mustDo(t, c.Start(context.Background()))
	defer c.Stop()
	log.waitFor(t, c, "synced after the outage", func(s Status) bool { return s.State == StateSynced && s.PendingEdits == 0 })
	log.mu.Lock()
	var sawRetry, sawServerError bool
	for _, s := range log.all {
		if s.State == StateSyncing && strings.Contains(s.Message, "retrying") {
			sawRetry = true
		}
		if s.State == StateError && s.Reason == ReasonServer {
			sawServerError = true
		}
	}
	log.mu.Unlock()
	if !sawRetry || !sawServerError {
		t.Errorf("retry shown: %v, error/server shown: %v (states %v)", sawRetry, sawServerError, log.states())
	}
	if ft.fail503.Load() != 0 {
		t.Errorf("%d failures left unconsumed", ft.fail503.Load())
	}
}

// Connectivity lost: offline/no_connection and no requests; back: syncs.
func TestLoopConnectivity(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	log := watch(c)
	mustDo(t, c.Start(context.Background()))
	defer c.Stop()
	log.waitFor(t, c, "first sync", func(s Status) bool { return s.State == StateSynced })
	c.NotifyConnectivity(false)
	if s := c.Status(); s.State != StateOffline || s.Reason != ReasonNoConnection {
		t.Errorf("status without a network: %+v", s)
	}
	mustDo(t, c.Put("b", []byte(`2`)))
	ft.mu.Lock()
	posts := len(ft.posts)
	ft.mu.Unlock()
	c.NotifyConnectivity(true)
	log.waitFor(t, c, "synced after reconnect", func(s Status) bool { return s.State == StateSynced && s.PendingEdits == 0 })
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if posts != 0 || len(ft.posts) != 1 {
		t.Errorf("patches posted: %d while disconnected, %d in all", posts, len(ft.posts))
	}
}

func TestBackoffGrowsWithJitter(t *testing.T) {
	c := openTest(t, t.TempDir())
	c.opts.RetryMinMillis, c.opts.RetryMaxMillis = 100, 1000
	for _, tc := range []struct {
		failures int
		lo, hi   int64 // milliseconds
	}{{1, 50, 100}, {2, 100, 200}, {3, 200, 400}, {4, 400, 800}, {5, 500, 1000}, {30, 500, 1000}} {
		for i := 0; i < 50; i++ {
			d := c.backoff(tc.failures).Milliseconds()
			if d < tc.lo || d >= tc.hi {
				t.Fatalf("backoff(%d) = %dms, want in [%d, %d)", tc.failures, d, tc.lo, tc.hi)
			}
		}
	}
}

// blockingTransport holds every request until its context ends.
type blockingTransport struct{ entered chan struct{} }

func (b *blockingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b.entered <- struct{}{}
	<-req.Context().Done()
	return nil, req.Context().Err()
}

// Turning offline mode on stops network use at once, also a sync the app
// started itself; nothing is installed or lost.
func TestOfflineModeCancelsRunningSync(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "a", Value: []byte(`1`)}})
	bt := &blockingTransport{entered: make(chan struct{}, 1)}
	c := ts.client("ann", bt)
	c.touchSynced() // as if a sync had completed before: offline mode needs one
	mustDo(t, c.Put("b", []byte(`2`)))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Sync(context.Background())
		errc <- err
	}()
	<-bt.entered
	mustDo(t, c.SetOfflineMode(true))
	if err := <-errc; err == nil {
		t.Fatal("sync finished while its request was held")
	}
	if s := c.Status(); s.State != StateOffline || s.Reason != ReasonOfflineMode || s.PendingEdits != 1 || s.LocalVersion != 0 {
		t.Errorf("status after cancel: %+v", s)
	}
	if _, err := c.Pull(context.Background()); !errors.Is(err, ErrOfflineMode) {
		t.Errorf("pull in offline mode: %v", err)
	}
	c.NotifyConnectivity(false)
	mustDo(t, c.SetOfflineMode(false))
	if _, err := c.Pull(context.Background()); !errors.Is(err, ErrNoConnection) {
		t.Errorf("pull without a connection: %v", err)
	}
}
