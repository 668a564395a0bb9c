package state

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// version is what a server would hold: a manifest (keyed IDs replaced by
// content IDs, which is all the client compares) and the chunks by ID.
type version struct {
	m      *snapshot.Manifest
	chunks map[snapshot.ChunkID][]byte
	recs   [][2]string
}

func cut(t *testing.T, v uint64, recs [][2]string) *version {
	t.Helper()
	return cutWith(t, v, recs, snapshot.DefaultChunkerParams())
}

func cutWith(t *testing.T, v uint64, recs [][2]string, params snapshot.ChunkerParams) *version {
	t.Helper()
	out := &version{chunks: map[snapshot.ChunkID][]byte{}, recs: recs}
	m := &snapshot.Manifest{Version: v, ChunkerName: snapshot.ChunkerName, ChunkerVersion: snapshot.ChunkerVersion,
		Chunker: params, Packs: []string{"local"}}
	ch, err := snapshot.NewChunker(m.Chunker, func(c snapshot.ChunkData) error {
		sum := sha256.Sum256(c.Data)
		var id snapshot.ChunkID
		copy(id[:], sum[:])
		out.chunks[id] = slices.Clone(c.Data)
		m.Chunks = append(m.Chunks, snapshot.ChunkRef{ID: id, Sum: sum, Size: uint32(len(c.Data)), StoredLen: uint32(len(c.Data)),
			Records: uint32(c.Records), Continued: c.Continued, FirstKey: c.FirstKey})
		m.StreamLen += uint64(len(c.Data))
		return nil
	})
	must(t, err)
	for _, r := range recs {
		must(t, ch.Add(r[0], []byte(r[1])))
	}
	must(t, ch.Close())
	m.Records = uint64(len(recs))
	m.SetStreamHash()
	out.m = m
	return out
}

// pull does what the client's pull does with a delta pack from the
// synced version (or a full one) to v: resume the download in progress if
// it is this one, else start one; store the chunks the device lacks;
// finish.
func pull(s *Store, v *version) (*Installed, error) {
	from, old, err := s.Manifest()
	if err != nil {
		return nil, err
	}
	if nf, err := s.NeedFull(); err != nil {
		return nil, err
	} else if nf {
		from, old = 0, nil
	}
	mk, err := s.Marker()
	if err != nil {
		return nil, err
	}
	if mk != nil && (mk.From != from || mk.To != v.m.Version) {
		if err := s.AbandonDownload(); err != nil {
			return nil, err
		}
		mk = nil
	}
	have := map[snapshot.ChunkID]snapshot.ChunkRef{}
	if old != nil {
		for _, c := range old.Chunks {
			have[c.ID] = c
		}
	}
	chunks := slices.Clone(v.m.Chunks)
	var needed []int
	seen := map[snapshot.ChunkID]bool{}
	for j := range chunks {
		if c, ok := have[chunks[j].ID]; ok {
			chunks[j] = c
			continue
		}
		chunks[j].Sum = [32]byte{}
		if !seen[chunks[j].ID] {
			seen[chunks[j].ID] = true
			needed = append(needed, j)
		}
	}
	var d *Download
	if pullAsEdit && old != nil {
		d, err = startEdit(s, old, v, mk)
	} else {
		d, err = s.StartDownload(from, v.m.Version, chunks, old, mk)
	}
	if err != nil {
		return nil, err
	}
	skip := 0
	if mk != nil {
		skip = mk.Received
	}
	for _, j := range needed[skip:] {
		if err := d.Add(j, v.chunks[chunks[j].ID]); err != nil {
			return nil, err
		}
	}
	m := *v.m
	m.Chunks, m.StreamHash = nil, [32]byte{}
	return d.Finish(context.Background(), &m, v.m.StreamHash)
}

// pullAsEdit makes pull install a delta as the client does a format-3
// one: as an edit of the synced list (StartDelta), not a list of its own.
var pullAsEdit bool

// startEdit starts v's download as an edit of old, the synced version:
// the regions of the edit script and their entries (without the SHA-256s
// that a pack does not carry).
func startEdit(s *Store, old *snapshot.Manifest, v *version, mk *Marker) (*Download, error) {
	base, err := s.Base()
	if err != nil {
		return nil, err
	}
	script := diff.Manifests(old, v.m)
	e := &ListEdit{Regions: script.Regions, Len: len(v.m.Chunks)}
	for _, r := range script.Regions {
		for _, c := range v.m.Chunks[r.NewFrom:r.NewTo] {
			c.Sum = [32]byte{}
			e.Entries = append(e.Entries, c)
		}
	}
	return s.StartDelta(base, v.m.Version, e, mk)
}

// bothPaths runs test with pull installing deltas as lists, then as edits.
func bothPaths(t *testing.T, test func(t *testing.T)) {
	for _, edit := range []bool{false, true} {
		t.Run(map[bool]string{false: "list", true: "edit"}[edit], func(t *testing.T) {
			pullAsEdit = edit
			defer func() { pullAsEdit = false }()
			test(t)
		})
	}
}

var errCrash = errors.New("crashed")

// small makes every step of an install take many transactions.
func small(s *Store) {
	s.batchChunks, s.batchBytes, s.inPlaceMax, s.cleanupBatch, s.pageChunks = 4, 32<<10, 1000, 3, 8
}

// TestInstallSurvivesAStopAfterAnyCommit stops installs (full sync, small
// and big deltas, a full sync over a version) after every one of their
// data.db transactions in turn, as a SIGKILL between two commits would
// (bbolt makes each commit atomic). Each time the state must check out and
// show exactly the old version or the new one, and the next pull must
// finish the install (resuming the download) with nothing left over.
func TestInstallSurvivesAStopAfterAnyCommit(t *testing.T) {
	bothPaths(t, testInstallSurvivesAStopAfterAnyCommit)
}

func testInstallSurvivesAStopAfterAnyCommit(t *testing.T) {
	v1 := cut(t, 1, records(400, 300, true, "one"))
	r2 := slices.Clone(v1.recs)
	r2[10][1], r2[300][1] = `{"changed":2}`, `{"changed":3}`
	r2 = slices.Delete(r2, 200, 201)
	v2 := cut(t, 2, r2) // a small delta: one transaction
	rm := slices.Clone(v1.recs)
	for i := 3; i < len(rm); i += 45 {
		rm[i][1] = fmt.Sprintf(`{"changed":%d}`, i)
	}
	vm := cut(t, 2, rm)                                   // several batches of chunks, the index in place
	v3 := cut(t, 3, records(2000, 60, false, "three"))    // a big one: a new index
	v4 := cut(t, 4, records(350, 200, false, "four")[5:]) // a full sync over version 3
	steps := []struct {
		name     string
		from, to *version
		needFull bool
		commits  int // at least
	}{
		{"full sync", nil, v1, false, 10},
		{"small delta", v1, v2, false, 1}, // one transaction
		{"delta of several batches", v1, vm, false, 3},
		{"big delta", v2, v3, false, 10},
		{"full sync over a version", v3, v4, true, 5},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			base := t.TempDir()
			s := openStore(t, base)
			small(s)
			if st.from != nil {
				for _, v := range []*version{v1, v2, v3} {
					if _, err := pull(s, v); err != nil {
						t.Fatal(err)
					}
					if v == st.from {
						break
					}
				}
			}
			if st.needFull {
				must(t, s.SetNeedFull())
			}
			s.Close()
			stops := 0
			for after := 0; ; after++ {
				if stopAfter(t, base, st.from, st.to, after) {
					break
				}
				stops++
			}
			t.Logf("stopped after each of %d commits", stops)
			if stops < st.commits {
				t.Errorf("only %d commits: the test does not stop the install where it should", stops)
			}
		})
	}
}

// stopAfter copies the state in base, installs to on it with data.db
// writes failing after the first n, checks what is left, and finishes the
// install. It reports whether the install needed no more than n writes.
func stopAfter(t *testing.T, base string, from, to *version, n int) bool {
	t.Helper()
	dir := t.TempDir()
	copyDir(t, base, dir)
	s := openStore(t, dir)
	small(s)
	writes := 0
	s.beforeWrite = func() error {
		if writes++; writes > n {
			return errCrash
		}
		return nil
	}
	_, err := pull(s, to)
	if err == nil {
		return true
	}
	if !errors.Is(err, errCrash) {
		t.Fatalf("stopped after %d writes: %v", n, err)
	}
	s.Close()
	r := checkOK(t, dir)
	s = openStore(t, dir)
	small(s)
	got := scanAll(t, s, "", 1000)
	switch {
	case r.Version == to.m.Version && slices.Equal(got, to.recs):
	case from != nil && r.Version == from.m.Version && slices.Equal(got, from.recs):
	case from == nil && r.Version == 0 && len(got) == 0:
	default:
		t.Fatalf("stopped after %d writes: version %d with %d records, neither the old version nor the new", n, r.Version, len(got))
	}
	if _, err := pull(s, to); err != nil {
		t.Fatalf("pull after a stop after %d writes: %v", n, err)
	}
	s.Close()
	r = checkOK(t, dir)
	if r.Version != to.m.Version || r.Stored != r.Distinct || r.Download != nil {
		t.Fatalf("after a stop after %d writes and a pull: %+v", n, r)
	}
	s = openStore(t, dir)
	if got := scanAll(t, s, "", 1000); !slices.Equal(got, to.recs) {
		t.Fatalf("after a stop after %d writes and a pull: %d records differ from version %d", n, len(got), to.m.Version)
	}
	return false
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	for _, f := range []string{EditsFile, DataFile, NextFile} {
		b, err := osReadFile(from, f)
		if f == NextFile && os.IsNotExist(err) {
			continue
		}
		must(t, err)
		must(t, osWriteFile(to, f, b))
	}
}

func TestDeltaReportsChangedKeys(t *testing.T) { bothPaths(t, testDeltaReportsChangedKeys) }

func testDeltaReportsChangedKeys(t *testing.T) {
	s := openStore(t, t.TempDir())
	v1 := cut(t, 1, records(400, 300, true, "one"))
	r2 := slices.Clone(v1.recs)
	r2[10][1] = `{"changed":2}`
	r2 = slices.Delete(r2, 200, 201)
	r2 = slices.Insert(r2, 5, [2]string{"k/00004a", `"new"`})
	v2 := cut(t, 2, r2)
	in, err := pull(s, v1)
	must(t, err)
	if !in.Full || !in.AllKeys || in.Keys != nil {
		t.Errorf("full sync: %+v", in)
	}
	in, err = pull(s, v2)
	must(t, err)
	want := []string{"k/00004a", "k/00010", "k/00200"}
	if in.Full || in.AllKeys || !slices.Equal(in.Keys, want) || in.Changed != 3 {
		t.Errorf("delta: %+v, want keys %q", in, want)
	}
	if got := fmt.Sprint(scanAll(t, s, "", 100)); got != fmt.Sprint(r2) {
		t.Error("records after the delta differ")
	}
}

func osReadFile(dir, name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, name)) }
func osWriteFile(dir, name string, b []byte) error {
	return os.WriteFile(filepath.Join(dir, name), b, 0o600)
}

// TestSmallDeltaIsOneSwitch: a delta of a few records is installed in one
// transaction (its chunks, the live index's writes, the switch); a big one
// stores its chunks in batches and builds a new index.
func TestSmallDeltaIsOneSwitch(t *testing.T) { bothPaths(t, testSmallDeltaIsOneSwitch) }

func testSmallDeltaIsOneSwitch(t *testing.T) {
	s := openStore(t, t.TempDir())
	small(s)
	v1 := cut(t, 1, records(400, 300, true, "one"))
	r2 := slices.Clone(v1.recs)
	r2[10][1] = `{"changed":2}`
	v2 := cut(t, 2, r2)
	v3 := cut(t, 3, records(2000, 60, false, "three"))
	_, err := pull(s, v1)
	must(t, err)
	prev := v1
	for _, v := range []*version{v2, v3} {
		needed := 0
		for id := range v.chunks {
			if _, ok := prev.chunks[id]; !ok {
				needed++
			}
		}
		writes := 0
		s.beforeWrite = func() error { writes++; return nil }
		_, err = pull(s, v)
		must(t, err)
		if (writes == 1) != (v == v2) {
			t.Errorf("version %d (%d chunks new) installed in %d writes", v.m.Version, needed, writes)
		}
		prev = v
	}
}

// TestEditsNeverWaitForAnInstall holds an install inside one of its
// data.db transactions and makes edits and reads meanwhile: they go to
// state.db, which no install transaction locks, and read data.db in
// transactions of their own, so they all finish while the install waits.
func TestEditsNeverWaitForAnInstall(t *testing.T) {
	s := openStore(t, t.TempDir())
	small(s)
	v1 := cut(t, 1, records(400, 300, true, "one"))
	v2 := cut(t, 2, records(400, 200, false, "two"))
	_, err := pull(s, v1)
	must(t, err)
	inside, release := make(chan struct{}), make(chan struct{})
	writes := 0
	s.duringWrite = func() {
		if writes++; writes == 3 {
			close(inside)
			<-release
		}
	}
	done := make(chan error, 1)
	go func() { _, err := pull(s, v2); done <- err }()
	<-inside
	// The install holds data.db's write lock now.
	must(t, s.UpdateEdits(func(tx *EditsTx) error {
		if _, err := tx.Enqueue(&Edit{Op: OpMerge, Key: "k/00001", Patch: []byte(`{"x":1}`)}); err != nil {
			return err
		}
		_, _, err := tx.View("k/00001", ^uint64(0))
		return err
	}))
	if v, found, err := s.View("k/00001", ^uint64(0)); err != nil || !found || !strings.Contains(string(v), `"x":1`) {
		t.Errorf("view during the install: %s %v %v", v, found, err)
	}
	if got := scanAll(t, s, "k/0000", 3); len(got) != 10 {
		t.Errorf("scan during the install: %d records", len(got))
	}
	select {
	case err := <-done:
		t.Fatalf("the install finished while held: %v", err)
	default:
	}
	close(release)
	must(t, <-done)
}
