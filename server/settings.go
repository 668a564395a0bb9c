package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/wire"
)

// OrgSettings is what the store holds at snapshot.OrgSettingsKey(org): the
// org's offline policy and when it last changed. In JSON the policy fields
// sit at the top level beside "updated_unix".
type OrgSettings struct {
	wire.Policy
	UpdatedUnix int64 `json:"updated_unix"`
	HookSettings
}

// DefaultOrgSettings are the settings of an org nobody configured: offline
// mode off, the client's edit wins conflicts, no limits.
func DefaultOrgSettings() OrgSettings {
	return OrgSettings{Policy: wire.Policy{OfflineMode: false, ConflictPolicy: wire.PolicyClientWins}}
}

// maxSettingsBytes bounds what is read back from the settings object.
const maxSettingsBytes = 64 << 10

// ValidPolicy reports whether name is a known conflict policy.
func ValidPolicy(name string) bool {
	switch name {
	case wire.PolicyClientWins, wire.PolicyServerWins, wire.PolicyReject:
		return true
	}
	return false
}

func (o OrgSettings) validate() error {
	if !ValidPolicy(o.ConflictPolicy) {
		return badRequest("conflict_policy %q is not one of %q, %q, %q",
			o.ConflictPolicy, wire.PolicyClientWins, wire.PolicyServerWins, wire.PolicyReject)
	}
	if o.MaxOfflineSeconds < 0 || o.MaxPendingBytes < 0 || o.MaxPatchOps < 0 || o.MaxPatchBytes < 0 || o.MaxRecordBytes < 0 ||
		o.MaxBlobBytes < 0 || o.EagerBlobBytes < 0 {
		return badRequest("limits must not be negative (0 means no limit of the organization's own)")
	}
	return o.HookSettings.validate()
}

// loadOrgSettings reads an org's settings from the store, bypassing the
// cache. It returns the defaults and an empty etag if none are stored.
func (s *Server) loadOrgSettings(ctx context.Context, org string) (OrgSettings, string, error) {
	key := snapshot.OrgSettingsKey(org)
	rc, info, err := s.store.Get(ctx, key)
	if errors.Is(err, snapshot.ErrNotExist) {
		return DefaultOrgSettings(), "", nil
	}
	if err != nil {
		return OrgSettings{}, "", fmt.Errorf("read settings of org %s: %w", org, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(rc, maxSettingsBytes+1)); err != nil {
		return OrgSettings{}, "", fmt.Errorf("read settings of org %s: %w", org, err)
	}
	if buf.Len() > maxSettingsBytes {
		return OrgSettings{}, "", &snapshot.ObjectError{Op: "read settings", Key: key, Err: snapshot.ErrCorrupt}
	}
	st := DefaultOrgSettings()
	// Unknown fields are tolerated: a newer replica may have written them.
	if err := json.Unmarshal(buf.Bytes(), &st); err != nil {
		return OrgSettings{}, "", &snapshot.ObjectError{Op: "decode settings", Key: key, Err: fmt.Errorf("%w: %v", snapshot.ErrCorrupt, err)}
	}
	if st.ConflictPolicy == "" {
		st.ConflictPolicy = wire.PolicyClientWins
	}
	return st, info.ETag, nil
}

// orgSettings returns an org's settings through the per-replica cache. A
// long poll (poll) also takes settings older than the TTL if they were
// read while the feed watcher ran: a change made since would have been
// announced in the feed (announceSettings) and dropped them.
//
// Requests that miss the cache at the same time share one read (and its
// failure): devices reconnecting together must not each read the settings
// of their org.
func (s *Server) orgSettings(ctx context.Context, org string, poll bool) (OrgSettings, error) {
	if st, ok := s.settings.get(org, poll); ok {
		return st, nil
	}
	ch := s.settingsLoads.DoChan(org, func() (any, error) {
		watched := s.watcher.running()
		// The read outlives a caller that leaves: the others share it.
		st, _, err := s.loadOrgSettings(context.WithoutCancel(ctx), org)
		if err == nil {
			s.settings.put(org, st, watched)
		}
		return st, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return OrgSettings{}, r.Err
		}
		return r.Val.(OrgSettings), nil
	case <-ctx.Done():
		return OrgSettings{}, ctx.Err()
	}
}

// orgPolicy returns the policy of org (defaults if it has no settings),
// at most SettingsTTL old (or, for a long poll, kept current by the feed
// watcher), with the patch limits in force (effectivePolicy). Sync handlers
// send it to clients and patches are held to it.
func (s *Server) orgPolicy(ctx context.Context, org string, poll bool) (wire.Policy, error) {
	st, err := s.orgSettings(ctx, org, poll)
	if err != nil {
		return wire.Policy{}, err
	}
	return s.effectivePolicy(st.Policy), nil
}

// effectivePolicy is p with each patch limit the lower of the org's (if it
// set one) and the server's own: what clients split their queues by and
// what their patches are held to. The server's limits are part of it so a
// client never has to learn them from a refused patch.
func (s *Server) effectivePolicy(p wire.Policy) wire.Policy {
	own := s.opts.patchLimits()
	p.MaxPatchOps = int(lowerLimit(int64(p.MaxPatchOps), int64(own.MaxOps)))
	p.MaxPatchBytes = lowerLimit(p.MaxPatchBytes, own.MaxBytes)
	p.MaxRecordBytes = lowerLimit(p.MaxRecordBytes, own.MaxRecordBytes)
	p.MaxBlobBytes = lowerLimit(p.MaxBlobBytes, s.opts.MaxBlobBytes)
	if p.EagerBlobBytes == 0 {
		p.EagerBlobBytes = s.opts.EagerBlobBytes
	}
	p.EagerBlobBytes = min(p.EagerBlobBytes, p.MaxBlobBytes)
	return p
}

// lowerLimit is the lower of an org limit (0: none) and the server's.
func lowerLimit(org, server int64) int64 {
	if org > 0 && org < server {
		return org
	}
	return server
}

// announceSettings writes the feed entry that tells every replica's
// watcher to drop its copy of org's settings. It follows the settings
// write, so a replica that reads the settings after seeing the entry reads
// the new ones. If it fails, the change is stored but not announced: the
// error asks the admin to send it again.
func (s *Server) announceSettings(ctx context.Context, org string) error {
	var nonce [8]byte
	rand.Read(nonce[:])
	key := snapshot.FeedSettingsKey(time.Now().UnixMilli(), org, hex.EncodeToString(nonce[:]))
	if _, err := s.store.PutIfAbsent(ctx, key, bytes.NewReader(nil), 0); err != nil {
		return fmt.Errorf("settings of org %s saved, but announcing the change to other replicas failed (send it again): %w", org, err)
	}
	return nil
}

// settingsUpdate is the body of PUT /v1/admin/orgs/{org}: the fields given
// change, the fields left out keep their stored value.
type settingsUpdate struct {
	OfflineMode       *bool   `json:"offline_mode"`
	ConflictPolicy    *string `json:"conflict_policy"`
	MaxOfflineSeconds *int64  `json:"max_offline_seconds"`
	MaxPendingBytes   *int64  `json:"max_pending_bytes"`
	MaxPatchOps       *int    `json:"max_patch_ops"`
	MaxPatchBytes     *int64  `json:"max_patch_bytes"`
	MaxRecordBytes    *int64  `json:"max_record_bytes"`
	MaxBlobBytes      *int64  `json:"max_blob_bytes"`
	EagerBlobBytes    *int64  `json:"eager_blob_bytes"`
	hookUpdate
}

func (u settingsUpdate) apply(st *OrgSettings) {
	u.hookUpdate.apply(&st.HookSettings)
	if u.OfflineMode != nil {
		st.OfflineMode = *u.OfflineMode
	}
	if u.ConflictPolicy != nil {
		st.ConflictPolicy = *u.ConflictPolicy
	}
	if u.MaxOfflineSeconds != nil {
		st.MaxOfflineSeconds = *u.MaxOfflineSeconds
	}
	if u.MaxPendingBytes != nil {
		st.MaxPendingBytes = *u.MaxPendingBytes
	}
	if u.MaxPatchOps != nil {
		st.MaxPatchOps = *u.MaxPatchOps
	}
	if u.MaxPatchBytes != nil {
		st.MaxPatchBytes = *u.MaxPatchBytes
	}
	if u.MaxRecordBytes != nil {
		st.MaxRecordBytes = *u.MaxRecordBytes
	}
	if u.MaxBlobBytes != nil {
		st.MaxBlobBytes = *u.MaxBlobBytes
	}
	if u.EagerBlobBytes != nil {
		st.EagerBlobBytes = *u.EagerBlobBytes
	}
}

// maxSettingsAttempts bounds the compare-and-swap loop; each lost race means
// another admin's write landed, so running out takes extraordinary contention.
const maxSettingsAttempts = 16

// updateOrgSettings applies u to the stored settings of org with a
// compare-and-swap write (PutIfAbsent for the first write, PutIfMatch
// after), re-reading and re-applying after a lost race, so concurrent
// admins through any replicas never lose one another's changes.
func (s *Server) updateOrgSettings(ctx context.Context, org string, u settingsUpdate) (OrgSettings, error) {
	key := snapshot.OrgSettingsKey(org)
	for attempt := 0; attempt < maxSettingsAttempts; attempt++ {
		st, etag, err := s.loadOrgSettings(ctx, org)
		if err != nil {
			return OrgSettings{}, err
		}
		u.apply(&st)
		if err := st.validate(); err != nil {
			return OrgSettings{}, err
		}
		st.UpdatedUnix = s.opts.now().Unix()
		b, err := json.Marshal(st)
		if err != nil {
			return OrgSettings{}, err
		}
		if etag == "" {
			_, err = s.store.PutIfAbsent(ctx, key, bytes.NewReader(b), int64(len(b)))
		} else {
			_, err = s.store.PutIfMatch(ctx, key, bytes.NewReader(b), int64(len(b)), etag)
		}
		switch {
		case err == nil:
			s.settings.put(org, st, false)
			return st, s.announceSettings(ctx, org)
		case errors.Is(err, snapshot.ErrExist), errors.Is(err, snapshot.ErrPrecondition), errors.Is(err, snapshot.ErrNotExist):
			// Another writer got there first (or deleted the object):
			// read its result and apply our change on top.
			if err := ctx.Err(); err != nil {
				return OrgSettings{}, err
			}
			continue
		default:
			return OrgSettings{}, fmt.Errorf("write settings of org %s: %w", org, err)
		}
	}
	return OrgSettings{}, conflict("settings of org %s changed concurrently too often; retry", org)
}

// settingsCache keeps each org's settings for ttl, so a sync costs no store
// read for them while changes made through other replicas still arrive
// within ttl.
type settingsCache struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	entries map[string]settingsEntry
}

type settingsEntry struct {
	st      OrgSettings
	expires time.Time
	watched bool // read while the feed watcher ran: current until dropped
}

// maxCachedOrgs bounds the cache; past it, expired entries are swept and,
// if that is not enough, the cache starts over.
const maxCachedOrgs = 10000

func newSettingsCache(ttl time.Duration, now func() time.Time) *settingsCache {
	return &settingsCache{ttl: ttl, now: now, entries: make(map[string]settingsEntry)}
}

// get returns the cached settings of org if younger than the TTL, or, for
// a long poll (watched), if they were read while the feed watcher ran.
func (c *settingsCache) get(org string, watched bool) (OrgSettings, bool) {
	if c.ttl <= 0 {
		return OrgSettings{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[org]
	if !ok || !(c.now().Before(e.expires) || watched && e.watched) {
		return OrgSettings{}, false
	}
	return e.st, true
}

func (c *settingsCache) put(org string, st OrgSettings, watched bool) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.entries) >= maxCachedOrgs {
		for k, e := range c.entries {
			if !now.Before(e.expires) && !e.watched {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxCachedOrgs {
			clear(c.entries)
		}
	}
	c.entries[org] = settingsEntry{st: st, expires: now.Add(c.ttl), watched: watched}
}

// drop forgets org's settings (the feed announced a change).
func (c *settingsCache) drop(org string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, org)
}
