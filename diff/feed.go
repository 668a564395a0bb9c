package diff

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// FeedEntry is one accepted change set on the change feed.
type FeedEntry struct {
	Cursor    string     `json:"cursor"` // pass as `after` to continue behind this entry
	ChangeSet *ChangeSet `json:"change_set"`
}

// FeedOptions configure ReadFeed.
type FeedOptions struct {
	After string // cursor: the last entry already consumed ("" = from the start)
	Limit int
	// Settle holds back entries younger than this, so that a change set
	// written by a slower replica (or a clock a little behind) is never
	// passed by the cursor before it is visible. Default 10s.
	Settle time.Duration
	Now    time.Time
}

// ReadFeed returns up to Limit change sets after the cursor, in the order
// their versions were created (one user's versions always in version order),
// and the cursor to continue from. Change sets of writers that lost the race
// for a version (or crashed before claiming it) are skipped. The feed is
// durable: it lives in the store, and the cursor is the caller's, so nothing
// is lost while no one reads (until garbage collection retires versions).
func ReadFeed(ctx context.Context, s snapshot.Store, o FeedOptions) ([]FeedEntry, string, error) {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	horizon := o.Now.Add(-o.Settle).UnixMilli()
	next := o.After
	startMs := int64(-1)
	if o.After != "" {
		k, ok := snapshot.ParseFeedKey(o.After)
		if !ok {
			return nil, "", fmt.Errorf("bad cursor %q: %w", o.After, snapshot.ErrInvalid)
		}
		startMs = k.Millis
	} else {
		// The first key of the feed tells where it starts.
		err := s.List(ctx, snapshot.FeedPrefix, func(oi snapshot.ObjectInfo) error {
			if k, ok := snapshot.ParseFeedKey(oi.Key); ok {
				startMs = k.Millis
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return nil, "", err
		}
		if startMs < 0 {
			return nil, "", nil
		}
	}
	var out []FeedEntry
	done := false
	for hour := startMs - startMs%3_600_000; hour <= horizon && !done; hour += 3_600_000 {
		var keys []string
		err := s.List(ctx, snapshot.FeedHourPrefix(hour), func(oi snapshot.ObjectInfo) error {
			if oi.Key > o.After {
				keys = append(keys, oi.Key)
			}
			return nil
		})
		if err != nil {
			return nil, "", err
		}
		for _, key := range keys {
			k, ok := snapshot.ParseFeedKey(key)
			if !ok {
				next = key
				continue
			}
			if k.Millis > horizon || len(out) >= o.Limit {
				done = true
				break
			}
			cs, err := feedEntry(ctx, s, key, k)
			if err != nil {
				return nil, "", err
			}
			next = key
			if cs != nil {
				out = append(out, FeedEntry{Cursor: key, ChangeSet: cs})
			}
		}
	}
	return out, next, nil
}

var errStop = errors.New("stop")

// feedEntry loads a feed object if it is the change set of a claimed
// version, or returns nil for a loser's or a crashed writer's.
func feedEntry(ctx context.Context, s snapshot.Store, key string, k snapshot.FeedEntryKey) (*ChangeSet, error) {
	m, err := snapshot.ReadManifestHeader(ctx, s, k.Org, k.User, k.Version)
	if errors.Is(err, snapshot.ErrNotExist) {
		return nil, nil // never claimed, or retired by garbage collection
	}
	if err != nil {
		return nil, err
	}
	if m.Changes != key {
		return nil, nil // another writer claimed this version
	}
	cs, err := ReadChangeSet(ctx, s, m)
	if errors.Is(err, snapshot.ErrNotExist) {
		return nil, nil // retired meanwhile
	}
	return cs, err
}
