package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

func ndjsonOf(recs []gen.Record) []byte {
	var b []byte
	for _, r := range recs {
		b = snapshot.AppendNDJSONLine(b, r.Key, r.Value)
	}
	return b
}

func streamOf(recs []gen.Record) []byte {
	var b []byte
	for _, r := range recs {
		b = snapshot.AppendRecord(b, r.Key, r.Value)
	}
	return b
}

// enableOrg turns offline mode on for org.
func (e *testEnv) enableOrg(org string) {
	e.t.Helper()
	r := e.do("PUT", "/v1/admin/orgs/"+org, []byte(`{"offline_mode":true}`), withToken(adminToken(e.t)))
	if r.status != 200 {
		e.t.Fatalf("enable org: %d %s", r.status, r.body)
	}
}

func (e *testEnv) upload(org, user string, recs []gen.Record) uint64 {
	e.t.Helper()
	r := e.do("PUT", "/v1/admin/orgs/"+org+"/users/"+user+"/dataset", nil, withToken(adminToken(e.t)), withStream(ndjsonOf(recs)))
	if r.status != 200 {
		e.t.Fatalf("upload: %d %s", r.status, r.body)
	}
	var res struct{ Version uint64 }
	json.Unmarshal(r.body, &res)
	return res.Version
}

// localCopy is what a client holds: a chunk list and the chunks.
type localCopy struct {
	version uint64
	list    []snapshot.ChunkRef
	chunks  map[snapshot.ChunkID][]byte
}

// pull syncs a local copy through /v1/sync and returns the wire bytes.
func (e *testEnv) pull(tok string, lc *localCopy) int {
	e.t.Helper()
	r := e.do("GET", fmt.Sprintf("/v1/sync?from=%d", lc.version), nil, withToken(tok))
	if r.status != 200 {
		e.t.Fatalf("sync: %d %s", r.status, r.body)
	}
	if r.header["Content-Type"] == "application/json" {
		return len(r.body)
	}
	readPack(e.t, r.body, lc)
	return len(r.body)
}

// decodePack reads a delta pack of any format as a client holding lc does,
// without changing lc: the pack's header, the chunk list it leads to and the
// chunks it carried, or the error that ended it.
func (lc *localCopy) decodePack(body []byte) (wire.SyncHeader, []snapshot.ChunkRef, map[snapshot.ChunkID][]byte, error) {
	d, err := wire.NewDeltaReader(bytes.NewReader(body), lc.list)
	if err != nil {
		return wire.SyncHeader{}, nil, nil, err
	}
	defer d.Close()
	got := map[snapshot.ChunkID][]byte{}
	for {
		j, raw, err := d.Next(func(i int) ([]byte, error) { return lc.chunks[lc.list[i].ID], nil })
		if err == io.EOF {
			return d.Header(), d.Chunks(), got, nil
		}
		if err != nil {
			return d.Header(), nil, nil, err
		}
		got[d.Chunks()[j].ID] = bytes.Clone(raw)
	}
}

// install makes lc the version a decoded pack leads to.
func (lc *localCopy) install(h wire.SyncHeader, list []snapshot.ChunkRef, got map[snapshot.ChunkID][]byte) {
	for id, b := range got {
		lc.chunks[id] = b
	}
	lc.list, lc.version = list, h.To
}

// readPack applies a pack of any format to lc with the current reader.
func readPack(t *testing.T, body []byte, lc *localCopy) {
	t.Helper()
	h, list, got, err := lc.decodePack(body)
	if err != nil {
		t.Fatal(err)
	}
	lc.install(h, list, got)
}

func (lc *localCopy) stream() []byte {
	var b []byte
	for _, c := range lc.list {
		b = append(b, lc.chunks[c.ID]...)
	}
	return b
}

func TestSyncEndToEnd(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
	e.client.MaxResponseBodySize = 8 << 20
	e.enableOrg("acme")
	recs := gen.Dataset(gen.Options{Size: 512 << 10, Seed: 1})
	if v := e.upload("acme", "alice", recs); v != 1 {
		t.Fatalf("first upload made version %d", v)
	}
	tok := userToken(t, "acme", "alice")
	lc := &localCopy{chunks: map[snapshot.ChunkID][]byte{}}
	e.pull(tok, lc)
	if lc.version != 1 || !bytes.Equal(lc.stream(), streamOf(recs)) {
		t.Fatalf("full sync: version %d, stream equal %v", lc.version, bytes.Equal(lc.stream(), streamOf(recs)))
	}
	if n := e.pull(tok, lc); n > 256 { // the policy it carries includes the blob limits
		t.Fatalf("up-to-date answer of %d bytes", n)
	}
	edited := gen.EditOneField(recs, 2)
	e.upload("acme", "alice", edited)
	n := e.pull(tok, lc)
	if lc.version != 2 || !bytes.Equal(lc.stream(), streamOf(edited)) {
		t.Fatalf("delta sync: version %d, stream equal %v", lc.version, bytes.Equal(lc.stream(), streamOf(edited)))
	}
	if n > 1024 {
		t.Fatalf("one-record edit cost %d bytes of body", n)
	}

	// Status for the settings page.
	r := e.do("GET", "/v1/status", nil, withToken(tok))
	var st wire.StatusResponse
	if err := json.Unmarshal(r.body, &st); err != nil || st.Head != 2 || st.Records != uint64(len(edited)) || !st.Policy.OfflineMode {
		t.Fatalf("status: %s (%v)", r.body, err)
	}

	// Unknown versions and bad parameters.
	for path, want := range map[string]int{
		"/v1/sync?from=9":              404,
		"/v1/sync?from=x":              400,
		"/v1/sync?from=1&to=7":         404,
		"/v1/sync?from=1&skip=999999":  400,
		"/v1/sync?from=2&wait=forever": 400,
	} {
		if r := e.do("GET", path, nil, withToken(tok)); r.status != want {
			t.Errorf("GET %s: %d, want %d", path, r.status, want)
		} else {
			r.errBody(t)
		}
	}
}

func TestSyncLongPoll(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
	e.client.MaxResponseBodySize = 8 << 20
	e.enableOrg("acme")
	recs := gen.Dataset(gen.Options{Size: 64 << 10, Seed: 1})
	e.upload("acme", "alice", recs)
	tok := userToken(t, "acme", "alice")
	got := make(chan response, 1)
	go func() { got <- e.do("GET", "/v1/sync?from=1&wait=20s", nil, withToken(tok)) }()
	waitUntil(t, "the poll waits", func() bool { _, waiters := e.s.hub.counts(); return waiters == 1 })
	select {
	case r := <-got:
		t.Fatalf("long poll answered before a new version: %d %s", r.status, r.body)
	default:
	}
	e.upload("acme", "alice", gen.EditOneField(recs, 1))
	select {
	case r := <-got:
		if r.status != 200 || r.header["Content-Type"] != wire.ContentTypeDelta || r.header["X-Deltasync-Version"] != "2" {
			t.Fatalf("long poll: %d %q %q", r.status, r.header["Content-Type"], r.header["X-Deltasync-Version"])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll did not wake up on a new version")
	}
}

// TestCrossUserAccess lists the ways one user could reach another's data.
func TestCrossUserAccess(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
	e.client.MaxResponseBodySize = 8 << 20
	e.enableOrg("acme")
	e.enableOrg("other")
	recs := gen.Dataset(gen.Options{Size: 64 << 10, Seed: 1})
	e.upload("acme", "alice", recs)
	e.upload("acme", "bob", gen.EditOneField(recs, 1))
	m, err := snapshot.ReadManifest(t.Context(), e.store, "acme", "bob", 1)
	if err != nil {
		t.Fatal(err)
	}
	alice := userToken(t, "acme", "alice")
	mallory := userToken(t, "other", "alice") // same user name, other org
	bobChunk := "/v1/chunks/" + m.Chunks[0].ID.String()
	if r := e.do("GET", bobChunk, nil, withToken(userToken(t, "acme", "bob"))); r.status != 200 {
		t.Fatalf("bob reading his own chunk: %d", r.status)
	}
	tests := []struct {
		name, method, path string
		tok                string
		want               int
	}{
		{"bob's chunk id", "GET", bobChunk, alice, 404},
		{"other org, same user name", "GET", "/v1/sync?from=0", mallory, 200}, // their own, empty data set
		{"other org reads alice's version", "GET", "/v1/sync?from=1", mallory, 404},
		{"admin settings with a user token", "PUT", "/v1/admin/orgs/acme", alice, 403},
		{"admin upload with a user token", "PUT", "/v1/admin/orgs/acme/users/bob/dataset", alice, 403},
		{"change feed with a user token", "GET", "/v1/admin/changes", alice, 403},
	}
	for _, tt := range tests {
		r := e.do(tt.method, tt.path, []byte(`{}`), withToken(tt.tok))
		if r.status != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, r.status, r.body, tt.want)
		}
		if tt.name == "other org, same user name" {
			var u wire.UpToDate
			if json.Unmarshal(r.body, &u) != nil || !u.UpToDate || u.Version != 0 {
				t.Errorf("%s: %s, want an empty up-to-date answer", tt.name, r.body)
			}
		}
	}
}

func TestChangeFeedEndpoint(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) {
		o.ChunkSecret = []byte("chunk-secret")
		o.FeedSettle = time.Millisecond
	}})
	e.enableOrg("acme")
	recs := gen.Dataset(gen.Options{Size: 32 << 10, Seed: 1})
	e.upload("acme", "alice", recs)
	e.upload("acme", "alice", gen.EditOneField(recs, 1))
	admin := adminToken(t)
	// newTestEnv runs on the real clock: a millisecond settle passes.
	waitUntil(t, "both entries settle", func() bool {
		r := e.do("GET", "/v1/admin/changes?limit=10", nil, withToken(admin))
		var p struct{ Entries []json.RawMessage }
		return r.status == 200 && json.Unmarshal(r.body, &p) == nil && len(p.Entries) == 2
	})
	var page struct {
		Entries []struct {
			Cursor    string
			ChangeSet struct {
				User    string
				Version uint64
				Changes []json.RawMessage
			} `json:"change_set"`
		}
		Next string
	}
	r := e.do("GET", "/v1/admin/changes?limit=1", nil, withToken(admin))
	if r.status != 200 || json.Unmarshal(r.body, &page) != nil || len(page.Entries) != 1 || page.Entries[0].ChangeSet.Version != 1 {
		t.Fatalf("first page: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/v1/admin/changes?limit=10&after="+page.Next, nil, withToken(admin))
	if r.status != 200 || json.Unmarshal(r.body, &page) != nil || len(page.Entries) != 1 || page.Entries[0].ChangeSet.Version != 2 || len(page.Entries[0].ChangeSet.Changes) != 1 {
		t.Fatalf("second page: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/admin/changes?after=nonsense", nil, withToken(admin)); r.status != 400 {
		t.Fatalf("bad cursor: %d", r.status)
	}
	_ = fasthttp.StatusOK
}
