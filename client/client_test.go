package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

func openTest(t *testing.T, dir string) *Client {
	t.Helper()
	c, err := Open(dir, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// install makes recs the synced version (without a server: cut into
// chunks of the client's own, state.Store.InstallRecords).
func install(t *testing.T, c *Client, version uint64, recs map[string]string) {
	t.Helper()
	keys := slices.Sorted(maps.Keys(recs))
	src := func(yield func(string, []byte) error) error {
		for _, k := range keys {
			if err := yield(k, []byte(recs[k])); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := c.store.InstallRecords(context.Background(), version, snapshot.DefaultChunkerParams(), src, nil); err != nil {
		t.Fatal(err)
	}
	c.installed(&state.Installed{Version: version, Full: true, AllKeys: true})
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, c *Client, key string) string {
	t.Helper()
	v, err := c.Get(key)
	if errors.Is(err, ErrNotFound) {
		return "<absent>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func scanAll(t *testing.T, c *Client, prefix string) []string {
	t.Helper()
	var out []string
	err := c.Scan(prefix, func(k string, v []byte) bool {
		out = append(out, k+"="+string(v))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReadYourOwnWrites(t *testing.T) {
	c := openTest(t, t.TempDir())
	install(t, c, 3, map[string]string{
		"tasks/1": `{"state":"open","title":"a"}`,
		"tasks/2": `{"state":"open","title":"b"}`,
		"tasks/3": `[1,2]`,
		"users/1": `"ann"`,
	})
	mustDo(t, c.Merge("tasks/1", []byte(`{"state":"done"}`)))
	mustDo(t, c.Merge("tasks/1", []byte(`{"title":null, "by":"ann"}`)))
	mustDo(t, c.Delete("tasks/2"))
	mustDo(t, c.Put("tasks/2", []byte(` {"state" : "new"} `)))
	mustDo(t, c.Merge("tasks/2", []byte(`{"n":1.0}`)))
	mustDo(t, c.Delete("tasks/3"))
	mustDo(t, c.Merge("tasks/4", []byte(`{"a":{"b":null,"c":1}}`))) // absent counts as {}
	mustDo(t, c.Put("tasks/10", []byte(`true`)))
	mustDo(t, c.Put("tasks", []byte(`0`)))
	mustDo(t, c.Delete("users/9")) // not present anywhere: allowed, invisible

	for key, want := range map[string]string{
		"tasks/1": `{"by":"ann","state":"done"}`,
		"tasks/2": `{"n":1.0,"state":"new"}`,
		"tasks/3": `<absent>`,
		"tasks/4": `{"a":{"c":1}}`,
		"users/1": `"ann"`,
		"users/9": `<absent>`,
	} {
		if got := get(t, c, key); got != want {
			t.Errorf("Get(%s) = %s, want %s", key, got, want)
		}
	}

	got := scanAll(t, c, "tasks/")
	want := []string{
		`tasks/1={"by":"ann","state":"done"}`,
		`tasks/10=true`,
		`tasks/2={"n":1.0,"state":"new"}`,
		`tasks/4={"a":{"c":1}}`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Scan(tasks/) =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	all := scanAll(t, c, "")
	if len(all) != 6 || all[0] != "tasks=0" || all[5] != `users/1="ann"` {
		t.Errorf("Scan(\"\") = %q", all)
	}
	// Early stop.
	n := 0
	mustDo(t, c.Scan("", func(string, []byte) bool { n++; return n < 2 }))
	if n != 2 {
		t.Errorf("Scan visited %d keys after returning false at 2", n)
	}
	// Pending edits stay on top of a newer version.
	install(t, c, 4, map[string]string{"tasks/1": `{"state":"open","prio":1}`, "tasks/3": `[3]`})
	if got, want := get(t, c, "tasks/1"), `{"by":"ann","prio":1,"state":"done"}`; got != want {
		t.Errorf("after new version Get(tasks/1) = %s, want %s", got, want)
	}
	if got := get(t, c, "tasks/3"); got != "<absent>" {
		t.Errorf("after new version Get(tasks/3) = %s, want absent", got)
	}
	if s := c.Status(); s.LocalVersion != 4 || s.PendingEdits != 10 {
		t.Errorf("status = %+v, want version 4 and 10 pending edits", s)
	}
}

func TestScanAcrossBatchesAndWritesInCallback(t *testing.T) {
	c := openTest(t, t.TempDir())
	recs := map[string]string{}
	for i := 0; i < 3*scanBatchKeys; i++ {
		recs[fmt.Sprintf("r/%05d", i)] = fmt.Sprint(i)
	}
	install(t, c, 1, recs)
	// Edits interleaved with the records: every 7th deleted, new keys between.
	for i := 0; i < 3*scanBatchKeys; i += 7 {
		mustDo(t, c.Delete(fmt.Sprintf("r/%05d", i)))
		mustDo(t, c.Put(fmt.Sprintf("r/%05d-x", i), []byte(`"x"`)))
	}
	var keys []string
	err := c.Scan("r/", func(k string, v []byte) bool {
		keys = append(keys, k)
		if len(keys) == 10 {
			// Writing from inside the callback must not deadlock.
			if err := c.Put("other/key", []byte(`1`)); err != nil {
				t.Error(err)
			}
		}
		return true
	})
	mustDo(t, err)
	var want []string
	for i := 0; i < 3*scanBatchKeys; i++ {
		if i%7 == 0 {
			want = append(want, fmt.Sprintf("r/%05d-x", i))
		} else {
			want = append(want, fmt.Sprintf("r/%05d", i))
		}
	}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("Scan returned %d keys, want %d (first diff somewhere in %q...)", len(keys), len(want), keys[:5])
	}
}

func TestExportSortedAndMerged(t *testing.T) {
	c := openTest(t, t.TempDir())
	install(t, c, 1, map[string]string{"b": `{"x":1}`, "a": `1`, "c": `"<c>"`})
	mustDo(t, c.Merge("b", []byte(`{"y":2}`)))
	mustDo(t, c.Delete("a"))
	mustDo(t, c.Put("a/\"q\"", []byte(`[ 1, 2 ]`)))
	var buf bytes.Buffer
	mustDo(t, c.Export(&buf))
	want := `{"key":"a/\"q\"","value":[1,2]}
{"key":"b","value":{"x":1,"y":2}}
{"key":"c","value":"<c>"}
`
	if buf.String() != want {
		t.Errorf("Export =\n%s\nwant\n%s", buf.String(), want)
	}
}

func pendingSeqs(t *testing.T, c *Client) []string {
	t.Helper()
	edits, err := c.pendingEdits()
	mustDo(t, err)
	var out []string
	for _, e := range edits {
		out = append(out, fmt.Sprintf("%d:%s:%s", e.Seq, e.Op, e.Key))
	}
	return out
}

func TestQueueSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, DefaultOptions())
	mustDo(t, err)
	mustDo(t, c.Put("k/1", []byte(`{"a":1}`)))
	mustDo(t, c.Merge("k/1", []byte(`{"b":2}`)))
	mustDo(t, c.Delete("k/2"))
	mustDo(t, c.Put("k/0", []byte(`0`)))
	before := pendingSeqs(t, c)
	mustDo(t, c.Close())
	mustDo(t, c.Close()) // a second Close is harmless
	if err := c.Put("k/9", []byte(`9`)); err == nil {
		t.Error("Put after Close succeeded")
	}

	c = openTest(t, dir)
	after := pendingSeqs(t, c)
	want := []string{"1:put:k/1", "2:merge:k/1", "3:delete:k/2", "4:put:k/0"}
	if !reflect.DeepEqual(before, want) || !reflect.DeepEqual(after, want) {
		t.Errorf("queue before close %q, after reopen %q, want %q", before, after, want)
	}
	if got := get(t, c, "k/1"); got != `{"a":1,"b":2}` {
		t.Errorf("Get(k/1) after reopen = %s", got)
	}
	s := c.Status()
	if s.PendingEdits != 4 || s.PendingBytes <= 0 {
		t.Errorf("status after reopen: %d edits, %d bytes", s.PendingEdits, s.PendingBytes)
	}
	// New edits continue the sequence.
	mustDo(t, c.Put("k/3", []byte(`3`)))
	if got := pendingSeqs(t, c); got[len(got)-1] != "5:put:k/3" {
		t.Errorf("next edit after reopen: %q", got)
	}
}

func TestOpenHeldByAnotherFailsFast(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir)
	start := time.Now()
	c2, err := Open(dir, DefaultOptions())
	if err == nil {
		c2.Close()
		t.Fatal("second Open of a held directory succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("error %v does not match ErrLocked", err)
	}
	if want := "client state in " + dir + " is in use by another process"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v", d)
	}
}

func TestOpenCorruptFile(t *testing.T) {
	for name, content := range map[string][]byte{
		"garbage": bytes.Repeat([]byte("not a bbolt file "), 2000),
		"zeros":   make([]byte, 32<<10),
		"short":   []byte("x"),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFile)
			mustDo(t, os.WriteFile(path, content, 0o600))
			c, err := Open(dir, DefaultOptions())
			if err == nil {
				c.Close()
				t.Fatal("Open of a corrupt state file succeeded")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("error %v does not match ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
		})
	}
}

func TestInvalidEditsRejected(t *testing.T) {
	c := openTest(t, t.TempDir())
	install(t, c, 1, map[string]string{"arr": `[1]`, "obj": `{"a":1}`, "nul": `null`})
	mustDo(t, c.Put("ok", []byte(`1`)))
	before := pendingSeqs(t, c)
	big := append(append([]byte(`"`), bytes.Repeat([]byte("a"), snapshot.MaxValueLen)...), '"')
	for name, err := range map[string]error{
		"empty key":         c.Put("", []byte(`1`)),
		"NUL key":           c.Put("a\x00b", []byte(`1`)),
		"long key":          c.Put(strings.Repeat("k", snapshot.MaxKeyLen+1), []byte(`1`)),
		"bad UTF-8 key":     c.Delete("a\xffb"),
		"bad JSON":          c.Put("k", []byte(`{"a":`)),
		"empty value":       c.Put("k", nil),
		"trailing data":     c.Put("k", []byte(`1 2`)),
		"oversize value":    c.Put("k", big),
		"merge bad JSON":    c.Merge("k", []byte(`{`)),
		"merge array patch": c.Merge("obj", []byte(`[1]`)),
		"merge null patch":  c.Merge("obj", []byte(`null`)),
		"merge onto array":  c.Merge("arr", []byte(`{"a":1}`)),
		"merge onto null":   c.Merge("nul", []byte(`{"a":1}`)),
		"merge onto number": c.Merge("ok", []byte(`{"a":1}`)),
		"merge oversize":    c.Merge("obj", []byte(`{"b":`+string(big)+`}`)),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v, want ErrInvalid", name, err)
		}
	}
	if got := pendingSeqs(t, c); !reflect.DeepEqual(got, before) {
		t.Errorf("queue changed by rejected edits: %q, want %q", got, before)
	}
	if s := c.Status(); s.PendingEdits != 1 {
		t.Errorf("status counts %d pending edits, want 1", s.PendingEdits)
	}
	// The largest allowed value is accepted.
	big = big[:snapshot.MaxValueLen]
	big[len(big)-1] = '"'
	mustDo(t, c.Put("big", big))
	if v, err := c.Get("big"); err != nil || len(v) != snapshot.MaxValueLen {
		t.Errorf("Get(big) = %d bytes, %v", len(v), err)
	}
}

func TestBeginPatchStableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, DefaultOptions())
	mustDo(t, err)
	install(t, c, 7, nil)
	if p, _, err := c.beginPatch(); err != nil || p != nil {
		t.Fatalf("beginPatch with an empty queue = %v, %v; want nil", p, err)
	}
	for i := 0; i < 3; i++ {
		mustDo(t, c.Put(fmt.Sprintf("k/%d", i), []byte(`1`)))
	}
	p1, edits, err := c.beginPatch()
	mustDo(t, err)
	if p1 == nil || len(p1.ID) != 32 || p1.Base != 7 || !reflect.DeepEqual(p1.Seqs, []uint64{1, 2, 3}) || len(edits) != 3 {
		t.Fatalf("beginPatch = %+v with %d edits", p1, len(edits))
	}
	mustDo(t, c.Put("k/late", []byte(`2`))) // not part of the patch in flight
	mustDo(t, c.Close())

	c = openTest(t, dir)
	p2, edits2, err := c.beginPatch()
	mustDo(t, err)
	if !reflect.DeepEqual(p1, p2) {
		t.Errorf("patch after reopen = %+v, want %+v", p2, p1)
	}
	if len(edits2) != 3 || edits2[0].Key != "k/0" || edits2[2].Key != "k/2" {
		t.Errorf("edits after reopen = %+v", edits2)
	}
}

func TestBeginPatchHonoursPolicyLimits(t *testing.T) {
	c := openTest(t, t.TempDir())
	mustDo(t, c.setPolicy(wire.Policy{OfflineMode: true, MaxPatchOps: 2}))
	for i := 0; i < 5; i++ {
		mustDo(t, c.Put(fmt.Sprintf("k/%d", i), []byte(`1`)))
	}
	p, _, err := c.beginPatch()
	mustDo(t, err)
	if !reflect.DeepEqual(p.Seqs, []uint64{1, 2}) {
		t.Errorf("patch seqs = %v, want [1 2] under MaxPatchOps 2", p.Seqs)
	}
	mustDo(t, c.completePatch(p.ID, 0, p.Seqs, nil))
	mustDo(t, c.setPolicy(wire.Policy{OfflineMode: true, MaxPatchBytes: 1})) // smaller than any edit
	p, _, err = c.beginPatch()
	mustDo(t, err)
	if !reflect.DeepEqual(p.Seqs, []uint64{3}) {
		t.Errorf("patch seqs = %v, want [3]: at least one edit however small the limit", p.Seqs)
	}
}

func TestCompletePatch(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, DefaultOptions())
	mustDo(t, err)
	install(t, c, 5, map[string]string{"a": `{"v":0}`, "b": `{"v":0}`})
	mustDo(t, c.Merge("a", []byte(`{"v":1}`))) // seq 1
	mustDo(t, c.Put("b", []byte(`{"v":2}`)))   // seq 2
	mustDo(t, c.Put("c", []byte(`3`)))         // seq 3
	p, _, err := c.beginPatch()
	mustDo(t, err)
	mustDo(t, c.Merge("a", []byte(`{"w":4}`))) // seq 4, after the patch was formed

	if err := c.completePatch("not-the-id", 6, []uint64{1}, nil); !errors.Is(err, errNoPatch) {
		t.Errorf("completePatch with a wrong id: %v, want errNoPatch", err)
	}
	if err := c.completePatch(p.ID, 6, []uint64{4}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("completePatch naming an edit outside the patch: %v, want ErrInvalid", err)
	}
	conflict := Conflict{Key: "a", Op: OpMerge, Policy: wire.PolicyClientWins,
		ClientValue: []byte(`{"v":1}`), ServerValue: []byte(`{"v":9}`)}
	mustDo(t, c.completePatch(p.ID, 6, []uint64{1, 3}, []Conflict{conflict}))

	if got := pendingSeqs(t, c); !reflect.DeepEqual(got, []string{"2:put:b", "4:merge:a"}) {
		t.Errorf("queue after completePatch = %q", got)
	}
	// Applied edits stay visible until version 6 arrives.
	if got := get(t, c, "a"); got != `{"v":1,"w":4}` {
		t.Errorf("Get(a) before pulling version 6 = %s", got)
	}
	if got := get(t, c, "c"); got != `3` {
		t.Errorf("Get(c) before pulling version 6 = %s", got)
	}
	if err := c.completePatch(p.ID, 6, nil, nil); !errors.Is(err, errNoPatch) {
		t.Errorf("second completePatch: %v, want errNoPatch", err)
	}
	mustDo(t, c.Close())

	c = openTest(t, dir)
	// Version 6 holds what the server made of the patch (server kept its own
	// v for a, say); the sent edits are dropped, pending ones stay on top.
	install(t, c, 6, map[string]string{"a": `{"v":9}`, "b": `{"v":0}`, "c": `30`})
	if got := get(t, c, "a"); got != `{"v":9,"w":4}` {
		t.Errorf("Get(a) after version 6 = %s", got)
	}
	if got := get(t, c, "c"); got != `30` {
		t.Errorf("Get(c) after version 6 = %s", got)
	}
	if got := get(t, c, "b"); got != `{"v":2}` {
		t.Errorf("Get(b) after version 6 = %s (edit 2 is still pending)", got)
	}
	// The next patch holds exactly the remaining edits, under a new id.
	p2, _, err := c.beginPatch()
	mustDo(t, err)
	if p2.ID == p.ID || p2.Base != 6 || !reflect.DeepEqual(p2.Seqs, []uint64{2, 4}) {
		t.Errorf("next patch = %+v", p2)
	}

	cs, err := c.Conflicts()
	mustDo(t, err)
	if len(cs) != 1 || cs[0].PatchID != p.ID || cs[0].Key != "a" || string(cs[0].ServerValue) != `{"v":9}` || cs[0].At == 0 {
		t.Fatalf("Conflicts() = %+v", cs)
	}
	if c.ConflictCount() != 1 || c.Status().Conflicts != 1 {
		t.Errorf("conflict count %d, status %d", c.ConflictCount(), c.Status().Conflicts)
	}
	if cf, err := c.ConflictAt(0); err != nil || !reflect.DeepEqual(*cf, cs[0]) {
		t.Errorf("ConflictAt(0) = %+v, %v", cf, err)
	}
	if _, err := c.ConflictAt(1); !errors.Is(err, ErrNotFound) {
		t.Errorf("ConflictAt(1) error %v, want ErrNotFound", err)
	}

	// A conflict that arrives after the app looked survives an ack up to
	// what it saw.
	mustDo(t, c.completePatch(p2.ID, 7, p2.Seqs, []Conflict{{Key: "b", Op: OpPut}}))
	mustDo(t, c.AckConflictsThrough(cs[0].ID))
	cs2, err := c.Conflicts()
	mustDo(t, err)
	if len(cs2) != 1 || cs2[0].Key != "b" || c.Status().Conflicts != 1 {
		t.Errorf("after ack through %d: %+v", cs[0].ID, cs2)
	}
	mustDo(t, c.AckConflicts())
	if n := c.ConflictCount(); n != 0 {
		t.Errorf("%d conflicts after AckConflicts", n)
	}
}

func TestFailedInstallLeavesTheOldVersion(t *testing.T) {
	c := openTest(t, t.TempDir())
	install(t, c, 5, map[string]string{"a": `1`, "b": `2`})
	boom := errors.New("boom")
	_, err := c.store.InstallRecords(context.Background(), 7, snapshot.DefaultChunkerParams(), func(yield func(string, []byte) error) error {
		if err := yield("x", []byte(`1`)); err != nil {
			return err
		}
		return boom
	}, nil)
	if !errors.Is(err, boom) {
		t.Errorf("install with a failing source: %v", err)
	}
	if got := scanAll(t, c, ""); !reflect.DeepEqual(got, []string{"a=1", "b=2"}) || c.Status().LocalVersion != 5 {
		t.Errorf("records after failed install: %q, version %d", got, c.Status().LocalVersion)
	}
	if r, err := c.store.Verify(state.CheckOptions{}); err != nil || r.Stored != r.Distinct {
		t.Errorf("state after failed install: %+v, %v (what it stored must be gone)", r, err)
	}
}

func TestConcurrentPuts(t *testing.T) {
	c := openTest(t, t.TempDir())
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := c.Put(fmt.Sprintf("w%d/%03d", w, i), []byte(fmt.Sprint(i))); err != nil {
					t.Error(err)
					return
				}
				_ = c.Status()
				if _, err := c.Get(fmt.Sprintf("w%d/%03d", w, i)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	edits, err := c.pendingEdits()
	mustDo(t, err)
	if len(edits) != workers*each || c.Status().PendingEdits != workers*each {
		t.Fatalf("%d queued edits, status says %d, want %d", len(edits), c.Status().PendingEdits, workers*each)
	}
	// Seqs are dense, and each worker's edits keep their order.
	last := map[string]string{}
	for i, e := range edits {
		if e.Seq != uint64(i+1) {
			t.Fatalf("edit %d has seq %d", i, e.Seq)
		}
		w := e.Key[:strings.IndexByte(e.Key, '/')]
		if e.Key <= last[w] {
			t.Errorf("worker %s: %s queued after %s", w, e.Key, last[w])
		}
		last[w] = e.Key
	}
	if n := len(scanAll(t, c, "")); n != workers*each {
		t.Errorf("Scan sees %d keys", n)
	}
}

func TestWakeHook(t *testing.T) {
	c := openTest(t, t.TempDir())
	var n int
	c.SetWakeHook(func() { n++ })
	mustDo(t, c.Put("a", []byte(`1`)))
	mustDo(t, c.Delete("a"))
	if err := c.Put("", []byte(`1`)); err == nil {
		t.Fatal("empty key accepted")
	}
	mustDo(t, c.SetOfflineMode(false))
	if n != 3 {
		t.Errorf("wake hook called %d times, want 3 (two edits, one mode change; not for a rejected edit)", n)
	}
}

func TestServerSettingsPersist(t *testing.T) {
	dir := t.TempDir()
	opts := DefaultOptions()
	opts.ServerURL, opts.Token = "https://sync.example", "tok"
	c, err := Open(dir, opts)
	mustDo(t, err)
	mustDo(t, c.Close())
	c = openTest(t, dir)
	if c.ServerURL() != "https://sync.example" || c.Token() != "tok" {
		t.Errorf("stored server %q token %q", c.ServerURL(), c.Token())
	}
	mustDo(t, c.SetServer("https://other", "t2"))
	if c.ServerURL() != "https://other" || c.Token() != "t2" {
		t.Errorf("after SetServer: %q %q", c.ServerURL(), c.Token())
	}
}

func TestPutNullValue(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, DefaultOptions())
	mustDo(t, err)
	mustDo(t, c.Put("n", []byte(` null `)))
	if got := get(t, c, "n"); got != "null" {
		t.Errorf("Get(n) = %s, want null (a present key holding null)", got)
	}
	mustDo(t, c.Close())
	c = openTest(t, dir)
	if got := get(t, c, "n"); got != "null" {
		t.Errorf("Get(n) after reopen = %s, want null", got)
	}
}
