package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Meta keys of the pull.
var (
	// metaDownload is the download in progress (downloadMarker JSON): the
	// chunks of that pack received so far are in the chunk cache.
	metaDownload = []byte("download")
	// metaSweep is set when a download was abandoned: the next install
	// sweeps the chunk cache of everything the new version does not use.
	metaSweep = []byte("sweep_chunks")
	// metaNeedFull is set when the local version cannot serve as the base
	// of a delta (damaged manifest or chunk cache): the next pull is a full
	// sync, so damage is repaired by refetching, never by guessing.
	metaNeedFull = []byte("need_full")
)

// downloadMarker is an interrupted download: the pack from From to To, of
// which the first Received chunks (Bytes raw bytes) are verified and in the
// chunk cache. It is written in the same transaction as those chunks.
type downloadMarker struct {
	From     uint64 `json:"from"`
	To       uint64 `json:"to"`
	Received int    `json:"received"`
	Bytes    int64  `json:"bytes"`
}

// errRestart asks pull to start over without the marker or the local base.
var errRestart = errors.New("restart the download")

// Chunks are written to the cache in batches: each batch is one fsync, and
// an interruption loses at most the chunks of the batch being received.
const (
	flushChunks = 64
	flushBytes  = 4 << 20
)

// pull brings the local version up to the server's head. wait > 0 makes it
// a long poll. It sets the state to syncing once a delta pack arrives.
func (c *Client) pull(ctx context.Context, waitSeconds int, res *SyncResult) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = c.pullOnce(ctx, waitSeconds, res)
		if !errors.Is(err, errRestart) {
			return err
		}
		waitSeconds = 0
	}
	return fmt.Errorf("sync: %w", err)
}

func (c *Client) loadMarker() (*downloadMarker, error) {
	raw, err := c.getMeta(metaDownload)
	if err != nil || raw == nil {
		return nil, err
	}
	var m downloadMarker
	if err := json.Unmarshal(raw, &m); err != nil {
		// A marker that cannot be read only costs a refetch.
		return nil, c.abandonDownload()
	}
	return &m, nil
}

// abandonDownload forgets the download in progress; its cached chunks are
// swept at the next install.
func (c *Client) abandonDownload() error {
	return c.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta.Get(metaDownload) == nil {
			return nil
		}
		if err := meta.Delete(metaDownload); err != nil {
			return err
		}
		return meta.Put(metaSweep, []byte{1})
	})
}

// localBase returns the local version and its manifest, or 0 and nil when
// the next pull must be a full sync.
func (c *Client) localBase() (uint64, *snapshot.Manifest, error) {
	v, mb, err := c.localVersion()
	if err != nil {
		return 0, nil, err
	}
	if nf, err := c.getMeta(metaNeedFull); err != nil {
		return 0, nil, err
	} else if nf != nil || v == 0 {
		return 0, nil, nil
	}
	m, err := snapshot.UnmarshalManifest(mb)
	if err != nil || m.Version != v {
		// Damaged: repair by a full sync.
		if err := c.setMeta(metaNeedFull, []byte{1}); err != nil {
			return 0, nil, err
		}
		return 0, nil, nil
	}
	return v, m, nil
}

func (c *Client) pullOnce(ctx context.Context, waitSeconds int, res *SyncResult) error {
	from, old, err := c.localBase()
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	mk, err := c.loadMarker()
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if mk != nil && mk.From != from {
		if err := c.abandonDownload(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		mk = nil
	}
	// format: the newest delta-pack format wire reads (an older server
	// ignores it and sends format 2, which wire reads too).
	q := url.Values{"from": {strconv.FormatUint(from, 10)}, "format": {strconv.Itoa(wire.DeltaFormat)}}
	if known := c.Status().ServerHead; known > from {
		// A version we know exists (a patch receipt, perhaps from another
		// replica): a replica whose cached head trails reads it again.
		q.Set("min", strconv.FormatUint(known, 10))
	}
	if mk != nil {
		q.Set("to", strconv.FormatUint(mk.To, 10))
		q.Set("skip", strconv.Itoa(mk.Received))
	} else if waitSeconds > 0 {
		q.Set("wait", strconv.Itoa(waitSeconds)+"s")
	}
	resp, err := c.request(ctx, "sync", http.MethodGet, "/v1/sync", q, nil, nil)
	var he *HTTPError
	if errors.As(err, &he) && he.Status == http.StatusNotFound {
		switch {
		case mk != nil:
			// The version being downloaded is gone (garbage collected).
			if err := c.abandonDownload(); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			return errRestart
		case from > 0:
			// The server does not know our version (its data was reset):
			// start again from nothing.
			if err := c.setMeta(metaNeedFull, []byte{1}); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			return errRestart
		}
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := &countingReader{r: resp.Body}
	defer func() { c.addBytes(body.take(), 0) }()

	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		var u wire.UpToDate
		if err := json.NewDecoder(io.LimitReader(body, 1<<20)).Decode(&u); err != nil {
			if body.err != nil {
				return &netError{op: "sync", err: body.err}
			}
			return &serverError{op: "sync", err: fmt.Errorf("up-to-date answer: %v", err)}
		}
		if err := c.notePolicy(u.Policy); err != nil {
			return err
		}
		c.setServerHead(u.Version)
		res.Version, res.ServerHead, res.UpToDate = from, u.Version, true
		return nil
	case wire.ContentTypeDelta:
		return c.applyDelta(ctx, body, from, old, mk, res)
	default:
		return &serverError{op: "sync", err: fmt.Errorf("unexpected content type %q", ct)}
	}
}

// notePolicy stores the policy when it changed.
func (c *Client) notePolicy(p wire.Policy) error {
	if c.Policy() == p {
		return nil
	}
	return c.setPolicy(p)
}

// applyDelta streams a delta pack into the chunk cache, then verifies and
// installs the new version.
func (c *Client) applyDelta(ctx context.Context, body *countingReader, from uint64, old *snapshot.Manifest, mk *downloadMarker, res *SyncResult) error {
	var oldChunks []snapshot.ChunkRef
	if old != nil {
		oldChunks = old.Chunks
	}
	d, err := wire.NewDeltaReader(body, oldChunks)
	if err != nil {
		return c.deltaError(body, err)
	}
	defer d.Close()
	h := d.Header()
	switch {
	case mk != nil && (h.From != mk.From || h.To != mk.To || h.Skip != mk.Received):
		// Not the pack we were resuming (the server fell back to a full
		// sync, say): what we hold of the old one does not line up.
		if err := c.abandonDownload(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		return errRestart
	case mk == nil && h.Skip != 0, h.From != from && h.From != 0, h.To <= h.From:
		return &serverError{op: "sync", err: fmt.Errorf("pack from %d to %d skipping %d answers a request from %d: %w", h.From, h.To, h.Skip, from, wire.ErrBadDelta)}
	}
	if h.From == 0 {
		old, oldChunks = nil, nil
	}
	if err := c.notePolicy(h.Policy); err != nil {
		return err
	}
	c.setServerHead(h.To)
	c.dataArrived()
	c.ensureSyncing()
	if mk == nil {
		mk = &downloadMarker{From: h.From, To: h.To}
	} else {
		res.Resumed = true
	}
	c.setProgress(mk.Bytes, h.Total.Bytes, mk.Received, h.Total.Chunks)

	chunks := d.Chunks()
	fetched := make(map[int]bool)
	var baseErr error
	base := func(i int) ([]byte, error) {
		if i < 0 || i >= len(oldChunks) {
			return nil, fmt.Errorf("old chunk %d of %d: %w", i, len(oldChunks), wire.ErrBadDelta)
		}
		raw, err := c.verifiedChunk(&oldChunks[i])
		if err != nil {
			baseErr = err
		}
		return raw, err
	}
	var batch []cachedChunk
	var batchBytes int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := c.putChunksMarked(batch, mk); err != nil {
			return err
		}
		batch, batchBytes = batch[:0], 0
		return nil
	}
	for {
		j, raw, err := d.Next(base)
		if err == io.EOF {
			break
		}
		if err != nil {
			// Keep what was verified: the resume will not fetch it again.
			if ferr := flush(); ferr != nil {
				return fmt.Errorf("sync: %w", ferr)
			}
			if baseErr != nil {
				// Our copy of the version is damaged (verifiedChunk asked
				// for a full sync): refetch everything.
				return fmt.Errorf("%w: %v", errRestart, baseErr)
			}
			var ae *wire.AbortError
			if errors.As(err, &ae) {
				return c.abortError(ae)
			}
			return c.deltaError(body, err)
		}
		ch := &chunks[j]
		ch.Sum = sha256.Sum256(raw)
		fetched[j] = true
		batch = append(batch, cachedChunk{ID: ch.ID, Data: bytes.Clone(raw)})
		batchBytes += len(raw)
		mk.Received++
		mk.Bytes += int64(len(raw))
		res.ChunksFetched++
		c.addBytes(body.take(), 0)
		c.setProgress(mk.Bytes, h.Total.Bytes, mk.Received, h.Total.Chunks)
		if len(batch) >= flushChunks || batchBytes >= flushBytes {
			if err := flush(); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	c.addBytes(body.take(), 0)
	err = c.finishVersion(ctx, h, old, chunks, fetched, res)
	if errors.Is(err, snapshot.ErrCorrupt) {
		// The pack checked out chunk by chunk but the whole does not: our
		// base is damaged. Refetch everything.
		if ferr := c.setMeta(metaNeedFull, []byte{1}); ferr != nil {
			return fmt.Errorf("sync: %w", ferr)
		}
		if aerr := c.abandonDownload(); aerr != nil {
			return fmt.Errorf("sync: %w", aerr)
		}
		return fmt.Errorf("%w: %v", errRestart, err)
	}
	return err
}

// deltaError turns a failure of the delta reader into a lost connection
// (the body was cut) or a server error (the pack is malformed).
func (c *Client) deltaError(body *countingReader, err error) error {
	if body.err != nil {
		return &netError{op: "sync", err: fmt.Errorf("download interrupted: %w", body.err)}
	}
	// Malformed, or a chunk not matching its ID: the server (or something
	// between) sent bad data. Nothing bad was stored; retry later.
	return &serverError{op: "sync", err: err}
}

// abortError handles a pack the server ended early: the version being sent
// is gone (404/410: forget the download and start again), or the server
// failed (a server error like a 5xx answer; the chunks verified so far are
// kept and the next pull resumes after them).
func (c *Client) abortError(ae *wire.AbortError) error {
	if ae.Status == http.StatusNotFound || ae.Status == http.StatusGone {
		if err := c.abandonDownload(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		return fmt.Errorf("%w: %v", errRestart, ae)
	}
	return &HTTPError{Op: "sync", Status: ae.Status, Code: ae.Code, Message: ae.Message}
}

// putChunksMarked stores verified chunks and the advanced marker in one
// transaction.
func (c *Client) putChunksMarked(chunks []cachedChunk, mk *downloadMarker) error {
	raw, err := json.Marshal(mk)
	if err != nil {
		return err
	}
	err = c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		for _, ch := range chunks {
			if err := b.Put(bytes.Clone(ch.ID[:]), ch.Data); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(metaDownload, raw)
	})
	if err != nil {
		return fmt.Errorf("cache chunks: %w", err)
	}
	return nil
}

// verifiedChunk reads a chunk of the local version from the cache and
// checks it against its SHA-256. A damaged chunk is dropped and the next
// pull made a full sync.
func (c *Client) verifiedChunk(ref *snapshot.ChunkRef) ([]byte, error) {
	raw, err := c.getChunk(ref.ID)
	if err == nil && sha256.Sum256(raw) == ref.Sum {
		return raw, nil
	}
	if err == nil {
		err = &snapshot.ChunkError{Op: "verify cached", ID: ref.ID, Err: snapshot.ErrCorrupt}
		if derr := c.deleteChunks([]snapshot.ChunkID{ref.ID}); derr != nil {
			return nil, derr
		}
	}
	if serr := c.setMeta(metaNeedFull, []byte{1}); serr != nil {
		return nil, serr
	}
	return nil, err
}

// finishVersion checks the downloaded version as a whole and installs it:
// every chunk present and matching its ID, the hash list equal to the
// manifest's stream hash; then the records are updated (from the changed
// chunks only, or all of them after a full sync) in one transaction.
func (c *Client) finishVersion(ctx context.Context, h wire.SyncHeader, old *snapshot.Manifest, chunks []snapshot.ChunkRef, fetched map[int]bool, res *SyncResult) error {
	hasher := snapshot.HasherFromSeeds(h.IDSeeds)
	oldIDs := make(map[snapshot.ChunkID]bool)
	if old != nil {
		for i := range old.Chunks {
			oldIDs[old.Chunks[i].ID] = true
		}
	}
	// Chunks neither received now nor carried over from the local version
	// came in an earlier, interrupted attempt: verify them again.
	var streamLen uint64
	for j := range chunks {
		ch := &chunks[j]
		streamLen += uint64(ch.Size)
		if fetched[j] || oldIDs[ch.ID] && ch.Sum != ([32]byte{}) {
			continue
		}
		raw, err := c.getChunk(ch.ID)
		if err != nil {
			return fmt.Errorf("sync: chunk %d of version %d: %w", j, h.To, errors.Join(err, snapshot.ErrCorrupt))
		}
		// The keyed ID is what proves the bytes; the SHA-256 is ours to add.
		ch.Sum = sha256.Sum256(raw)
		if err := snapshot.VerifyChunk(hasher, ch, raw); err != nil {
			return fmt.Errorf("sync: chunk %d of version %d: %w", j, h.To, err)
		}
	}
	have, err := c.hasChunks(chunkIDs(chunks))
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	for j, ok := range have {
		if !ok {
			return fmt.Errorf("sync: chunk %d (%s) of version %d is not in the cache: %w", j, chunks[j].ID, h.To, snapshot.ErrCorrupt)
		}
	}
	m := &snapshot.Manifest{
		Org: h.Org, User: h.User, Version: h.To, Parent: h.Manifest.Parent,
		ChunkerName: h.Manifest.ChunkerName, ChunkerVersion: h.Manifest.ChunkerVersion,
		Chunker: snapshot.ChunkerParams{Min: h.Manifest.Min, Avg: h.Manifest.Avg, Max: h.Manifest.Max},
		Records: h.Manifest.Records, StreamLen: h.Manifest.StreamLen, CreatedUnix: h.Manifest.CreatedUnix,
		Packs:  []string{"local"},
		Chunks: chunks,
	}
	for j := range m.Chunks {
		m.Chunks[j].Pack, m.Chunks[j].Offset, m.Chunks[j].StoredLen = 0, 0, m.Chunks[j].Size
	}
	m.SetStreamHash()
	want, err := hex.DecodeString(h.Manifest.StreamHash)
	if err != nil || !bytes.Equal(m.StreamHash[:], want) || streamLen != h.Manifest.StreamLen {
		return fmt.Errorf("sync: version %d rebuilt with stream hash %x, the server announced %s: %w", h.To, m.StreamHash, h.Manifest.StreamHash, snapshot.ErrCorrupt)
	}
	mb, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}

	u := versionUpdate{Version: h.To, Manifest: mb, ClearMeta: [][]byte{metaDownload, metaNeedFull, metaSweep}}
	if sw, err := c.getMeta(metaSweep); err != nil {
		return fmt.Errorf("sync: %w", err)
	} else if sw != nil || old == nil {
		u.SweepChunks = true
	}
	var changed []string // for the change listeners
	if old == nil {
		u.Full, u.FromChunks, u.RecordCount = true, m.Chunks, int64(m.Records)
	} else {
		changes, err := diff.Manifests(old, m).Records(ctx, cacheGetter{c, old}, cacheGetter{c, m})
		if err != nil {
			return fmt.Errorf("sync: record changes %d→%d: %w", old.Version, h.To, err)
		}
		changed = changedKeys(changes)
		u.Puts = func(put func(string, []byte) error) error {
			for i := range changes {
				if !changes[i].Deleted() {
					if err := put(changes[i].Key, changes[i].New); err != nil {
						return err
					}
				}
			}
			return nil
		}
		for i := range changes {
			if changes[i].Deleted() {
				u.Deletes = append(u.Deletes, changes[i].Key)
			}
		}
		newIDs := make(map[snapshot.ChunkID]bool, len(m.Chunks))
		for i := range m.Chunks {
			newIDs[m.Chunks[i].ID] = true
		}
		for id := range oldIDs {
			if !newIDs[id] {
				u.DropChunks = append(u.DropChunks, id)
			}
		}
		res.RecordsChanged = len(changes)
	}
	if err := c.installVersion(u); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	c.notifyInstalled(h.To, changed, old == nil)
	res.Version, res.Full = h.To, old == nil
	res.ChunksReused = len(chunks) - res.ChunksFetched
	if res.ChunksReused < 0 {
		res.ChunksReused = 0
	}
	return nil
}

func chunkIDs(chunks []snapshot.ChunkRef) []snapshot.ChunkID {
	ids := make([]snapshot.ChunkID, len(chunks))
	for i := range chunks {
		ids[i] = chunks[i].ID
	}
	return ids
}

// cacheGetter reads the chunks of one local version from the chunk cache,
// verifying each against its SHA-256.
type cacheGetter struct {
	c *Client
	m *snapshot.Manifest
}

func (g cacheGetter) Chunks(ctx context.Context, idx []int, fn func(i int, raw []byte) error) error {
	return g.c.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketChunks)
		for _, i := range idx {
			if err := ctx.Err(); err != nil {
				return err
			}
			if i < 0 || i >= len(g.m.Chunks) {
				return fmt.Errorf("chunk %d of %d: %w", i, len(g.m.Chunks), snapshot.ErrInvalid)
			}
			ref := &g.m.Chunks[i]
			raw := b.Get(ref.ID[:])
			if raw == nil || sha256.Sum256(raw) != ref.Sum {
				return &snapshot.ChunkError{Op: "read cached", ID: ref.ID, Err: snapshot.ErrCorrupt}
			}
			if err := fn(i, raw); err != nil {
				return err
			}
		}
		return nil
	})
}
