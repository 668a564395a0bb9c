package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// lease is a deployment-wide lease kept in the store, so that work meant
// to run once per deployment (the feed worker) runs on one replica however
// many there are. Its object (snapshot.LeaseKey) names the holder and when
// the lease expires. It is claimed with a create-only write (of any number
// of replicas exactly one wins), renewed by its holder with
// compare-and-swap on the object's ETag, and taken over, once expired, with
// compare-and-swap too, so two replicas that see it expire together cannot
// both take it.
//
// The holder trusts the lease until margin before its expiry (valid): the
// other replicas judge expiry by their own clocks, and the margin absorbs
// clock skew up to its size. A holder that lost the lease (a renewal
// refused) stops at once.
type lease struct {
	s      leaseStore
	key    string
	holder string
	ttl    time.Duration
	margin time.Duration
	now    func() time.Time

	etag  string    // of the object as we last wrote it ("": not ours)
	until time.Time // valid: trust the lease until then
}

// leaseStore is what a lease does to the store: it reads its object and
// writes it only conditionally, create-only or by compare-and-swap.
type leaseStore interface {
	snapshot.Getter
	snapshot.Creator
	snapshot.Swapper
}

// leaseRecord is the lease object.
type leaseRecord struct {
	Holder        string `json:"holder"`
	ExpiresUnixMs int64  `json:"expires_unix_ms"`
}

// held reports whether the lease is ours and still valid.
func (l *lease) held() bool { return l.etag != "" && l.now().Before(l.until) }

// acquire renews the lease if we hold it, or claims it if it is free or
// expired. It reports whether we hold it now.
func (l *lease) acquire(ctx context.Context) (bool, error) {
	now := l.now()
	if l.etag != "" {
		err := l.write(ctx, now, l.etag)
		if err == nil {
			return true, nil
		}
		l.etag = ""
		if !lostRace(err) {
			return false, err
		}
		// Not ours any more (taken over, or written by a replica with
		// our name): read it as anyone would.
	}
	rec, etag, err := l.read(ctx)
	switch {
	case errors.Is(err, snapshot.ErrNotExist):
		err = l.write(ctx, now, "")
	case err != nil:
		return false, err
	case rec.Holder == l.holder || now.UnixMilli() > rec.ExpiresUnixMs:
		err = l.write(ctx, now, etag)
	default:
		return false, nil // another replica's, and alive
	}
	if lostRace(err) {
		return false, nil
	}
	return err == nil, err
}

// lostRace reports a conditional write that another writer beat.
func lostRace(err error) bool {
	return errors.Is(err, snapshot.ErrExist) || errors.Is(err, snapshot.ErrPrecondition) || errors.Is(err, snapshot.ErrNotExist)
}

// write stores the lease as ours until now+ttl: create-only if etag is
// "", else compare-and-swap against it.
func (l *lease) write(ctx context.Context, now time.Time, etag string) error {
	body, _ := json.Marshal(leaseRecord{Holder: l.holder, ExpiresUnixMs: now.Add(l.ttl).UnixMilli()})
	var info snapshot.ObjectInfo
	var err error
	if etag == "" {
		info, err = l.s.PutIfAbsent(ctx, l.key, bytes.NewReader(body), int64(len(body)))
	} else {
		info, err = l.s.PutIfMatch(ctx, l.key, bytes.NewReader(body), int64(len(body)), etag)
	}
	if err != nil {
		return err
	}
	l.etag, l.until = info.ETag, now.Add(l.ttl-l.margin)
	return nil
}

func (l *lease) read(ctx context.Context) (leaseRecord, string, error) {
	rc, info, err := l.s.Get(ctx, l.key)
	if err != nil {
		return leaseRecord{}, "", err
	}
	defer rc.Close()
	var rec leaseRecord
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		return leaseRecord{}, "", err
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		// A damaged lease would block every replica forever: treat it as
		// expired, so the next claim replaces it.
		return leaseRecord{}, info.ETag, nil
	}
	return rec, info.ETag, nil
}

// release gives the lease up (marks it expired), so another replica takes
// it at its next try instead of after the expiry.
func (l *lease) release(ctx context.Context) error {
	if l.etag == "" {
		return nil
	}
	body, _ := json.Marshal(leaseRecord{Holder: l.holder})
	_, err := l.s.PutIfMatch(ctx, l.key, bytes.NewReader(body), int64(len(body)), l.etag)
	l.etag, l.until = "", time.Time{}
	if err != nil && !lostRace(err) {
		return fmt.Errorf("release lease: %w", err)
	}
	return nil
}
