package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"

	"github.com/deltasync/deltasync/client/internal/state"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// errRestart asks pull to start over without the marker or the local base.
var errRestart = errors.New("restart the download")

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

// localBase returns the local version and its chunk list (read on
// demand), or 0 and nil when the next pull must be a full sync.
func (c *Client) localBase() (uint64, *state.Base, error) {
	if nf, err := c.store.NeedFull(); err != nil || nf {
		return 0, nil, err
	}
	b, err := c.store.Base()
	if errors.Is(err, ErrCorrupt) {
		// Damaged: repair by a full sync.
		return 0, nil, c.store.SetNeedFull()
	}
	if err != nil || b == nil {
		return 0, nil, err
	}
	return b.Version(), b, nil
}

func (c *Client) pullOnce(ctx context.Context, waitSeconds int, res *SyncResult) error {
	// What an interrupted install left (a replaced version's chunks).
	if err := c.store.Cleanup(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	from, old, err := c.localBase()
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	mk, err := c.store.Marker()
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if mk != nil && mk.From != from {
		if err := c.store.AbandonDownload(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		mk = nil
	}
	q := c.syncQuery(from, mk, waitSeconds)
	rctx, abort := context.WithCancel(ctx) // the request, ended by a stalled body
	defer abort()
	resp, err := c.request(rctx, "sync", http.MethodGet, "/v1/sync", q, nil, nil)
	var he *HTTPError
	if errors.As(err, &he) && he.Status == http.StatusNotFound {
		switch {
		case mk != nil:
			// The version being downloaded is gone (garbage collected).
			if err := c.store.AbandonDownload(); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			return errRestart
		case from > 0:
			// The server does not know our version (its data was reset):
			// start again from nothing.
			if err := c.store.SetNeedFull(); err != nil {
				return fmt.Errorf("sync: %w", err)
			}
			return errRestart
		}
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	idle := newIdleReader(resp.Body, c.opts.requestTimeout(), abort)
	defer idle.stop()
	body := &countingReader{r: idle}
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

// syncQuery is what a sync from version from asks for: the download that
// mk resumes, or whatever is newer (waiting up to waitSeconds for it).
func (c *Client) syncQuery(from uint64, mk *state.Marker, waitSeconds int) url.Values {
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
	return q
}

// notePolicy stores the policy when it changed.
func (c *Client) notePolicy(p wire.Policy) error {
	if c.Policy() == p {
		return nil
	}
	return c.setPolicy(p)
}

// openDelta reads a delta pack's header and manifest delta against base
// (nil: none); a base that turns out damaged asks for a full sync.
func (c *Client) openDelta(body *countingReader, base *state.Base) (*wire.DeltaReader, error) {
	var d *wire.DeltaReader
	var err error
	if base != nil {
		d, err = wire.NewDeltaReaderBase(body, base)
	} else {
		d, err = wire.NewDeltaReader(body, nil)
	}
	if errors.Is(err, ErrCorrupt) && !errors.Is(err, wire.ErrBadDelta) {
		if ferr := c.store.SetNeedFull(); ferr != nil {
			return nil, fmt.Errorf("sync: %w", ferr)
		}
		return nil, fmt.Errorf("%w: %v", errRestart, err)
	}
	if err != nil {
		return nil, c.deltaError(body, err)
	}
	return d, nil
}

// applyDelta streams a delta pack into the staging area, then verifies
// and installs the new version. A format-3 delta is read and installed as
// an edit of base, the rest with base's list read whole.
func (c *Client) applyDelta(ctx context.Context, body *countingReader, from uint64, base *state.Base, mk *state.Marker, res *SyncResult) error {
	d, err := c.openDelta(body, base)
	if err != nil {
		return err
	}
	defer d.Close()
	h := d.Header()
	switch {
	case mk != nil && (h.From != mk.From || h.To != mk.To || h.Skip != mk.Received):
		// Not the pack we were resuming (the server fell back to a full
		// sync, say): what we hold of the old one does not line up.
		if err := c.store.AbandonDownload(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		return errRestart
	case mk == nil && h.Skip != 0, h.From != from && h.From != 0, h.To <= h.From:
		return &serverError{op: "sync", err: fmt.Errorf("pack from %d to %d skipping %d answers a request from %d: %w", h.From, h.To, h.Skip, from, wire.ErrBadDelta)}
	}
	if err := c.checkPackFor(h, from, base); err != nil {
		return err
	}
	if h.From == 0 {
		base = nil
	}
	if err := c.notePolicy(h.Policy); err != nil {
		return err
	}
	c.setServerHead(h.To)
	c.dataArrived()
	c.ensureSyncing()
	res.Resumed = mk != nil
	dl, oldRaw, err := c.startDownload(ctx, h, d, base, mk)
	if errors.Is(err, ErrCorrupt) && mk != nil {
		// The staging area does not hold what the marker says: refetch.
		if err := c.store.AbandonDownload(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		return fmt.Errorf("%w: %v", errRestart, err)
	}
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if err := c.receive(body, d, dl, oldRaw, res); err != nil {
		return err
	}
	err = c.finishVersion(ctx, h, d.Chunks(), dl, res)
	if errors.Is(err, snapshot.ErrCorrupt) {
		// The pack checked out chunk by chunk but the whole does not: our
		// base is damaged. Refetch everything.
		if ferr := c.store.SetNeedFull(); ferr != nil {
			return fmt.Errorf("sync: %w", ferr)
		}
		if aerr := c.store.AbandonDownload(); aerr != nil {
			return fmt.Errorf("sync: %w", aerr)
		}
		return fmt.Errorf("%w: %v", errRestart, err)
	}
	return err
}

// checkPackFor refuses a pack that would put another data set in place of
// the one on the device: a version older than from, the one the client
// asked to follow (a rollback: a replica restored from an old backup; a
// server whose data was reset answers 404 instead, and the client starts
// again from nothing), or another org's or user's data (a server or proxy
// mixing up users; a device changing users is wiped first). base is the
// installed version (nil: read it, as a full sync does not use it). The
// installed version stays; the answer is a server error.
func (c *Client) checkPackFor(h wire.SyncHeader, from uint64, base *state.Base) error {
	if h.To < from {
		return &serverError{op: "sync", err: fmt.Errorf("asked for what follows version %d, the server answered version %d", from, h.To)}
	}
	if base == nil {
		b, err := c.store.Base()
		if err != nil || b == nil {
			return nil // nothing installed, or damaged: a full sync replaces it
		}
		base = b
	}
	m := base.Header()
	if h.Org != "" && h.User != "" && m.Org != "" && m.User != "" && (h.Org != m.Org || h.User != m.User) {
		return &serverError{op: "sync", err: fmt.Errorf("the server answered with the data set of %s/%s; this device holds %s/%s's (wipe it to change users)",
			h.Org, h.User, m.Org, m.User)}
	}
	return nil
}

// startDownload starts storing the pack: as an edit of base (format 3),
// or with its new list and base's whole. oldRaw reads an old chunk (nil
// for a full sync).
func (c *Client) startDownload(ctx context.Context, h wire.SyncHeader, d *wire.DeltaReader, base *state.Base, mk *state.Marker) (*state.Download, func(int) ([]byte, error), error) {
	if base == nil {
		dl, err := c.store.StartDownload(h.From, h.To, d.Chunks(), nil, mk)
		return dl, nil, err
	}
	if e := d.Edit(); e != nil {
		dl, err := c.store.StartDelta(base, h.To, &state.ListEdit{Regions: e.Regions, Entries: e.Entries, Len: e.Len}, mk)
		return dl, func(i int) ([]byte, error) { return base.Raw(ctx, i) }, err
	}
	old, _, err := base.All()
	if err != nil {
		return nil, nil, err
	}
	dl, err := c.store.StartDownload(h.From, h.To, d.Chunks(), old, mk)
	g := c.store.VersionChunks(old)
	return dl, func(i int) ([]byte, error) {
		var raw []byte
		err := g.Chunks(ctx, []int{i}, func(_ int, b []byte) error { raw = b; return nil })
		return raw, err
	}, err
}

// receive stores the pack's chunks as they arrive (Download writes them in
// batches, each with the marker), reporting progress. If the pack breaks
// off, what was verified is written, so the next pull resumes after it.
// oldRaw reads the old chunks a chunk is compressed against.
func (c *Client) receive(body *countingReader, d *wire.DeltaReader, dl *state.Download, oldRaw func(int) ([]byte, error), res *SyncResult) error {
	h := d.Header()
	mk := dl.Marker()
	c.setProgress(mk.Bytes, h.Total.Bytes, mk.Received, h.Total.Chunks)
	var baseErr error
	base := func(i int) ([]byte, error) {
		if oldRaw == nil {
			return nil, fmt.Errorf("old chunk %d: %w", i, wire.ErrBadDelta)
		}
		raw, err := oldRaw(i)
		if errors.Is(err, ErrInvalid) {
			return nil, fmt.Errorf("old chunk %d: %v: %w", i, err, wire.ErrBadDelta)
		}
		if errors.Is(err, ErrCorrupt) {
			// Our copy of the version is damaged: refetch everything.
			baseErr = errors.Join(err, c.store.SetNeedFull())
		}
		return raw, err
	}
	for {
		j, raw, err := d.Next(base)
		if err == io.EOF {
			break
		}
		if err != nil {
			// Keep what was verified: the resume will not fetch it again.
			if ferr := dl.Flush(); ferr != nil {
				return fmt.Errorf("sync: %w", ferr)
			}
			if baseErr == nil && errors.Is(err, ErrCorrupt) && !errors.Is(err, wire.ErrBadDelta) {
				// The local list (read as the pack needs it) is damaged.
				baseErr = errors.Join(err, c.store.SetNeedFull())
			}
			if baseErr != nil {
				return fmt.Errorf("%w: %v", errRestart, baseErr)
			}
			var ae *wire.AbortError
			if errors.As(err, &ae) {
				return c.abortError(ae)
			}
			return c.deltaError(body, err)
		}
		if err := dl.Add(j, raw); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		res.ChunksFetched++
		c.addBytes(body.take(), 0)
		mk := dl.Marker()
		c.setProgress(mk.Bytes, h.Total.Bytes, mk.Received, h.Total.Chunks)
	}
	// The last batch is written by Finish: with a small delta, in the
	// transaction that installs it.
	c.addBytes(body.take(), 0)
	return nil
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
		if err := c.store.AbandonDownload(); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		return fmt.Errorf("%w: %v", errRestart, ae)
	}
	return &HTTPError{Op: "sync", Status: ae.Status, Code: ae.Code, Message: ae.Message}
}

// finishVersion checks the downloaded version as a whole and installs it
// (state.Download.Finish): every chunk present and the SHA-256 hash list
// equal to the manifest's stream hash; then the records are switched, from
// the changed chunks only after a delta.
func (c *Client) finishVersion(ctx context.Context, h wire.SyncHeader, chunks []snapshot.ChunkRef, dl *state.Download, res *SyncResult) error {
	streamLen := h.Manifest.StreamLen // an edit's: checked by the reader
	if chunks != nil && len(chunks) == h.Manifest.Chunks {
		streamLen = 0
		for j := range chunks {
			streamLen += uint64(chunks[j].Size)
		}
	}
	announced, err := hex.DecodeString(h.Manifest.StreamHash)
	if err != nil || len(announced) != 32 || streamLen != h.Manifest.StreamLen {
		return fmt.Errorf("sync: version %d of %d bytes announced with stream hash %q and %d bytes: %w",
			h.To, streamLen, h.Manifest.StreamHash, h.Manifest.StreamLen, snapshot.ErrCorrupt)
	}
	m := &snapshot.Manifest{
		Org: h.Org, User: h.User, Version: h.To, Parent: h.Manifest.Parent,
		ChunkerName: h.Manifest.ChunkerName, ChunkerVersion: h.Manifest.ChunkerVersion,
		Chunker: snapshot.ChunkerParams{Min: h.Manifest.Min, Avg: h.Manifest.Avg, Max: h.Manifest.Max},
		Records: h.Manifest.Records, StreamLen: h.Manifest.StreamLen, CreatedUnix: h.Manifest.CreatedUnix,
		Packs: []string{"local"},
	}
	for j := range chunks {
		chunks[j].Pack, chunks[j].Offset, chunks[j].StoredLen = 0, 0, chunks[j].Size
	}
	in, err := dl.Finish(ctx, m, [32]byte(announced))
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	c.installed(in)
	c.noteSyncedBlobs(in) // blobs: eager downloads after the sync
	res.Version, res.Full = in.Version, in.Full
	if !in.Full {
		res.RecordsChanged = in.Changed
	}
	res.ChunksReused = max(h.Manifest.Chunks-res.ChunksFetched, 0)
	return nil
}
