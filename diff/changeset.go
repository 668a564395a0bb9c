package diff

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// Kinds of change set.
const (
	KindBuild      = "build"       // a batch rebuild from a full data set
	KindPatch      = "patch"       // a replayed client (device) patch
	KindAdminPatch = "admin-patch" // a replayed admin patch: the backend's write
)

// Sources of a change, as the per-org change feed names them (Source).
const (
	SourceDevice = "device" // a device's patch
	SourceAdmin  = "admin"  // an admin patch: the backend wrote it
	SourceBuild  = "build"  // a whole data set (deltasync build, an admin upload)
)

// Source says where the change set came from: SourceDevice, SourceAdmin or
// SourceBuild (also for a kind this version does not know).
func (cs *ChangeSet) Source() string {
	switch cs.Kind {
	case KindPatch:
		return SourceDevice
	case KindAdminPatch:
		return SourceAdmin
	}
	return SourceBuild
}

// ChangeSet is the record-level change that produced a version from its
// parent, stored in the change feed (snapshot.FeedKey) and named by the
// version's manifest (Manifest.Changes). Replay reads the change set of a
// version it recovers a patch from; the change feed publishes them.
type ChangeSet struct {
	Org         string   `json:"org"`
	User        string   `json:"user"`
	Version     uint64   `json:"version"`
	Parent      uint64   `json:"parent"`
	Kind        string   `json:"kind"`
	CreatedUnix int64    `json:"created_unix"`
	Changes     []Change `json:"changes"`
	// Full marks the first version of a data set: every record is new, and
	// Changes is left empty rather than repeating the whole data set (read
	// the version itself).
	Full bool `json:"full,omitempty"`
	// For a patch: the patch as received and a receipt for every op.
	Patch    *Patch    `json:"patch,omitempty"`
	Receipts []Receipt `json:"receipts,omitempty"`
}

// maxChangeSet bounds a stored change set (decompressed).
const maxChangeSet = 1 << 30

// changesKey names a version's change set object in the change feed. The
// random suffix makes the name unique to one writer: it is written before
// the version is claimed, so a writer that loses the race for the version
// number leaves an unreferenced object behind (which the feed skips) instead
// of overwriting the winner's. Its time is after the parent's, so one user's
// versions appear in the feed in order even if replicas' clocks disagree:
// parent is the parent's manifest if the caller has it (a replay, a build),
// else nil and its header is read.
func changesKey(ctx context.Context, s snapshot.Getter, m, parent *snapshot.Manifest, now time.Time) (string, error) {
	ms := now.UnixMilli()
	if m.Parent > 0 {
		if parent == nil || parent.Version != m.Parent {
			p, err := snapshot.ReadManifestHeader(ctx, s, m.Org, m.User, m.Parent)
			if err != nil {
				return "", err
			}
			parent = p
		}
		if k, ok := snapshot.ParseFeedKey(parent.Changes); ok && k.Millis >= ms {
			ms = k.Millis + 1
		}
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	return snapshot.FeedKey(ms, m.Org, m.User, m.Version, hex.EncodeToString(nonce[:])), nil
}

// CommitVersion writes the change set (into the change feed), points the
// manifest at it and claims the version (see snapshot.Commit). If another
// writer claimed the version first it returns an error matching
// snapshot.ErrExist.
func CommitVersion(ctx context.Context, s snapshot.Store, m *snapshot.Manifest, cs *ChangeSet) error {
	return commitVersion(ctx, s, m, nil, cs)
}

// commitVersion is CommitVersion by a caller that may have the parent's
// manifest (nil if not).
func commitVersion(ctx context.Context, s snapshot.Store, m, parent *snapshot.Manifest, cs *ChangeSet) error {
	if err := claimVersion(ctx, s, m, parent, cs); err != nil {
		return err
	}
	snapshot.PutHeadHint(ctx, s, m)
	return nil
}

// claimVersion is commitVersion without the head hint (snapshot.Claim).
func claimVersion(ctx context.Context, s snapshot.Store, m, parent *snapshot.Manifest, cs *ChangeSet) error {
	cs.Org, cs.User, cs.Version, cs.Parent = m.Org, m.User, m.Version, m.Parent
	if cs.CreatedUnix == 0 {
		cs.CreatedUnix = m.CreatedUnix
	}
	if cs.Changes == nil {
		cs.Changes = []Change{}
	}
	body, err := json.Marshal(cs)
	if err != nil {
		return fmt.Errorf("encode change set: %w", err)
	}
	data := snapshot.Compress(nil, body)
	key, err := changesKey(ctx, s, m, parent, time.Now())
	if err != nil {
		return err
	}
	if _, err := s.PutIfAbsent(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		return &snapshot.ObjectError{Op: "write change set", Key: key, Err: err}
	}
	m.Changes = key
	return snapshot.Claim(ctx, s, m)
}

// ReadChangeSet loads the change set that produced version m.
func ReadChangeSet(ctx context.Context, s snapshot.Getter, m *snapshot.Manifest) (*ChangeSet, error) {
	if m.Changes == "" {
		return nil, &snapshot.ObjectError{Op: "read change set", Key: snapshot.ManifestKey(m.Org, m.User, m.Version),
			Err: fmt.Errorf("version %d has no change set: %w", m.Version, snapshot.ErrNotExist)}
	}
	data, err := snapshot.GetBytes(ctx, s, m.Changes, maxChangeSet)
	if err != nil {
		return nil, &snapshot.ObjectError{Op: "read change set", Key: m.Changes, Err: err}
	}
	body, err := snapshot.Decompress(nil, data)
	if err != nil {
		return nil, &snapshot.ObjectError{Op: "read change set", Key: m.Changes, Err: fmt.Errorf("%v: %w", err, snapshot.ErrCorrupt)}
	}
	var cs ChangeSet
	if err := json.Unmarshal(body, &cs); err != nil {
		return nil, &snapshot.ObjectError{Op: "read change set", Key: m.Changes, Err: fmt.Errorf("%v: %w", err, snapshot.ErrCorrupt)}
	}
	if cs.Version != m.Version || cs.Org != m.Org || cs.User != m.User {
		return nil, &snapshot.ObjectError{Op: "read change set", Key: m.Changes,
			Err: fmt.Errorf("names %s/%s version %d: %w", cs.Org, cs.User, cs.Version, snapshot.ErrCorrupt)}
	}
	return &cs, nil
}
