package gc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// Blobs (snapshot's layout: "<org>/_blobs/<hex>" content shared by the
// org, "<org>/<user>/blobs/<hex>" grants, "<org>/<user>/uploads/<hex>/…"
// uploads in progress) are collected after the users, per org. A blob is
// deleted only if all of these hold:
//
//   - its content is older than the grace period (judged again by a Stat
//     right before the delete);
//   - no grant for it is younger than the grace period: a grant is written
//     (or refreshed) when a user finishes uploading the blob and when a
//     patch references it, so a blob uploaded for a patch still on its way
//     waits for the patch;
//   - no user of the org has an upload of it in progress;
//   - no version left of any user of the org references it (every record
//     of every remaining version is read, after the versions gc deleted).
//
// Its grants go with it. Uploads in progress are never touched.

// blobObjects is what the listing found of blobs, by org.
type blobObjects struct {
	contents map[string]map[string]snapshot.ObjectInfo // org → hex → content
	grants   map[string]map[string][]snapshot.ObjectInfo
	uploads  map[string]map[string][]snapshot.ObjectInfo // org → "user/hex" → its objects
	users    map[string]map[string]bool
}

func newBlobObjects() *blobObjects {
	return &blobObjects{contents: map[string]map[string]snapshot.ObjectInfo{},
		grants: map[string]map[string][]snapshot.ObjectInfo{}, uploads: map[string]map[string][]snapshot.ObjectInfo{},
		users: map[string]map[string]bool{}}
}

func inner[V any](m map[string]map[string]V, k string) map[string]V {
	if m[k] == nil {
		m[k] = map[string]V{}
	}
	return m[k]
}

// note files one listed object if it is part of the blob layout, and
// remembers the users of each org.
func (b *blobObjects) note(oi snapshot.ObjectInfo) {
	org, rest, ok := strings.Cut(oi.Key, "/")
	if !ok || snapshot.ValidateName("org", org) != nil {
		return
	}
	if h, ok := strings.CutPrefix(rest, "_blobs/"); ok {
		if wire.ValidBlobHex(h) == nil && oi.Key == snapshot.BlobKey(org, h) {
			inner(b.contents, org)[h] = oi
		}
		return
	}
	user, rest, ok := strings.Cut(rest, "/")
	if !ok || snapshot.ValidateName("user", user) != nil {
		return
	}
	inner(b.users, org)[user] = true
	if h, ok := strings.CutPrefix(rest, "blobs/"); ok && wire.ValidBlobHex(h) == nil {
		g := inner(b.grants, org)
		g[h] = append(g[h], oi)
	}
	if r, ok := strings.CutPrefix(rest, "uploads/"); ok {
		if h, _, ok := strings.Cut(r, "/"); ok && wire.ValidBlobHex(h) == nil {
			u := inner(b.uploads, org)
			u[user+"/"+h] = append(u[user+"/"+h], oi)
		}
	}
}

// AbandonedUpload is how long an upload may go without a new byte before
// gc deletes it (Options.UploadExpiry, if longer). Its client still holds
// the blob and starts over: nothing is lost but the bytes sent.
const AbandonedUpload = 7 * 24 * time.Hour

// collectBlobs deletes abandoned uploads, then the blobs of every org that
// nothing keeps.
func (r *runner) collectBlobs(ctx context.Context, b *blobObjects, rep *Report) error {
	var errs []error
	if err := r.expireUploads(ctx, b, rep); err != nil {
		errs = append(errs, err)
	}
	for _, org := range slices.Sorted(maps.Keys(b.contents)) {
		cands := r.blobCandidates(b, org, rep)
		if len(cands) == 0 {
			continue
		}
		refs, err := r.referencedBlobs(ctx, org, slices.Sorted(maps.Keys(b.users[org])))
		if err != nil {
			errs = append(errs, fmt.Errorf("org %s: %w", org, err))
			rep.BlobsKept += len(cands)
			continue
		}
		for _, h := range cands {
			if refs[h] {
				rep.BlobsKept++
				continue
			}
			if err := r.deleteBlob(ctx, b, org, h, rep); err != nil {
				errs = append(errs, fmt.Errorf("org %s blob %s: %w", org, h, err))
			}
		}
	}
	return errors.Join(errs...)
}

// blobCandidates are the org's blobs that only a reference can keep now:
// old, no young grant, no upload in progress.
func (r *runner) blobCandidates(b *blobObjects, org string, rep *Report) []string {
	var out []string
	for _, h := range slices.Sorted(maps.Keys(b.contents[org])) {
		keep := !r.old(b.contents[org][h]) || b.uploading(org, h)
		for _, g := range b.grants[org][h] {
			keep = keep || !r.old(g)
		}
		if keep {
			rep.BlobsKept++
			continue
		}
		out = append(out, h)
	}
	return out
}

// uploading reports whether an upload of blob h is in progress in org.
func (b *blobObjects) uploading(org, h string) bool {
	for k := range b.uploads[org] {
		if strings.HasSuffix(k, "/"+h) {
			return true
		}
	}
	return false
}

// expireUploads deletes the uploads whose newest object is older than
// AbandonedUpload (and the grace period), parts first, and forgets them.
func (r *runner) expireUploads(ctx context.Context, b *blobObjects, rep *Report) error {
	age := max(AbandonedUpload, r.opts.Grace)
	for org, ups := range b.uploads {
		for k, objs := range ups {
			newest := objs[0].ModTime
			for _, o := range objs {
				if o.ModTime.After(newest) {
					newest = o.ModTime
				}
			}
			if newest.After(r.now.Add(-age)) {
				continue
			}
			rep.UploadsExpired++
			delete(ups, k)
			if r.opts.DryRun {
				continue
			}
			slices.SortFunc(objs, func(a, b snapshot.ObjectInfo) int { return strings.Compare(a.Key, b.Key) }) // parts, then info.json
			for _, o := range objs {
				if err := r.s.Delete(ctx, o.Key); err != nil {
					return fmt.Errorf("expire upload %s/%s: %w", org, k, err)
				}
			}
		}
	}
	return nil
}

// referencedBlobs reads every record of every version of the org's users
// and returns the blobs they reference.
func (r *runner) referencedBlobs(ctx context.Context, org string, users []string) (map[string]bool, error) {
	refs := map[string]bool{}
	for _, user := range users {
		var versions []uint64
		err := r.s.List(ctx, snapshot.UserPrefix(org, user)+"versions/", func(oi snapshot.ObjectInfo) error {
			if v, ok := snapshot.ParseManifestKey(oi.Key); ok {
				versions = append(versions, v)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, v := range versions {
			m, err := snapshot.ReadManifest(ctx, r.s, org, user, v)
			if errors.Is(err, snapshot.ErrNotExist) {
				continue // deleted since the listing
			}
			if err != nil {
				return nil, err
			}
			err = r.records(ctx, m, func(_, value []byte) error {
				hs, _ := wire.BlobRefs(value)
				for _, h := range hs {
					refs[h] = true
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("read %s/%s version %d: %w", org, user, v, err)
			}
		}
	}
	return refs, nil
}

// records reads every record of version m. gc holds no chunk-ID secret
// (a server may be configured with one of its own), so each chunk is
// verified by its SHA-256 instead; one ranged read per chunk, as gc reads
// data sets only to find blob references.
func (r *runner) records(ctx context.Context, m *snapshot.Manifest, fn func(key, value []byte) error) error {
	d := &snapshot.RecordDecoder{}
	var raw []byte
	for i := range m.Chunks {
		c := &m.Chunks[i]
		if int(c.Pack) >= len(m.Packs) {
			return fmt.Errorf("chunk %d names pack %d of %d: %w", i, c.Pack, len(m.Packs), snapshot.ErrCorrupt)
		}
		frame, err := r.readFrame(ctx, snapshot.PackKey(m.Org, m.User, m.Packs[c.Pack]), c)
		if err != nil {
			return err
		}
		if raw, err = snapshot.DecompressAtMost(raw[:0], frame, int(c.Size)); err != nil {
			return fmt.Errorf("chunk %d: %v: %w", i, err, snapshot.ErrCorrupt)
		}
		if len(raw) != int(c.Size) || sha256.Sum256(raw) != c.Sum {
			return fmt.Errorf("chunk %d does not match its SHA-256: %w", i, snapshot.ErrCorrupt)
		}
		if err := d.Feed(raw, fn); err != nil {
			return err
		}
	}
	return d.Close()
}

func (r *runner) readFrame(ctx context.Context, key string, c *snapshot.ChunkRef) ([]byte, error) {
	rc, err := r.s.GetRange(ctx, key, int64(c.Offset), int64(c.StoredLen))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	frame := make([]byte, c.StoredLen)
	if _, err := io.ReadFull(rc, frame); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return frame, nil
}

// deleteBlob deletes a blob's content (if still old) and its grants.
func (r *runner) deleteBlob(ctx context.Context, b *blobObjects, org, h string, rep *Report) error {
	key := snapshot.BlobKey(org, h)
	oi, err := r.s.Stat(ctx, key)
	if errors.Is(err, snapshot.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	young := !r.old(oi)
	for _, g := range b.grants[org][h] {
		if gi, err := r.s.Stat(ctx, g.Key); err == nil && !r.old(gi) {
			young = true // a patch referenced it since the listing
		}
	}
	if young {
		rep.BlobsKept++
		return nil
	}
	rep.BlobsDeleted++
	rep.BlobBytesFreed += oi.Size
	if r.opts.DryRun {
		return nil
	}
	r.opts.Logger.Debug("gc: delete blob", "org", org, "blob", h, "bytes", oi.Size)
	if err := r.s.Delete(ctx, key); err != nil {
		return err
	}
	for _, g := range b.grants[org][h] {
		if err := r.s.Delete(ctx, g.Key); err != nil {
			return err
		}
	}
	return nil
}
