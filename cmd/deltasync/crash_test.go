package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deltasync/deltasync/client"
	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/servertest"
	"github.com/deltasync/deltasync/server"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/fsstore"
)

// The crash-safety acceptance of issue 5: the client CLI, run as a process
// against a real server, is killed with SIGKILL at random points of edits
// (put, merge, delete), push, pull and the install of a pulled version.
// After every kill the state directory must open (`client status`) and
// verify, and every edit the CLI acknowledged must be in the queue or
// applied on the server exactly once; in the end one `sync` empties the
// queue and the server holds every acknowledged edit.
//
// Each edit is unique (put items/<n>, merge field e<n> into counters/<k>,
// delete one seeded record), so the server's change sets tell exactly which
// patch applied it: an edit found in two change sets was applied twice.
//
// 200 kills take about 15 s without the race detector. Under -race or
// -short the test stops after 40 (about 7 s); scripts/test runs the 200 once
// without -race, by the Big prefix. DELTASYNC_CRASH_SEED picks another
// random sequence.
func TestBigCrashSafetyKill9(t *testing.T) {
	kills := 200
	if testing.Short() || raceEnabled {
		kills = 40
	}
	seed := uint64(20240605)
	if s := os.Getenv("DELTASYNC_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("DELTASYNC_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d, %d kills", seed, kills)
	h := newCrashHarness(t, seed)

	landed := 0
	for iter := 0; landed < kills && iter < 10*kills; iter++ {
		if h.rng.IntN(10) == 0 {
			h.otherWriter() // gives pulls something to fetch and install
		}
		if h.step() {
			landed++
		}
		h.check(fmt.Sprintf("after step %d", iter))
	}
	if landed < kills {
		t.Errorf("only %d of %d SIGKILLs landed before their command ended", landed, kills)
	}
	h.logStats()
	h.finish()
}

const (
	crashOrg  = "acme"
	crashUser = "kim"
)

var crashChunkSecret = []byte("crash-test-chunk-secret-0123456789abcdef")

type crashHarness struct {
	t     *testing.T
	rng   *rand.Rand
	dir   string   // the client state directory under test
	env   []string // server, token, race settings for the CLI
	url   string
	store *fsstore.Store
	stop  func()

	edits   map[string]*crashEdit // every edit attempted, by name
	names   []string              // in the order attempted
	applied map[string][]appliedOp
	patches map[string]uint64 // patch id -> version its change set made
	scanned uint64            // change sets read up to this version
	records map[uint64]string // server version -> its records as NDJSON

	deletable []string // seeded keys the client may delete, each once
	otherKeys []string // seeded keys only the other writer changes
	nextEdit  int
	// localVersion is the client's version at the last check.
	localVersion uint64
	others       int

	took    map[string][]time.Duration // per command: its recent runs not killed
	history []string                   // what ran, for failure messages
	runs    map[string]*[2]int         // per command: completed, killed
}

// crashEdit is one edit the harness asked the CLI to make.
type crashEdit struct {
	name  string // "put items/0007", "merge counters/2 e0011", "delete <key>"
	acked bool   // the CLI exited 0
}

// appliedOp is one application of an edit found in a change set.
type appliedOp struct {
	patch   string
	version uint64
}

func newCrashHarness(t *testing.T, seed uint64) *crashHarness {
	t.Helper()
	storeDir := t.TempDir()
	st, err := fsstore.New(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, servertest.Options{Store: st, JWTSecret: []byte(replicaSecret),
		Configure: func(o *server.Options) { o.ChunkSecret = crashChunkSecret }})
	user := srv.UserToken(t, crashOrg, crashUser)
	h := &crashHarness{
		t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		dir: filepath.Join(t.TempDir(), "client"), url: srv.URL,
		store: st, stop: func() { srv.Close() },
		env: []string{"DELTASYNC_SERVER=" + srv.URL, "DELTASYNC_TOKEN=" + user,
			// A race-enabled child otherwise sleeps 1 s at exit.
			"GORACE=" + os.Getenv("GORACE") + " atexit_sleep_ms=0"},
		edits: map[string]*crashEdit{}, applied: map[string][]appliedOp{},
		patches: map[string]uint64{}, records: map[uint64]string{},
		took: map[string][]time.Duration{}, runs: map[string]*[2]int{},
	}
	srv.SetOrg(t, crashOrg, `{"offline_mode":true}`)
	// About 120 chunks: a full sync writes the chunk cache in two batches,
	// so a kill can land between them and the next pull resumes.
	recs := gen.Dataset(gen.Options{Size: 1 << 20, Seed: int64(seed)})
	var body []byte
	for _, r := range recs {
		body = snapshot.AppendNDJSONLine(body, r.Key, r.Value)
	}
	srv.Upload(t, crashOrg, crashUser, body)
	for i, r := range recs {
		if i%2 == 0 {
			h.deletable = append(h.deletable, r.Key)
		} else {
			h.otherKeys = append(h.otherKeys, r.Key)
		}
	}
	h.rng.Shuffle(len(h.deletable), func(i, j int) { h.deletable[i], h.deletable[j] = h.deletable[j], h.deletable[i] })
	return h
}

// cliRun is the outcome of one CLI process.
type cliRun struct {
	stdout, stderr string
	code           int
	killed         bool
	took           time.Duration
}

// run runs `deltasync client <args> --dir <dir>`; with delay >= 0 it sends
// SIGKILL that long after the start (if the process still runs).
func (h *crashHarness) run(dir string, delay time.Duration, args ...string) cliRun {
	h.t.Helper()
	cmd := cliCommand(h.t, append(append([]string{"client"}, args...), "--dir", dir)...)
	cmd.Env = append(cmd.Env, h.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	if delay >= 0 {
		timer := time.AfterFunc(delay, func() { cmd.Process.Kill() })
		defer timer.Stop()
	}
	cmd.Wait() // the outcome is in ProcessState
	r := cliRun{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		r.killed = true
	} else {
		r.code = cmd.ProcessState.ExitCode()
	}
	return r
}

// step runs one randomly chosen command and kills it at a random point. It
// reports whether the kill landed (the process died of it).
func (h *crashHarness) step() bool {
	h.t.Helper()
	var kind string
	switch p := h.rng.IntN(100); {
	case p < 25:
		kind = "put"
	case p < 45:
		kind = "merge"
	case p < 55 && len(h.deletable) > 0 && h.localVersion > 0:
		// Only once the client has seen the seeded records: the server
		// replays a delete three-way against the patch's base, and a
		// delete of a key absent at the base is a no-op (answered
		// "merged") rather than a removal.
		kind = "delete"
	case p < 70:
		kind = "push"
	case p < 85:
		kind = "pull"
	default:
		kind = "sync"
	}
	var args []string
	var e *crashEdit
	n := h.nextEdit
	switch kind {
	case "put":
		h.nextEdit++
		key := fmt.Sprintf("items/%04d", n)
		args = []string{"put", key, fmt.Sprintf(`{"n":%d,"text":"item %d, put before a crash"}`, n, n)}
		e = &crashEdit{name: "put " + key}
	case "merge":
		h.nextEdit++
		key := fmt.Sprintf("counters/%d", n%5)
		field := fmt.Sprintf("e%04d", n)
		args = []string{"merge", key, fmt.Sprintf(`{%q:%d}`, field, n)}
		e = &crashEdit{name: "merge " + key + " " + field}
	case "delete":
		key := h.deletable[0]
		h.deletable = h.deletable[1:]
		args = []string{"delete", key}
		e = &crashEdit{name: "delete " + key}
	default:
		args = []string{kind}
	}
	if e != nil {
		h.edits[e.name] = e
		h.names = append(h.names, e.name)
	}
	// One run in five is not killed: it makes progress and measures how
	// long the command takes, so that the kills land inside its run.
	delay := time.Duration(-1)
	if h.rng.IntN(5) > 0 {
		delay = time.Duration(h.rng.Int64N(int64(h.killWindow(kind))))
	}
	r := h.run(h.dir, delay, args...)
	outcome := fmt.Sprintf("exit %d", r.code)
	if r.killed {
		outcome = "killed"
	}
	h.history = append(h.history, fmt.Sprintf("client %s: %s after %v (kill at %v) %s", strings.Join(args, " "), outcome, r.took.Round(time.Millisecond), delay.Round(time.Microsecond), strings.TrimSpace(r.stdout+r.stderr)))
	st := h.runs[kind]
	if st == nil {
		st = new([2]int)
		h.runs[kind] = st
	}
	if r.killed {
		st[1]++
		return true
	}
	st[0]++
	// Aim the next kills of this command inside its running time.
	h.took[kind] = append(h.took[kind], r.took)
	if n := len(h.took[kind]); n > 16 {
		h.took[kind] = h.took[kind][n-16:]
	}
	if r.code != 0 {
		h.fatalf("client %s (not killed): exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	if e != nil {
		e.acked = true
	}
	return false
}

// killWindow is how long after its start a command is killed at most: half
// again its median run among the last ones seen (30 ms before any). The
// median, not the longest: on a loaded machine one slow run would otherwise
// aim most kills past the end of a typical run.
func (h *crashHarness) killWindow(kind string) time.Duration {
	took := slices.Clone(h.took[kind])
	if len(took) == 0 {
		return 30 * time.Millisecond
	}
	slices.Sort(took)
	return took[len(took)/2] * 3 / 2
}

// otherWriter changes a few seeded records through the API, as another
// device of the same user would, so that pulls download and install deltas.
func (h *crashHarness) otherWriter() {
	h.t.Helper()
	h.others++
	head, err := snapshot.Head(context.Background(), h.store, crashOrg, crashUser)
	if err != nil {
		h.t.Fatal(err)
	}
	var ops []string
	for i := 0; i < 3; i++ {
		key := h.otherKeys[h.rng.IntN(len(h.otherKeys))]
		k, _ := json.Marshal(key)
		ops = append(ops, fmt.Sprintf(`{"op":"merge","key":%s,"patch":{"o%d_%d":"changed by another device"}}`, k, h.others, i))
	}
	body := fmt.Sprintf(`{"id":"other-%d","base":%d,"ops":[%s]}`, h.others, head, strings.Join(ops, ","))
	if code, b := call(h.t, "POST", h.url+"/v1/patches", h.envToken(), []byte(body)); code != 200 {
		h.fatalf("other writer: %d %s", code, b)
	}
}

func (h *crashHarness) envToken() string {
	for _, kv := range h.env {
		if v, ok := strings.CutPrefix(kv, "DELTASYNC_TOKEN="); ok {
			return v
		}
	}
	return ""
}

// check restarts the client after a step: `client status` must succeed,
// the state file must verify, and every acknowledged edit must be queued or
// applied on the server exactly once.
func (h *crashHarness) check(when string) {
	h.t.Helper()
	r := h.run(h.dir, -1, "status", "--json")
	if r.code != 0 {
		h.fatalf("%s: client status: exit %d\n%s", when, r.code, r.stderr)
	}
	var st struct {
		Version uint64 `json:"version"`
		Pending int    `json:"pending"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		h.fatalf("%s: client status --json: %v\n%s", when, err, r.stdout)
	}
	ls := h.inspect(when, h.dir)
	if st.Pending != len(ls.queue) || st.Version != ls.version {
		h.fatalf("%s: status says version %d with %d pending, the state file version %d with %d queued",
			when, st.Version, st.Pending, ls.version, len(ls.queue))
	}
	h.localVersion = ls.version
	h.scanServer()
	for name := range ls.queue {
		if h.edits[name] == nil {
			h.fatalf("%s: the queue holds %q, which was never made", when, name)
		}
	}
	for _, name := range h.names {
		e, ap := h.edits[name], h.applied[name]
		q, queued := ls.queue[name]
		_, sent := ls.sent[name]
		switch {
		case len(ap) > 1:
			h.fatalf("%s: %s applied %d times: %v", when, name, len(ap), ap)
		case e.acked && !queued && len(ap) == 0:
			h.fatalf("%s: acknowledged edit %s is neither queued nor on the server ", when, name)
		case sent && len(ap) == 0:
			h.fatalf("%s: %s is marked sent but no change set holds it", when, name)
		case queued && sent:
			h.fatalf("%s: %s is both queued and sent", when, name)
		case queued && len(ap) == 1:
			// Applied, but the answer was lost to the kill: the edit must
			// be in the patch in flight under the id the server applied,
			// so that the resend is answered as a duplicate.
			if ls.inflight == nil || ls.inflight.ID != ap[0].patch || !slices.Contains(ls.inflight.Seqs, q) {
				h.fatalf("%s: %s is applied by patch %s (version %d) and still queued as edit %d outside that patch (in flight: %+v)",
					when, name, ap[0].patch, ap[0].version, q, ls.inflight)
			}
		}
	}
}

// localState is what inspect read from the state file.
type localState struct {
	version  uint64
	queue    map[string]uint64 // edit name -> seq
	sent     map[string]uint64
	inflight *struct {
		ID   string   `json:"id"`
		Seqs []uint64 `json:"seqs"`
	}
}

// inspect verifies the client's state directory with client.Check (both
// files' own consistency; the local version's manifest, every chunk of it
// stored with its SHA-256 and its records indexed; no chunk left over; the
// queue, the sent edits, their index and the patch in flight consistent
// with each other), checks that its records equal the server's version,
// and reads the queue and the sent edits, because the CLI shows only
// counts.
func (h *crashHarness) inspect(when, dir string) *localState {
	h.t.Helper()
	var local []byte
	r, err := client.Check(dir, client.CheckOptions{Records: func(k string, v []byte) error {
		local = snapshot.AppendNDJSONLine(local, k, v)
		return nil
	}})
	if err != nil {
		h.fatalf("%s: client.Check: %v", when, err)
	}
	fail := func(format string, args ...any) {
		h.t.Helper()
		h.fatalf("%s: state: %s", when, fmt.Sprintf(format, args...))
	}
	ls := &localState{version: r.Version, queue: map[string]uint64{}, sent: map[string]uint64{}}
	if want := h.serverRecords(ls.version); string(local) != want {
		fail("records of version %d (%d bytes) differ from the server's (%d bytes)", ls.version, len(local), len(want))
	}
	edits := func(es []client.CheckedEdit, into map[string]uint64, what string) {
		for _, e := range es {
			name := editName(e.Op, e.Key, e.Patch)
			if _, dup := into[name]; dup {
				fail("%s holds %s twice", what, name)
			}
			into[name] = e.Seq
		}
	}
	edits(r.Queued, ls.queue, "queue")
	edits(r.Sent, ls.sent, "sent")
	if r.InflightID != "" {
		ls.inflight = &struct {
			ID   string   `json:"id"`
			Seqs []uint64 `json:"seqs"`
		}{r.InflightID, r.InflightSeqs}
	}
	return ls
}

// editName names an edit as step did: by op, key and (for a merge) the one
// field it sets.
func editName(op, key string, patch json.RawMessage) string {
	if op != diff.OpMerge {
		return op + " " + key
	}
	var m map[string]json.RawMessage
	json.Unmarshal(patch, &m)
	fields := make([]string, 0, len(m))
	for f := range m {
		fields = append(fields, f)
	}
	slices.Sort(fields)
	return op + " " + key + " " + strings.Join(fields, ",")
}

// serverRecords returns version v of the server's data set as NDJSON ("" for
// version 0).
func (h *crashHarness) serverRecords(v uint64) string {
	h.t.Helper()
	if v == 0 {
		return ""
	}
	if s, ok := h.records[v]; ok {
		return s
	}
	ctx := context.Background()
	m, err := snapshot.ReadManifest(ctx, h.store, crashOrg, crashUser, v)
	if err != nil {
		h.t.Fatal(err)
	}
	var b []byte
	err = snapshot.NewReader(h.store, m, crashChunkSecret).Records(ctx, func(k, val []byte) error {
		b = snapshot.AppendNDJSONLine(b, string(k), val)
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.records[v] = string(b)
	return string(b)
}

// scanServer reads the change sets of the versions made since the last
// scan and records which patch applied which edit. A patch id in two change
// sets is a patch applied twice.
func (h *crashHarness) scanServer() {
	h.t.Helper()
	ctx := context.Background()
	head, err := snapshot.Head(ctx, h.store, crashOrg, crashUser)
	if err != nil {
		h.t.Fatal(err)
	}
	for v := h.scanned + 1; v <= head; v++ {
		m, err := snapshot.ReadManifestHeader(ctx, h.store, crashOrg, crashUser, v)
		if err != nil {
			h.t.Fatal(err)
		}
		cs, err := diff.ReadChangeSet(ctx, h.store, m)
		if err != nil {
			h.t.Fatal(err)
		}
		h.scanned = v
		if cs.Kind != diff.KindPatch {
			continue
		}
		if cs.Patch == nil {
			h.fatalf("version %d: a patch change set without its patch", v)
		}
		if first, dup := h.patches[cs.Patch.ID]; dup {
			h.fatalf("patch %s applied twice: versions %d and %d", cs.Patch.ID, first, v)
		}
		h.patches[cs.Patch.ID] = v
		won := map[int]bool{}
		for _, r := range cs.Receipts {
			won[r.Index] = r.Status == diff.StatusApplied || r.Status == diff.StatusMerged || r.Status == diff.StatusConflict && r.Won
		}
		for i, op := range cs.Patch.Ops {
			if strings.HasPrefix(cs.Patch.ID, "other-") {
				continue
			}
			name := editName(op.Op, op.Key, op.Patch)
			if !won[i] {
				h.fatalf("version %d: patch %s did not apply %s: receipts %+v", v, cs.Patch.ID, name, cs.Receipts)
			}
			h.applied[name] = append(h.applied[name], appliedOp{patch: cs.Patch.ID, version: v})
		}
	}
}

func (h *crashHarness) logStats() {
	var parts []string
	for _, k := range []string{"put", "merge", "delete", "push", "pull", "sync"} {
		if st := h.runs[k]; st != nil {
			parts = append(parts, fmt.Sprintf("%s %d killed/%d completed (killed within %v)", k, st[1], st[0], h.killWindow(k).Round(time.Millisecond)))
		}
	}
	acked := 0
	for _, e := range h.edits {
		if e.acked {
			acked++
		}
	}
	h.t.Logf("%s; %d edits attempted, %d acknowledged; %d other-device patches; %d patches applied",
		strings.Join(parts, "; "), len(h.edits), acked, h.others, len(h.patches))
}

// finish syncs without kills and checks the end state: an empty queue,
// every acknowledged edit applied once and visible on the server, and the
// client, a fresh client and the server's newest version all equal.
func (h *crashHarness) finish() {
	t := h.t
	t.Helper()
	r := h.run(h.dir, -1, "sync", "--json")
	if r.code != 0 {
		t.Fatalf("final sync: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var res client.SyncResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Pending != 0 || res.State != client.StateSynced {
		t.Fatalf("final sync: %v %s", err, r.stdout)
	}
	h.check("after the final sync")
	fresh := filepath.Join(t.TempDir(), "fresh")
	if r := h.run(fresh, -1, "pull"); r.code != 0 {
		t.Fatalf("fresh pull: exit %d\n%s", r.code, r.stderr)
	}
	mine, theirs := h.run(h.dir, -1, "export"), h.run(fresh, -1, "export")
	if mine.code != 0 || theirs.code != 0 {
		t.Fatalf("export: exit %d %d\n%s%s", mine.code, theirs.code, mine.stderr, theirs.stderr)
	}
	h.stop() // let any request of a killed client finish
	h.scanServer()
	head := h.scanned
	server := h.serverRecords(head)
	if mine.stdout != server || theirs.stdout != server {
		t.Fatalf("after the final sync (%s) the client (%d bytes) and a fresh client (%d bytes) differ from the server's version %d (%d bytes)\nclient: %s\nfresh: %s",
			strings.TrimSpace(r.stdout), len(mine.stdout), len(theirs.stdout), head, len(server), lineDiff(mine.stdout, server), lineDiff(theirs.stdout, server))
	}
	if res.Version != head {
		t.Errorf("final sync left the client at version %d, the server's head is %d", res.Version, head)
	}

	values := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(server), "\n") {
		var rec struct {
			Key   string         `json:"key"`
			Value map[string]any `json:"value"`
		}
		json.Unmarshal([]byte(line), &rec) // seeded values that are not objects stay nil
		values[rec.Key] = rec.Value
	}
	for _, name := range h.names {
		e, ap := h.edits[name], h.applied[name]
		if len(ap) > 1 || e.acked && len(ap) != 1 {
			t.Errorf("%s (acknowledged: %v) applied %d times", name, e.acked, len(ap))
			continue
		}
		if len(ap) == 0 {
			continue // killed before it was durable
		}
		f := strings.Fields(name)
		switch f[0] {
		case "put":
			if _, ok := values[f[1]]["n"]; !ok {
				t.Errorf("%s: the server holds %v", name, values[f[1]])
			}
		case "merge":
			if _, ok := values[f[1]][f[2]]; !ok {
				t.Errorf("%s: the server holds %v", name, values[f[1]])
			}
		case "delete":
			if _, ok := values[f[1]]; ok {
				t.Errorf("%s: the key is still on the server", name)
			}
		}
	}
}

// fatalf fails the test with the last commands that ran.
func (h *crashHarness) fatalf(format string, args ...any) {
	h.t.Helper()
	recent := h.history[max(0, len(h.history)-12):]
	h.t.Fatalf(format+"\nlast commands:\n  %s", append(args, strings.Join(recent, "\n  "))...)
}

// lineDiff names the lines only in got and only in want (at most 5 of
// each), so a failure says which records differ.
func lineDiff(got, want string) string {
	if got == want {
		return "equal"
	}
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	g, w := in(got), in(want)
	var extra, missing []string
	for l := range g {
		if !w[l] && len(extra) < 5 {
			extra = append(extra, l)
		}
	}
	for l := range w {
		if !g[l] && len(missing) < 5 {
			missing = append(missing, l)
		}
	}
	return fmt.Sprintf("only here %q; missing %q", extra, missing)
}
