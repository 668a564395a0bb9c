package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/internal/wirev2"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// oldClientPull syncs lc the way a client built before format 3 does: no
// format parameter, the pack read by that client's own reader (wirev2, a
// frozen copy). It returns the format byte of the answer.
func (e *testEnv) oldClientPull(tok string, lc *localCopy) byte {
	e.t.Helper()
	r := e.do("GET", fmt.Sprintf("/v1/sync?from=%d", lc.version), nil, withToken(tok))
	if r.status != 200 || r.header["Content-Type"] != wire.ContentTypeDelta {
		e.t.Fatalf("sync: %d %q %s", r.status, r.header["Content-Type"], r.body)
	}
	d, err := wirev2.NewDeltaReader(bytes.NewReader(r.body), lc.list)
	if err != nil {
		e.t.Fatalf("the old client cannot read the answer: %v", err)
	}
	defer d.Close()
	for {
		j, raw, err := d.Next(func(i int) ([]byte, error) { return lc.chunks[lc.list[i].ID], nil })
		if err == io.EOF {
			break
		}
		if err != nil {
			e.t.Fatalf("the old client cannot read the answer: %v", err)
		}
		lc.chunks[d.Chunks()[j].ID] = bytes.Clone(raw)
	}
	lc.list, lc.version = d.Chunks(), d.Header().To
	return r.body[4]
}

// TestOldClientGetsFormat2: a client that asks for no format (built before
// format 3) gets format 2 from this server, which its own reader rebuilds
// exactly, full syncs and deltas alike; the newest format is one it could
// not read.
func TestOldClientGetsFormat2(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
	e.client.MaxResponseBodySize = 8 << 20
	e.enableOrg("acme")
	recs := gen.Dataset(gen.Options{Size: 512 << 10, Seed: 41})
	e.upload("acme", "alice", recs)
	tok := userToken(t, "acme", "alice")
	old := &localCopy{chunks: map[snapshot.ChunkID][]byte{}}
	if f := e.oldClientPull(tok, old); f != wire.DeltaFormat2 || !bytes.Equal(old.stream(), streamOf(recs)) {
		t.Fatalf("full sync: format %d, stream equal %v", f, bytes.Equal(old.stream(), streamOf(recs)))
	}
	cur := recs
	for _, sc := range gen.Scenarios(41) {
		if sc.Name == "add-2MiB-attachment" {
			// A smaller photo takes the same path: encoding 2 MiB in format 2
			// takes 5.6 s under -race on a quiet machine (0.18 s without), and
			// timed out at the client's 20 s on a loaded CI host.
			sc.Apply = func(r []gen.Record) []gen.Record { return gen.AddAttachment(r, 256<<10, 41) }
		}
		cur = sc.Apply(cur)
		e.upload("acme", "alice", cur)
		if f := e.oldClientPull(tok, old); f != wire.DeltaFormat2 || !bytes.Equal(old.stream(), streamOf(cur)) {
			t.Fatalf("%s: format %d, stream equal %v", sc.Name, f, bytes.Equal(old.stream(), streamOf(cur)))
		}
	}

	r := e.do("GET", "/v1/sync?from=0&format=3", nil, withToken(tok))
	if r.status != 200 || r.body[4] != wire.DeltaFormat {
		t.Fatalf("format=3: %d, format byte %d", r.status, r.body[4])
	}
	if _, err := wirev2.NewDeltaReader(bytes.NewReader(r.body), nil); !errors.Is(err, snapshot.ErrUnsupportedVersion) {
		t.Fatalf("the old reader on format 3: %v, want ErrUnsupportedVersion", err)
	}
}

// TestSyncFormatParameter: the format a client asks for, and what it gets.
func TestSyncFormatParameter(t *testing.T) {
	e := newTestEnv(t, envConfig{opts: func(o *Options) { o.ChunkSecret = []byte("chunk-secret") }})
	e.client.MaxResponseBodySize = 8 << 20
	e.enableOrg("acme")
	recs := gen.Dataset(gen.Options{Size: 128 << 10, Seed: 42})
	e.upload("acme", "alice", recs)
	e.upload("acme", "alice", gen.EditScattered(recs, 20, 1))
	tok := userToken(t, "acme", "alice")
	for _, tc := range []struct {
		query  string
		status int
		format byte
	}{
		{"", 200, 2},
		{"&format=2", 200, 2},
		{"&format=3", 200, 3},
		{"&format=4", 200, 3}, // a client newer than the server: the newest it writes
		{"&format=18446744073709551615", 200, 3},
		{"&format=1", 400, 0},
		{"&format=0", 400, 0},
		{"&format=", 400, 0},
		{"&format=three", 400, 0},
		{"&format=-3", 400, 0},
		{"&format=18446744073709551616", 400, 0},
	} {
		for _, from := range []int{0, 1} {
			path := fmt.Sprintf("/v1/sync?from=%d%s", from, tc.query)
			r := e.do("GET", path, nil, withToken(tok))
			if r.status != tc.status {
				t.Errorf("GET %s: %d %s, want %d", path, r.status, r.body, tc.status)
				continue
			}
			if tc.status != 200 {
				if d := r.errBody(t); d.Code != wire.CodeBadRequest {
					t.Errorf("GET %s: code %q", path, d.Code)
				}
				continue
			}
			if r.body[4] != tc.format {
				t.Errorf("GET %s: format %d, want %d", path, r.body[4], tc.format)
			}
			lc := &localCopy{chunks: map[snapshot.ChunkID][]byte{}}
			if from == 1 {
				m, err := snapshot.ReadManifest(t.Context(), e.store, "acme", "alice", 1)
				if err != nil {
					t.Fatal(err)
				}
				lc.list = m.Chunks
				snapshot.NewReader(e.store, m, []byte("chunk-secret")).Chunks(t.Context(), allIdx(len(m.Chunks)), func(i int, raw []byte) error {
					lc.chunks[m.Chunks[i].ID] = bytes.Clone(raw)
					return nil
				})
			}
			readPack(t, r.body, lc)
			if !bytes.Equal(lc.stream(), streamOf(gen.EditScattered(recs, 20, 1))) {
				t.Errorf("GET %s: stream differs", path)
			}
		}
	}
}

func allIdx(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}
