package batch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

func ndjson(t testing.TB, size, seed int64) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := gen.Generate(&b, gen.Options{Size: size, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func parse(t testing.TB, data []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		k, v, err := snapshot.ParseNDJSONLine(l)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = string(v)
	}
	return out
}

func TestBuildUserCreatesThenNothing(t *testing.T) {
	ctx := t.Context()
	s := memstore.New()
	data := ndjson(t, 256<<10, 1)
	opts := UserOptions{Org: "acme", User: "alice", TempDir: t.TempDir()}

	first, err := BuildUser(ctx, s, opts, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := parse(t, data)
	if !first.Created || first.Version != 1 || first.Parent != 0 || first.Records != uint64(len(want)) ||
		first.Chunks == 0 || first.ChunksNew != first.Chunks || first.StoredBytesNew <= 0 ||
		first.Puts == 0 || first.Changes != len(want) || first.InputBytes != int64(len(data)) || first.Error != "" {
		t.Fatalf("first build: %+v", first)
	}
	if _, got := readHead(t, s, "acme", "alice"); !equalMaps(got, want) {
		t.Fatal("version 1 does not read back as the input")
	}

	again, err := BuildUser(ctx, s, opts, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if again.Created || again.Version != 1 || again.Puts != 0 || again.ChunksNew != 0 ||
		again.Records != first.Records || again.Chunks != first.Chunks || again.StreamBytes != first.StreamBytes {
		t.Fatalf("unchanged rebuild: %+v, want created=false version=1 puts=0 and the same totals", again)
	}

	// One record edited: version 2 with one change, a few chunks new.
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	k, _, _ := snapshot.ParseNDJSONLine(lines[len(lines)/2])
	lines[len(lines)/2] = snapshot.AppendNDJSONLine(nil, k, []byte(`{"edited":true}`))
	edited := bytes.Join(lines, []byte("\n"))
	third, err := BuildUser(ctx, s, opts, bytes.NewReader(edited))
	if err != nil {
		t.Fatal(err)
	}
	if !third.Created || third.Version != 2 || third.Parent != 1 || third.Changes != 1 ||
		third.ChunksNew < 1 || third.ChunksNew > 3 || third.Puts > 5 {
		t.Fatalf("one-record edit: %+v", third)
	}
	if _, got := readHead(t, s, "acme", "alice"); !equalMaps(got, parse(t, edited)) {
		t.Fatal("version 2 does not read back as the edited input")
	}
}

func TestBuildUserBadLineWritesNothing(t *testing.T) {
	s := memstore.New()
	input := "{\"key\":\"a\",\"value\":1}\n{\"key\":\"b\",\"value\":2}\n{\"key\":\"c\",\"value\":\n"
	res, err := BuildUser(t.Context(), s, UserOptions{Org: "acme", User: "alice"}, strings.NewReader(input))
	var le *snapshot.LineError
	if !errors.As(err, &le) || le.Line != 3 {
		t.Fatalf("err = %v, want a *LineError for line 3", err)
	}
	if !strings.Contains(res.Error, "line 3") || res.Created {
		t.Fatalf("result %+v", res)
	}
	n := 0
	s.List(t.Context(), "", func(snapshot.ObjectInfo) error { n++; return nil })
	if n != 0 {
		t.Fatalf("a bad input left %d objects in a fresh store, want none (not even the secret)", n)
	}
}

func TestBuildUserRejectsBadNames(t *testing.T) {
	for _, o := range []UserOptions{{Org: "", User: "a"}, {Org: "acme", User: "../x"}, {Org: "_x", User: "a"}} {
		_, err := BuildUser(t.Context(), memstore.New(), o, strings.NewReader(`{"key":"a","value":1}`))
		if !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("%+v: err = %v, want ErrInvalid", o, err)
		}
	}
}

// raceStore lets a competing writer claim the version just before the
// build under test claims it, once.
func raceStore(s snapshot.Store, compete func()) *storetest.Faults {
	var done atomic.Bool
	f := storetest.Wrap(s)
	f.Before = func(_ context.Context, op storetest.Op, key string) error {
		if _, ok := snapshot.ParseManifestKey(key); ok && op == storetest.OpPutIfAbsent && !done.Swap(true) {
			compete()
		}
		return nil
	}
	return f
}

// A build that loses the race for a version number builds again on the
// winner's version, from input read a second time: by seeking back, or
// from the copy spooled while a pipe-like input was read.
func TestBuildUserRetriesLostRace(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func([]byte) io.Reader
	}{
		{"seekable", func(b []byte) io.Reader { return bytes.NewReader(b) }},
		{"stream", func(b []byte) io.Reader { return io.MultiReader(bytes.NewReader(b)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			inner := memstore.New()
			ours, theirs := ndjson(t, 64<<10, 1), ndjson(t, 64<<10, 2)
			opts := UserOptions{Org: "acme", User: "alice", TempDir: t.TempDir()}
			rs := raceStore(inner, func() {
				if _, err := BuildUser(ctx, inner, opts, bytes.NewReader(theirs)); err != nil {
					t.Errorf("competitor: %v", err)
				}
			})
			res, err := BuildUser(ctx, rs, opts, tc.wrap(ours))
			if err != nil {
				t.Fatal(err)
			}
			if res.Attempts != 2 || res.Version != 2 || res.Parent != 1 || !res.Created {
				t.Fatalf("result %+v, want version 2 on the competitor's 1 after 2 attempts", res)
			}
			if _, got := readHead(t, inner, "acme", "alice"); !equalMaps(got, parse(t, ours)) {
				t.Fatal("head does not read back as our input")
			}
			cs := readChanges(t, inner, "acme", "alice", 2)
			if cs.Parent != 1 || len(cs.Changes) == 0 {
				t.Fatalf("change set of version 2: parent %d, %d changes", cs.Parent, len(cs.Changes))
			}
			if left, _ := os.ReadDir(opts.TempDir); len(left) != 0 {
				t.Fatalf("temp files left behind: %v", left)
			}
		})
	}
}

func readChanges(t testing.TB, s snapshot.Store, org, user string, v uint64) *diff.ChangeSet {
	t.Helper()
	m, err := snapshot.ReadManifest(t.Context(), s, org, user, v)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := diff.ReadChangeSet(t.Context(), s, m)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// A writer that keeps losing gives up after MaxAttempts with ErrExist.
func TestBuildUserGivesUpAfterMaxAttempts(t *testing.T) {
	s := failingWrites(memstore.New(), func(key string) error {
		if _, ok := snapshot.ParseManifestKey(key); ok {
			return snapshot.ErrExist
		}
		return nil
	})
	res, err := BuildUser(t.Context(), s, UserOptions{Org: "acme", User: "alice", MaxAttempts: 3}, bytes.NewReader(ndjson(t, 8<<10, 1)))
	if !errors.Is(err, snapshot.ErrExist) || res.Attempts != 3 {
		t.Fatalf("err = %v after %d attempts, want ErrExist after 3", err, res.Attempts)
	}
}

func TestBuildUserEmptyInput(t *testing.T) {
	s := memstore.New()
	res, err := BuildUser(t.Context(), s, UserOptions{Org: "acme", User: "alice"}, strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	if res.Created || res.Version != 0 || res.Records != 0 {
		t.Fatalf("empty input on an empty data set: %+v, want nothing created", res)
	}
}
