package client

import (
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/deltasync/deltasync/wire"
)

type recorder struct {
	mu  sync.Mutex
	got []Status
}

func (r *recorder) fn(s Status) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
}

func (r *recorder) states() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.got {
		out = append(out, s.State+"/"+s.Reason)
	}
	return out
}

func TestStatusListeners(t *testing.T) {
	c := openTest(t, t.TempDir())
	if s := c.Status(); s.State != StateSyncing || s.Message != "not synced yet" {
		t.Errorf("initial status %s/%s %q, want syncing, not synced yet", s.State, s.Reason, s.Message)
	}
	var r recorder
	id := c.OnStatus(r.fn)

	mustDo(t, c.setState(StateSyncing, "", ""))
	mustDo(t, c.setState(StateSyncing, "", "")) // no change: no call
	mustDo(t, c.setState(StateSynced, "", ""))
	mustDo(t, c.SetOfflineMode(true))
	mustDo(t, c.Put("k", []byte(`1`)))
	mustDo(t, c.setState(StateError, ReasonAuth, "token expired")) // hidden by offline mode...
	mustDo(t, c.SetOfflineMode(false))                             // ...until it is off
	mustDo(t, c.setState(StateOffline, ReasonNoConnection, ""))

	want := []string{
		"syncing/", "synced/", "offline/offline_mode",
		"offline/offline_mode", // the Put: pending edits changed
		"error/auth", "offline/no_connection",
	}
	if got := r.states(); !reflect.DeepEqual(got, want) {
		t.Errorf("listener saw %q, want %q", got, want)
	}
	if s := r.got[3]; s.PendingEdits != 1 || s.PendingBytes == 0 {
		t.Errorf("status after Put: %+v", s)
	}
	if s := r.got[1]; s.LastSyncedUnix == 0 {
		t.Error("synced status has no LastSyncedUnix")
	}
	if s := r.got[4]; s.Message != "token expired" {
		t.Errorf("error status message %q", s.Message)
	}

	c.RemoveStatusListener(id)
	mustDo(t, c.setState(StateSyncing, "", ""))
	if n := len(r.states()); n != len(want) {
		t.Errorf("removed listener called: %d calls", n)
	}
}

func TestStatusListenerMayWriteAndSeesOrder(t *testing.T) {
	c := openTest(t, t.TempDir())
	var seen []int
	var once sync.Once
	c.OnStatus(func(s Status) {
		seen = append(seen, s.PendingEdits)
		// A listener that edits re-enters the client: no deadlock, and its
		// own change is delivered after the current one.
		once.Do(func() { mustDo(t, c.Put("from-listener", []byte(`1`))) })
	})
	var r recorder
	c.AddStatusListener(listenerFunc(func(s *Status) { r.fn(*s) }))
	mustDo(t, c.Put("a", []byte(`1`)))
	mustDo(t, c.Put("b", []byte(`1`)))
	if !reflect.DeepEqual(seen, []int{1, 2, 3}) {
		t.Errorf("first listener saw pending edits %v, want [1 2 3]", seen)
	}
	if len(r.got) != 3 || r.got[2].PendingEdits != 3 {
		t.Errorf("second listener saw %d statuses", len(r.got))
	}
}

type listenerFunc func(*Status)

func (f listenerFunc) StatusChanged(s *Status) { f(s) }

func TestProgressAndTraffic(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, DefaultOptions())
	mustDo(t, err)
	mustDo(t, c.setState(StateSyncing, "", ""))
	c.setServerHead(9)
	c.setProgress(100, 1000, 1, 10)
	c.addBytes(100, 0)
	s := c.Status()
	if s.ProgressBytesDone != 100 || s.ProgressBytesTotal != 1000 || s.ProgressChunksDone != 1 || s.ProgressChunksTotal != 10 || s.ServerHead != 9 {
		t.Errorf("status during download: %+v", s)
	}
	c.addBytes(900, 50)
	mustDo(t, c.setState(StateSynced, "", ""))
	s = c.Status()
	if s.ProgressBytesTotal != 0 || s.BytesDownSinceOnline != 1000 || s.BytesUpSinceOnline != 50 || s.BytesDownTotal != 1000 {
		t.Errorf("status after download: %+v", s)
	}
	mustDo(t, c.setState(StateOffline, ReasonNoConnection, ""))
	c.addBytes(1, 1) // counted after the last flush: Close must persist it
	mustDo(t, c.Close())

	c = openTest(t, dir)
	s = c.Status()
	if s.BytesDownTotal != 1001 || s.BytesUpTotal != 51 || s.BytesDownSinceOnline != 1001 || s.ServerHead != 9 || s.LastSyncedUnix == 0 {
		t.Errorf("counters after reopen: %+v", s)
	}
	// Coming back online starts a new online period.
	mustDo(t, c.setState(StateSyncing, "", ""))
	c.addBytes(5, 0)
	if s := c.Status(); s.BytesDownSinceOnline != 5 || s.BytesDownTotal != 1006 {
		t.Errorf("after reconnect: since online %d, total %d", s.BytesDownSinceOnline, s.BytesDownTotal)
	}
}

func TestOfflineModeAndPolicyPersist(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, DefaultOptions())
	mustDo(t, err)
	if c.OfflineMode() {
		t.Error("offline mode on in a new state directory")
	}
	c.touchSynced() // as if a sync had completed: offline mode needs one
	mustDo(t, c.SetOfflineMode(true))
	pol := wire.Policy{OfflineMode: true, ConflictPolicy: wire.PolicyServerWins, MaxOfflineSeconds: 3600, MaxPendingBytes: 1 << 20}
	mustDo(t, c.setPolicy(pol))
	mustDo(t, c.Close())

	c = openTest(t, dir)
	if !c.OfflineMode() {
		t.Error("offline mode lost on reopen")
	}
	if s := c.Status(); s.State != StateOffline || s.Reason != ReasonOfflineMode {
		t.Errorf("status with offline mode: %s/%s", s.State, s.Reason)
	}
	if got := c.Policy(); got != pol {
		t.Errorf("Policy() = %+v, want %+v", got, pol)
	}
}

func TestStatusExplainsMaxOffline(t *testing.T) {
	c := openTest(t, t.TempDir())
	mustDo(t, c.setPolicy(wire.Policy{OfflineMode: true, MaxOfflineSeconds: 3600}))
	mustDo(t, c.setState(StateSynced, "", ""))
	c.st.mu.Lock()
	c.st.c.LastSyncedUnix -= 7200 // last in touch two hours ago
	c.st.mu.Unlock()
	if s := c.Status(); s.State != StateSynced {
		t.Errorf("while connected: %s/%s %q", s.State, s.Reason, s.Message)
	}
	mustDo(t, c.setState(StateOffline, ReasonNoConnection, ""))
	s := c.Status()
	if s.State != StateError || s.Reason != ReasonPolicy || !strings.Contains(s.Message, "longer than the 1h0m0s your organization allows") {
		t.Errorf("offline past the limit: %s/%s %q", s.State, s.Reason, s.Message)
	}
	mustDo(t, c.SetOfflineMode(true))
	if s := c.Status(); s.Reason != ReasonPolicy {
		t.Errorf("offline mode past the limit: %s/%s %q", s.State, s.Reason, s.Message)
	}
}
