package state

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// Records is a source of records in strictly increasing key order, as
// InstallRecords takes them.
type Records func(yield func(key string, value []byte) error) error

// InstallRecords installs records as version v without a server: they are
// cut into chunks with the given chunker parameters, each stored with an
// ID of its own making (the first 16 bytes of its SHA-256: the server's
// keyed IDs cannot be computed here), and switched in like a full sync.
// Migration uses it to carry a format-1 state over (with the server's
// manifest when the chunks come out the same), tests to set up a version.
// The returned manifest is the one installed.
func (s *Store) InstallRecords(ctx context.Context, v uint64, p snapshot.ChunkerParams, recs Records, server *snapshot.Manifest) (*snapshot.Manifest, error) {
	m, _, err := s.installRecords(ctx, v, p, recs, server)
	return m, err
}

// installRecords is InstallRecords, with what the install reports.
func (s *Store) installRecords(ctx context.Context, v uint64, p snapshot.ChunkerParams, recs Records, server *snapshot.Manifest) (*snapshot.Manifest, *Installed, error) {
	d, err := s.StartDownload(0, v, nil, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	ch, err := snapshot.NewChunker(p, func(c snapshot.ChunkData) error {
		sum := sha256.Sum256(c.Data)
		var id snapshot.ChunkID
		copy(id[:], sum[:])
		d.chunks = append(d.chunks, snapshot.ChunkRef{ID: id, Size: uint32(len(c.Data)), StoredLen: uint32(len(c.Data)),
			Records: uint32(c.Records), Continued: c.Continued, FirstKey: c.FirstKey})
		d.seqs = append(d.seqs, 0)
		return d.Add(len(d.chunks)-1, c.Data)
	})
	if err != nil {
		return nil, nil, err
	}
	var n, streamLen uint64
	err = recs(func(key string, value []byte) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		n++
		streamLen += uint64(snapshot.EncodedLen(key, value))
		return ch.Add(key, value)
	})
	if err == nil {
		err = ch.Close()
	}
	if err != nil {
		d.abandon()
		return nil, nil, fmt.Errorf("install version %d: %w", v, err)
	}
	m := &snapshot.Manifest{Version: v, ChunkerName: snapshot.ChunkerName, ChunkerVersion: snapshot.ChunkerVersion,
		Chunker: p, Records: n, StreamLen: streamLen, CreatedUnix: time.Now().Unix(), Packs: []string{"local"}}
	if server != nil && sameChunks(server, d.chunks) {
		// The records cut into the server's chunks: keep its manifest (and
		// its keyed IDs, which the next delta is computed against).
		for i := range d.chunks {
			d.chunks[i].ID = server.Chunks[i].ID
		}
		m = server
	}
	m.Chunks = d.chunks
	m.SetStreamHash()
	in, err := d.Finish(ctx, m, m.StreamHash)
	if err != nil {
		d.abandon()
		return nil, nil, err
	}
	return m, in, nil
}

// sameChunks reports whether chunks are exactly the server manifest's.
func sameChunks(m *snapshot.Manifest, chunks []snapshot.ChunkRef) bool {
	if len(m.Chunks) != len(chunks) {
		return false
	}
	for i := range chunks {
		a, b := &m.Chunks[i], &chunks[i]
		if a.Sum != b.Sum || a.Size != b.Size || a.Records != b.Records || a.Continued != b.Continued || a.FirstKey != b.FirstKey {
			return false
		}
	}
	return true
}

// abandon drops what a failed local install stored.
func (d *Download) abandon() { _ = d.s.AbandonDownload() }
