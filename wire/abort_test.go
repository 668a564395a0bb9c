package wire_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/wire"
)

// failingGetter reads chunks through r but fails with err when it reaches
// chunk at (after passing on the chunks before it); at -1 fails every read.
type failingGetter struct {
	r   snapshot.ChunkGetter
	at  int
	err error
}

func (g failingGetter) Chunks(ctx context.Context, idx []int, fn func(int, []byte) error) error {
	if g.at < 0 {
		return g.err
	}
	for k, i := range idx {
		if i == g.at {
			if err := g.r.Chunks(ctx, idx[:k], fn); err != nil {
				return err
			}
			return g.err
		}
	}
	return g.r.Chunks(ctx, idx, fn)
}

func deltaSource(s snapshot.Store, a, b *snapshot.Manifest) wire.DeltaSource {
	ds := wire.DeltaSource{Script: diff.Manifests(a, b), NewChunks: snapshot.NewReader(s, b, secret)}
	if a != nil {
		ds.OldChunks = snapshot.NewReader(s, a, secret)
		ds.Header.From = a.Version
	}
	ds.Header.To = b.Version
	ds.Header.IDSeeds = snapshot.NewHasher(secret, "acme", "alice").Seeds()
	return ds
}

// TestDeltaAbortFrame: a chunk the server cannot read mid-stream ends the
// pack with an abort frame, which the reader returns as *AbortError after
// the chunks before it (verified, usable for a resume), on every later call
// too, never as io.EOF or as a malformed pack.
func TestDeltaAbortFrame(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 512 << 10, Seed: 21})
	b := build(t, s, recs)
	at := len(b.Chunks) * 2 / 3
	cause := &snapshot.ObjectError{Op: "read pack", Key: "acme/alice/packs/x.pack", Err: snapshot.ErrCorrupt}
	for _, tc := range []struct {
		name  string
		abort func(error) *wire.AbortError
		want  wire.AbortError
	}{
		{"default", nil, wire.AbortError{Status: 500, Code: wire.CodeInternal}},
		{"classified", func(err error) *wire.AbortError {
			return &wire.AbortError{Status: 404, Code: wire.CodeNotFound, Message: fmt.Sprintf("gone (%v)", errors.Is(err, snapshot.ErrCorrupt))}
		}, wire.AbortError{Status: 404, Code: wire.CodeNotFound, Message: "gone (true)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := deltaSource(s, nil, b)
			ds.NewChunks = failingGetter{r: ds.NewChunks, at: at, err: cause}
			ds.Abort = tc.abort
			var buf bytes.Buffer
			err := wire.WriteDelta(context.Background(), &buf, ds)
			if !errors.Is(err, wire.ErrDeltaAborted) || !errors.Is(err, snapshot.ErrCorrupt) {
				t.Fatalf("WriteDelta: %v, want ErrDeltaAborted wrapping the cause", err)
			}
			d, err := wire.NewDeltaReader(bytes.NewReader(buf.Bytes()), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := 0
			for {
				j, _, err := d.Next(nil)
				if err == nil {
					if j >= at {
						t.Fatalf("chunk %d after the failing chunk %d", j, at)
					}
					got++
					continue
				}
				var ae *wire.AbortError
				if !errors.As(err, &ae) {
					t.Fatalf("after %d chunks: %v, want *AbortError", got, err)
				}
				if ae.Status != tc.want.Status || ae.Code != tc.want.Code || tc.want.Message != "" && ae.Message != tc.want.Message {
					t.Fatalf("abort %+v, want %+v", *ae, tc.want)
				}
				if _, _, err2 := d.Next(nil); !errors.As(err2, &ae) {
					t.Fatalf("Next after the abort: %v, want the abort again", err2)
				}
				break
			}
			if got != at {
				t.Fatalf("%d chunks before the abort, want %d", got, at)
			}
		})
	}
}

// TestDeltaAbortFrameStatusChecked: an abort frame may only say 404, 410 or
// 5xx; anything else is a malformed pack.
func TestDeltaAbortFrameStatusChecked(t *testing.T) {
	s := memstore.New()
	b := build(t, s, gen.Dataset(gen.Options{Size: 64 << 10, Seed: 22}))
	for _, status := range []int{0, 200, 401, 403, 499, 600} {
		ds := deltaSource(s, nil, b)
		ds.NewChunks = failingGetter{r: ds.NewChunks, at: 1, err: snapshot.ErrCorrupt}
		ds.Abort = func(error) *wire.AbortError { return &wire.AbortError{Status: status, Code: "x", Message: "y"} }
		var buf bytes.Buffer
		wire.WriteDelta(context.Background(), &buf, ds)
		_, _, err := apply(t, buf.Bytes(), nil, nil)
		if !errors.Is(err, wire.ErrBadDelta) {
			t.Errorf("abort frame with status %d: %v, want ErrBadDelta", status, err)
		}
	}
}

// TestDeltaOldChunksUnreadable: the old version's chunks serve only as
// dictionaries; when they cannot be read (gc deleted their pack while the
// pack was being written), the new chunks go whole and the pack is complete.
func TestDeltaOldChunksUnreadable(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 512 << 10, Seed: 23})
	a := build(t, s, recs)
	edited := gen.EditScattered(recs, 8, 2)
	b := build(t, s, edited)
	have := chunkMap(t, s, a)
	for _, format := range []int{wire.DeltaFormat2, wire.DeltaFormat} {
		t.Run(fmt.Sprint("format", format), func(t *testing.T) {
			withDict := packFormat(t, s, a, b, 0, format)
			ds := deltaSource(s, a, b)
			ds.Format = format
			var told []error
			// Every read of the old version fails, whichever chunks the
			// format's dictionaries ask for.
			ds.OldChunks = failingGetter{r: ds.OldChunks, at: -1, err: &snapshot.ObjectError{Op: "read pack", Key: "gone", Err: snapshot.ErrNotExist}}
			ds.OldChunkError = func(err error) { told = append(told, err) }
			var buf bytes.Buffer
			if err := wire.WriteDelta(context.Background(), &buf, ds); err != nil {
				t.Fatalf("WriteDelta with unreadable old chunks: %v", err)
			}
			if len(told) == 0 || !errors.Is(told[0], snapshot.ErrNotExist) {
				t.Fatalf("OldChunkError told %v", told)
			}
			chunks, got, err := apply(t, buf.Bytes(), a, have)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(streamFrom(chunks, got, have), streamOf(edited)) {
				t.Fatal("rebuilt stream differs")
			}
			if buf.Len() <= len(withDict) {
				t.Fatalf("pack without dictionaries %d bytes, with %d: expected bigger", buf.Len(), len(withDict))
			}
		})
	}
}
