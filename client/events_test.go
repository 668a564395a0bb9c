package client

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
)

// changeLog records every Change a client reports.
type changeLog struct {
	mu  sync.Mutex
	all []Change
}

func watchChanges(c *Client) *changeLog {
	l := &changeLog{}
	c.OnChange(func(ch Change) {
		l.mu.Lock()
		l.all = append(l.all, ch)
		l.mu.Unlock()
	})
	return l
}

// take returns the changes recorded since the last take.
func (l *changeLog) take() []Change {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.all
	l.all = nil
	return out
}

func records(prefix string, n int, value string) []gen.Record {
	var out []gen.Record
	for i := 0; i < n; i++ {
		out = append(out, gen.Record{Key: fmt.Sprintf("%s%03d", prefix, i), Value: []byte(value)})
	}
	return out
}

func keysOf(recs []gen.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Key)
	}
	slices.Sort(out)
	return out
}

// TestChangeListenerGetsExactlyTheChangedKeys is issue 12's acceptance for
// change events: a listener receives exactly the changed keys for a
// one-record server edit, a 500-record insert (grouped by collection, the
// keys too many to list) and a local put.
func TestChangeListenerGetsExactlyTheChangedKeys(t *testing.T) {
	ts := newTestServer(t)
	v1 := records("tasks/", 10, `{"s":"open"}`)
	ts.upload("ann", v1)
	c := ts.client("ann", nil)
	log := watchChanges(c)
	ctx := context.Background()
	sync := func() {
		t.Helper()
		if _, err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}

	sync()
	want := []Change{{Source: ChangeServer, Version: 1, Full: true, Total: 10, Keys: keysOf(v1),
		Collections: []CollectionCount{{"tasks", 10}}}}
	if got := log.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("first sync: changes %+v, want %+v", got, want)
	}

	// One record edited on the server.
	v2 := slices.Clone(v1)
	v2[3].Value = []byte(`{"s":"done"}`)
	ts.upload("ann", v2)
	sync()
	want = []Change{{Source: ChangeServer, Version: 2, Total: 1, Keys: []string{"tasks/003"},
		Collections: []CollectionCount{{"tasks", 1}}}}
	if got := log.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("one-record edit: changes %+v, want %+v", got, want)
	}

	// 500 records inserted in two collections: too many keys to list.
	v3 := append(slices.Clone(v2), records("forms/", 300, `{"a":1}`)...)
	v3 = append(v3, records("photos/", 200, `{"p":1}`)...)
	ts.upload("ann", v3)
	sync()
	want = []Change{{Source: ChangeServer, Version: 3, Total: 500,
		Collections: []CollectionCount{{"forms", 300}, {"photos", 200}}}}
	if got := log.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("500-record insert: changes %+v, want %+v", got, want)
	}

	// A local put: the key, at once; once pushed and pulled back, the
	// version that holds it lists it again (and nothing else).
	mustDo(t, c.Put("notes/1", []byte(`{"text":"hi"}`)))
	want = []Change{{Source: ChangeLocal, Version: 3, Total: 1, Keys: []string{"notes/1"},
		Collections: []CollectionCount{{"notes", 1}}}}
	if got := log.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("local put: changes %+v, want %+v", got, want)
	}
	sync()
	want = []Change{{Source: ChangeServer, Version: 4, Total: 1, Keys: []string{"notes/1"},
		Collections: []CollectionCount{{"notes", 1}}}}
	if got := log.take(); !reflect.DeepEqual(got, want) {
		t.Fatalf("local put synced: changes %+v, want %+v", got, want)
	}

	// A discarded edit leaves the view: a local change of its key.
	mustDo(t, c.Delete("tasks/000"))
	log.take()
	if n, err := c.DiscardEdits("tasks/000"); err != nil || n != 1 {
		t.Fatalf("discard: %d, %v", n, err)
	}
	if got := log.take(); len(got) != 1 || got[0].Source != ChangeLocal || !reflect.DeepEqual(got[0].Keys, []string{"tasks/000"}) {
		t.Fatalf("discard: changes %+v", got)
	}
}

// TestRejectedEditLeavingTheViewIsAChange: an edit the server refuses
// leaves the view at once; the listener hears of its key.
func TestRejectedEditLeavingTheViewIsAChange(t *testing.T) {
	ts := newTestServer(t)
	ts.upload("ann", records("tasks/", 2, `{"s":"open"}`))
	ft := newFaultTransport()
	c := ts.client("ann", ft)
	_, err := c.Sync(context.Background())
	mustDo(t, err)
	log := watchChanges(c)
	mustDo(t, c.Put("tasks/000", []byte(`{"s":"mine"}`)))
	log.take()
	ft.answer = func([]byte) string {
		return `{"version":0,"receipts":[{"index":0,"status":"rejected","reason":"test: refused"}]}`
	}
	_, err = c.Push(context.Background())
	mustDo(t, err)
	if got := log.take(); len(got) != 1 || got[0].Source != ChangeLocal || !reflect.DeepEqual(got[0].Keys, []string{"tasks/000"}) {
		t.Fatalf("rejected edit: changes %+v", got)
	}
	if v := get(t, c, "tasks/000"); v != `{"s":"open"}` {
		t.Fatalf("tasks/000 after the rejection = %s", v)
	}
}

// TestQueriesPageCountAndGetMany: prefix scan with limit and startAfter
// paging, Count and GetMany, all on the merged view (pending edits laid
// over the synced records), and refusals of bad input.
func TestQueriesPageCountAndGetMany(t *testing.T) {
	c := openTest(t, t.TempDir())
	recs := map[string]string{}
	for i := 0; i < 250; i++ {
		recs[fmt.Sprintf("tasks/%03d", i)] = fmt.Sprintf(`{"n":%d}`, i)
	}
	for i := 0; i < 10; i++ {
		recs[fmt.Sprintf("forms/%d", i)] = `{"f":1}`
	}
	install(t, c, 1, recs)
	mustDo(t, c.Put("tasks/100", []byte(`{"n":"edited"}`)))
	mustDo(t, c.Delete("tasks/005"))
	mustDo(t, c.Put("tasks/999x", []byte(`{"n":"new"}`)))
	mustDo(t, c.Merge("tasks/200", []byte(`{"m":true}`)))

	var wantKeys []string
	for k := range recs {
		if k != "tasks/005" && k[:6] == "tasks/" {
			wantKeys = append(wantKeys, k)
		}
	}
	wantKeys = append(wantKeys, "tasks/999x")
	slices.Sort(wantKeys)

	var got []string
	after, pages := "", 0
	for {
		page, more, err := c.ScanPage("tasks/", after, 100)
		mustDo(t, err)
		pages++
		if len(page) > 100 || (more && len(page) != 100) {
			t.Fatalf("page %d: %d records, more %v", pages, len(page), more)
		}
		for _, r := range page {
			got = append(got, r.Key)
			if want, _ := c.Get(r.Key); string(r.Value) != string(want) {
				t.Errorf("%s: page value %s, Get %s", r.Key, r.Value, want)
			}
		}
		if !more {
			break
		}
		after = page[len(page)-1].Key
	}
	if !reflect.DeepEqual(got, wantKeys) || pages != 3 {
		t.Fatalf("paged %d keys in %d pages, want %d in 3", len(got), pages, len(wantKeys))
	}
	if page, more, err := c.ScanPage("tasks/", "a", 2); err != nil || more != true || len(page) != 2 || page[0].Key != "tasks/000" {
		t.Errorf("startAfter before the prefix: %v %v %v, want from the first", page, more, err)
	}
	if page, more, err := c.ScanPage("tasks/", "zzz", 2); err != nil || more || len(page) != 0 {
		t.Errorf("startAfter past the prefix: %v %v %v, want nothing", page, more, err)
	}

	for prefix, want := range map[string]int{"tasks/": 250, "": 260, "forms/": 10, "nope": 0, "tasks/00": 9} {
		if n, err := c.Count(prefix); err != nil || n != want {
			t.Errorf("Count(%q) = %d, %v; want %d", prefix, n, err, want)
		}
	}

	many, err := c.GetMany([]string{"tasks/100", "tasks/005", "missing/1", "tasks/200", "tasks/100"})
	mustDo(t, err)
	wantMany := []Record{{"tasks/100", []byte(`{"n":"edited"}`)}, {"tasks/005", nil}, {"missing/1", nil},
		{"tasks/200", []byte(`{"m":true,"n":200}`)}, {"tasks/100", []byte(`{"n":"edited"}`)}}
	if !reflect.DeepEqual(many, wantMany) {
		t.Errorf("GetMany = %q, want %q", many, wantMany)
	}

	if _, _, err := c.ScanPage("tasks/", "", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("ScanPage with limit 0: %v, want ErrInvalid", err)
	}
	if _, err := c.GetMany([]string{"tasks/1", ""}); !errors.Is(err, ErrInvalid) {
		t.Errorf("GetMany with an empty key: %v, want ErrInvalid", err)
	}
}
