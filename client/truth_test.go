package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deltasync/deltasync/internal/gen"
)

// switchTransport reaches the server until down is set; then every dial is
// refused, as when the server is stopped. It counts the dials refused.
type switchTransport struct {
	base    *http.Transport
	down    atomic.Bool
	refused atomic.Int64
}

func newSwitchTransport() *switchTransport {
	s := &switchTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
	dial := s.base.DialContext
	s.base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if s.down.Load() {
			s.refused.Add(1)
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused (test: server stopped)")}
		}
		return dial(ctx, network, addr)
	}
	return s
}

func (s *switchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return s.base.RoundTrip(req)
}

// stop makes the server unreachable, also on connections already open.
func (s *switchTransport) stop() {
	s.down.Store(true)
	s.base.CloseIdleConnections()
}

// fakeClock is an injectable clock for the status.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func useClock(c *Client) *fakeClock {
	f := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	c.st.mu.Lock()
	c.st.now = f.now
	c.st.mu.Unlock()
	return f
}

// TestNewProcessReportsLastKnownState protects issue 12 item 4: after a
// successful sync a new process reported offline (no_connection) although
// nothing had failed. The last known state is persisted: synced at its
// version and time, or the last error with its reason, until the new
// process talks to the server.
func TestNewProcessReportsLastKnownState(t *testing.T) {
	ts := newTestServer(t)
	head := ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	dir := t.TempDir()
	c := ts.client("ann", nil, dir)
	_, err := c.Sync(context.Background())
	mustDo(t, err)
	synced := c.Status()
	mustDo(t, c.Close())

	c = openTest(t, dir)
	s := c.Status()
	if s.State != StateSynced || s.Reason != "" || s.LocalVersion != head || s.LastSyncedUnix != synced.LastSyncedUnix || s.LastSyncedUnix == 0 {
		t.Fatalf("new process after a sync: %s/%s version %d synced at %d; want synced at version %d, %d",
			s.State, s.Reason, s.LocalVersion, s.LastSyncedUnix, head, synced.LastSyncedUnix)
	}
	if s.LastContactUnix == 0 {
		t.Error("no last contact time after a sync")
	}

	// The last error is reported too, with its reason.
	mustDo(t, c.SetServer(ts.url, "not-a-token"))
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrAuth) {
		t.Fatalf("sync with a bad token: %v", err)
	}
	mustDo(t, c.Close())
	c = openTest(t, dir)
	if s := c.Status(); s.State != StateError || s.Reason != ReasonAuth || !strings.Contains(s.Message, "token") {
		t.Fatalf("new process after an auth error: %s/%s %q", s.State, s.Reason, s.Message)
	}
}

// TestFreshClientIsNotOffline: a client that never synced has not failed
// to reach anyone: it is on its way to its first sync, not offline.
func TestFreshClientIsNotOffline(t *testing.T) {
	c := openTest(t, t.TempDir())
	if s := c.Status(); s.State == StateOffline || s.State == StateError {
		t.Fatalf("fresh client: %s/%s %q", s.State, s.Reason, s.Message)
	}
}

// TestOutageIsOneStateChange protects issue 12 item 4: while the server was
// unreachable the state flickered syncing → offline → syncing on every
// retry, and every failed attempt reset the since-online counters. Now an
// outage is one change (synced → offline, after the first failed attempt)
// however often the loop retries, the message says when the next attempt
// is, and the counters keep the last online period.
func TestOutageIsOneStateChange(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	sw := newSwitchTransport()
	c := ts.client("ann", sw)
	log := watch(c)
	mustDo(t, c.Start(context.Background()))
	defer c.Stop()
	online := log.waitFor(t, c, "first sync", func(s Status) bool { return s.State == StateSynced && s.LocalVersion > 0 })
	if online.BytesDownSinceOnline == 0 {
		t.Fatalf("no traffic counted for the first sync: %+v", online)
	}
	log.mu.Lock()
	before := len(log.all)
	log.mu.Unlock()

	sw.stop()
	c.NotifyConnectivity(true) // ends the long poll: the loop tries again at once
	s := log.waitFor(t, c, "10 refused attempts", func(Status) bool { return sw.refused.Load() >= 10 })
	log.waitFor(t, c, "offline", func(s Status) bool { return s.State == StateOffline })

	log.mu.Lock()
	outage := append([]Status(nil), log.all[before:]...)
	log.mu.Unlock()
	var changes []string
	last := StateSynced + "/"
	for _, st := range outage {
		if cur := st.State + "/" + st.Reason; cur != last {
			changes = append(changes, cur)
			last = cur
		}
	}
	if len(changes) != 1 || changes[0] != StateOffline+"/"+ReasonNoConnection {
		t.Errorf("state changes over %d refused attempts: %v, want only offline/no_connection", sw.refused.Load(), changes)
	}
	s = c.Status()
	if !strings.Contains(s.Message, "retrying in") || s.NextRetryUnix == 0 {
		t.Errorf("offline status does not say when it retries: %q (next retry %d)", s.Message, s.NextRetryUnix)
	}
	if s.BytesDownSinceOnline != online.BytesDownSinceOnline || s.BytesUpSinceOnline != online.BytesUpSinceOnline {
		t.Errorf("failed attempts changed the since-online counters: down %d→%d, up %d→%d",
			online.BytesDownSinceOnline, s.BytesDownSinceOnline, online.BytesUpSinceOnline, s.BytesUpSinceOnline)
	}

	// Back: offline → syncing → synced, a new online period.
	sw.down.Store(false)
	c.NotifyConnectivity(true)
	s = log.waitFor(t, c, "synced again", func(s Status) bool { return s.State == StateSynced })
	if s.NextRetryUnix != 0 || strings.Contains(s.Message, "retrying") {
		t.Errorf("synced status still announces a retry: %q (next retry %d)", s.Message, s.NextRetryUnix)
	}
}

// TestFailedAttemptIsOneChange: an attempt that cannot reach the server
// goes from synced straight to offline, not through syncing (which would
// be two changes for one outage); an attempt that reaches it shows
// syncing, then synced.
func TestFailedAttemptIsOneChange(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	sw := newSwitchTransport()
	c := ts.client("ann", sw)
	_, err := c.Sync(context.Background())
	mustDo(t, err)
	var r recorder
	c.OnStatus(r.fn)
	sw.stop()
	for range 3 {
		if _, err := c.Sync(context.Background()); !errors.Is(err, ErrNoConnection) {
			t.Fatalf("sync with the server stopped: %v", err)
		}
	}
	if got := distinct(r.states()); len(got) != 1 || got[0] != StateOffline+"/"+ReasonNoConnection {
		t.Fatalf("three failed attempts from synced: states %v, want only offline/no_connection", got)
	}
	sw.down.Store(false)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"done"}`)}})
	_, err = c.Sync(context.Background())
	mustDo(t, err)
	want := []string{StateOffline + "/" + ReasonNoConnection, StateSyncing + "/", StateSynced + "/"}
	if got := distinct(r.states()); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("outage and recovery: states %v, want %v", got, want)
	}
}

// distinct drops consecutive repeats.
func distinct(states []string) []string {
	var out []string
	for _, s := range states {
		if len(out) == 0 || out[len(out)-1] != s {
			out = append(out, s)
		}
	}
	return out
}

// TestMaxOfflineAlarmCountsFromLastContact protects issue 12 item 4: the
// org's max_offline_seconds alarm is measured from the last successful
// contact with the server, and only raised once the device is known to be
// offline, never right after a successful sync nor in a new process that
// has not tried yet.
func TestMaxOfflineAlarmCountsFromLastContact(t *testing.T) {
	ts := newTestServer(t)
	ts.setPolicy(`{"offline_mode":true,"max_offline_seconds":60}`)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	sw := newSwitchTransport()
	dir := t.TempDir()
	c := ts.client("ann", sw, dir)
	clock := useClock(c)
	_, err := c.Sync(context.Background())
	mustDo(t, err)
	if s := c.Status(); s.State != StateSynced || s.LastContactUnix != clock.now().Unix() {
		t.Fatalf("after sync: %s/%s %q, last contact %d", s.State, s.Reason, s.Message, s.LastContactUnix)
	}

	clock.add(59 * time.Second)
	sw.stop()
	if _, err := c.Sync(context.Background()); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("sync with the server stopped: %v", err)
	}
	if s := c.Status(); s.State != StateOffline || s.Reason != ReasonNoConnection {
		t.Fatalf("offline 59 s after the last contact (limit 60): %s/%s %q", s.State, s.Reason, s.Message)
	}
	clock.add(2 * time.Second)
	if s := c.Status(); s.State != StateError || s.Reason != ReasonPolicy || !strings.Contains(s.Message, "1m1s") {
		t.Fatalf("offline 61 s after the last contact (limit 60): %s/%s %q", s.State, s.Reason, s.Message)
	}

	// A new process long after a successful sync has not failed yet: it
	// reports the last known state, no alarm.
	sw.down.Store(false)
	_, err = c.Sync(context.Background())
	mustDo(t, err)
	contact := c.Status().LastContactUnix
	mustDo(t, c.Close())
	c = openTest(t, dir)
	clock = useClock(c)
	clock.t = time.Unix(contact+3600, 0)
	if s := c.Status(); s.State != StateSynced {
		t.Fatalf("new process an hour after a sync: %s/%s %q, want the last known state, synced", s.State, s.Reason, s.Message)
	}
}

// TestOfflineModeRefusedBeforeFirstSync protects the rule that offline
// mode needs data to work on: switching it on before a sync completed is
// refused with a message saying so, and changes nothing.
func TestOfflineModeRefusedBeforeFirstSync(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", []gen.Record{{Key: "tasks/1", Value: []byte(`{"s":"open"}`)}})
	dir := t.TempDir()
	c := ts.client("ann", nil, dir)
	err := c.SetOfflineMode(true)
	if !errors.Is(err, ErrNotSynced) || !strings.Contains(err.Error(), "sync") {
		t.Fatalf("offline mode on a client that never synced: %v, want ErrNotSynced", err)
	}
	if c.OfflineMode() {
		t.Fatal("refused offline mode is on")
	}
	mustDo(t, c.Close())
	c = ts.client("ann", nil, dir)
	if c.OfflineMode() {
		t.Fatal("refused offline mode is on after reopening")
	}
	mustDo(t, c.SetOfflineMode(false)) // off is always allowed
	_, err = c.Sync(context.Background())
	mustDo(t, err)
	mustDo(t, c.SetOfflineMode(true))
	if !c.OfflineMode() {
		t.Fatal("offline mode not on after a completed sync")
	}
}
