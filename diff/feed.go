package diff

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

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
	// MaxScan bounds the feed objects one call examines: entries, the
	// change sets of writers that lost a version race, stray objects.
	// Default 10,000. A call that reaches it returns what it found and the
	// cursor after the last object examined.
	MaxScan int
	// Org, if set, keeps only that org's entries: the others are passed
	// by their names, without being read (the per-org feed).
	Org string
}

// FeedEpoch is the earliest time a change feed can hold: the feed's format
// dates from November 2026. A cursor from before it is refused.
var FeedEpoch = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)

// FeedCursorAhead is how far ahead of the reader's clock a cursor may lie
// (entries are named by the writing replica's clock, and clocks differ).
// A cursor further ahead is refused.
const FeedCursorAhead = time.Hour

// maxFeedLists bounds the listings one ReadFeed call makes; each move to the
// next non-empty hour takes at most 90 (see nextHour).
const maxFeedLists = 1000

// ReadFeed returns up to Limit change sets after the cursor, in the order
// their versions were created (one user's versions always in version order),
// and the cursor to continue from. Change sets of writers that lost the race
// for a version (or crashed before claiming it) are skipped. The feed is
// durable: it lives in the store, and the cursor is the caller's, so nothing
// is lost while no one reads (until garbage collection retires versions).
//
// The work of one call is bounded whatever the cursor: empty hours are
// skipped by listing (nextHour), not one listing per hour, at most MaxScan
// objects are examined, and a cancelled ctx stops the walk. So a page may
// hold fewer than Limit entries while more follow: continue from the
// returned cursor until it comes back unchanged. A cursor that is not a
// position in the feed, or lies more than FeedCursorAhead after Now, or
// before FeedEpoch (and before the feed's first entry, which a replica with
// a wrong clock may have dated earlier), is refused with an error matching
// snapshot.ErrInvalid.
func ReadFeed(ctx context.Context, s snapshot.ReadStore, o FeedOptions) ([]FeedEntry, string, error) {
	w := &feedWalk{ctx: ctx, s: s, o: o.withDefaults(), next: o.After}
	w.horizon = w.o.Now.Add(-w.o.Settle).UnixMilli()
	hour, err := w.firstHour()
	for err == nil && hour != "" && !w.done {
		if hourStart(hour) > w.horizon {
			break
		}
		if err = w.readHour(hour); err != nil || w.done {
			break
		}
		hour, err = w.nextHour(hour)
	}
	if err != nil {
		return nil, "", err
	}
	if o.Org != "" && w.next != o.After {
		w.next = w.orgNext()
	}
	return w.out, w.next, nil
}

// orgNext is the cursor an org's reader gets (orgPosition), never before
// the cursor it came with.
func (w *feedWalk) orgNext() string {
	pos, ok := orgPosition(w.next, w.o.Org)
	if !ok {
		pos = w.o.After
		if len(w.out) > 0 {
			pos = w.out[len(w.out)-1].Cursor
		}
	}
	return max(pos, w.o.After)
}

// orgPosition is the cursor an org's reader gets for a walk that ended at
// key: key itself if it is one of the org's entries, else a position that
// names no other org or user (an org admin must not learn them from its
// cursor) and lies between what the walk examined and what it did not.
// With P the prefix of the org's keys in key's millisecond, that is P when
// key sorts before P (the org's keys of that millisecond are all still to
// come; what lies between key and P is other orgs'), else P+"~" (after
// every key of the org in that millisecond, all examined, and before key).
// A key without a millisecond to take gives no position (ok false).
func orgPosition(key, org string) (string, bool) {
	if k, ok := snapshot.ParseFeedKey(key); ok && k.Org == org {
		return key, true
	}
	hour, name, ok := splitFeedKey(key)
	if !ok || len(name) < 13 || strings.Trim(name[:13], "0123456789") != "" {
		return "", false
	}
	p := snapshot.FeedPrefix + hour + "/" + name[:13] + "~" + org + "~"
	if key < p {
		return p, true
	}
	return p + "~", true
}

func (o FeedOptions) withDefaults() FeedOptions {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.MaxScan <= 0 {
		o.MaxScan = 10_000
	}
	return o
}

// feedWalk is the state of one ReadFeed call.
type feedWalk struct {
	ctx     context.Context
	s       snapshot.ReadStore
	o       FeedOptions
	horizon int64 // unix ms; later entries are held back
	out     []FeedEntry
	next    string // the cursor after the last object examined
	scanned int    // objects examined
	lists   int    // listings made
	done    bool   // a page limit was reached: stop, and answer
	// namesOnly counts the entries by their names instead of reading
	// them (FeedLag): counted, and the time of the first.
	namesOnly   bool
	counted     int
	firstMillis int64
}

// firstHour returns the hour bucket where the walk starts: the cursor's
// (after checking it), or without one the feed's first.
func (w *feedWalk) firstHour() (string, error) {
	if w.o.After == "" {
		return w.firstHourUnder(snapshot.FeedPrefix, "")
	}
	hour, err := checkCursor(w.o.After, w.o.Now)
	if !errors.Is(err, errBeforeEpoch) {
		return hour, err
	}
	// A replica whose clock was wrong may have written entries dated
	// before the epoch: a cursor among them is still a position.
	first, ferr := w.firstHourUnder(snapshot.FeedPrefix, "")
	if ferr != nil {
		return "", ferr
	}
	if first == "" || hour < first {
		return "", err
	}
	return hour, nil
}

var errBeforeEpoch = errors.New("before the change feed began")

// checkCursor returns the hour bucket of a cursor, or an error matching
// snapshot.ErrInvalid if it is not a feed position
// (_feed/<yyyymmddhh>/<name>) within the feed's lifetime. One dated before
// FeedEpoch also matches errBeforeEpoch.
func checkCursor(after string, now time.Time) (string, error) {
	hour, name, ok := splitFeedKey(after)
	if !ok || name == "" || !utf8.ValidString(after) {
		return "", fmt.Errorf("bad cursor %.80q: not a change feed position: %w", after, snapshot.ErrInvalid)
	}
	t := time.UnixMilli(hourStart(hour)).UTC()
	if t.Before(FeedEpoch.Truncate(time.Hour)) {
		return hour, fmt.Errorf("bad cursor %.80q: %s is %w (%s) and before its first entry: %w",
			after, t.Format(time.RFC3339), errBeforeEpoch, FeedEpoch.Format(time.RFC3339), snapshot.ErrInvalid)
	}
	if t.After(now.Add(FeedCursorAhead)) {
		return "", fmt.Errorf("bad cursor %.80q: %s is in the future: %w", after, t.Format(time.RFC3339), snapshot.ErrInvalid)
	}
	return hour, nil
}

// splitFeedKey splits a key under the feed into its hour bucket and the
// rest; ok is false unless the bucket is a valid yyyymmddhh hour.
func splitFeedKey(key string) (hour, name string, ok bool) {
	rest, ok := strings.CutPrefix(key, snapshot.FeedPrefix)
	if !ok {
		return "", "", false
	}
	hour, name, ok = strings.Cut(rest, "/")
	return hour, name, ok && hourStart(hour) >= 0
}

// hourStart is the unix ms at which an hour bucket begins, or -1 if it is
// not ten digits naming a valid UTC hour.
func hourStart(hour string) int64 {
	if len(hour) != 10 || strings.Trim(hour, "0123456789") != "" {
		return -1
	}
	t, err := time.Parse("2006010215", hour)
	if err != nil {
		return -1
	}
	return t.UnixMilli()
}

// list is s.List within the walk's budget: past maxFeedLists it makes no
// call and ends the page.
func (w *feedWalk) list(prefix string, fn func(snapshot.ObjectInfo) error) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if w.lists >= maxFeedLists {
		w.done = true
		return nil
	}
	w.lists++
	err := w.s.List(w.ctx, prefix, fn)
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// readHour examines the objects of one hour bucket after the cursor, at
// most as many as the page has room for. When that cuts the hour short, the
// page ends there (the store cannot list from a key, so the next call lists
// the hour again and goes on from its cursor).
func (w *feedWalk) readHour(hour string) error {
	budget := min(w.o.MaxScan-w.scanned, w.o.Limit-len(w.out))
	if w.o.Org != "" {
		budget = w.o.MaxScan - w.scanned // most names are passed unread
	}
	keys, cut, err := w.hourKeys(hour, budget)
	if err != nil {
		return err
	}
	for _, key := range keys {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		if len(w.out) >= w.o.Limit {
			w.done = true
			return nil
		}
		k, ok := snapshot.ParseFeedKey(key)
		if ok && k.Millis > w.horizon {
			w.done = true
			return nil
		}
		w.scanned++
		switch {
		case !ok || k.Version == 0 || (w.o.Org != "" && k.Org != w.o.Org):
			// Not an entry (version 0 is the empty set: no change set
			// names it), or another org's.
		case w.namesOnly:
			if w.counted == 0 {
				w.firstMillis = k.Millis
			}
			w.counted++
		default:
			cs, err := feedEntry(w.ctx, w.s, key, k)
			if err != nil {
				return err
			}
			if cs != nil {
				w.out = append(w.out, FeedEntry{Cursor: key, ChangeSet: cs})
			}
		}
		w.next = key // past a loser's change set or a stray object too
	}
	if cut || w.scanned >= w.o.MaxScan || len(w.out) >= w.o.Limit {
		w.done = true
	}
	return nil
}

// hourKeys lists up to max keys of an hour bucket after the cursor; cut
// tells that there were more.
func (w *feedWalk) hourKeys(hour string, max int) (keys []string, cut bool, err error) {
	err = w.list(snapshot.FeedPrefix+hour+"/", func(oi snapshot.ObjectInfo) error {
		if oi.Key <= w.o.After || isSettingsEntry(oi.Key) {
			return nil
		}
		if len(keys) >= max {
			cut = true
			return errStop
		}
		keys = append(keys, oi.Key)
		return nil
	})
	return keys, cut, err
}

// nextHour returns the first non-empty hour bucket after hour ("" if there
// is none up to the horizon), found by listing, not by stepping through the
// hours between: the next bucket shares a prefix of some length p with hour
// and has a greater digit at p, so probing the prefixes hour[:p]+d, longest
// p first and d ascending, finds it in at most 90 listings, each of which
// stops at its first key. The probes cover ever later hours, so the first
// that starts after the horizon ends the search: a reader that is caught up
// lists nothing but its own hour.
func (w *feedWalk) nextHour(hour string) (string, error) {
	last := time.UnixMilli(w.horizon).UTC().Format("2006010215")
	for p := len(hour) - 1; p >= 0; p-- {
		for d := hour[p] + 1; d <= '9'; d++ {
			prefix := hour[:p] + string(rune(d))
			if prefix+strings.Repeat("0", len(hour)-len(prefix)) > last {
				return "", nil
			}
			next, err := w.firstHourUnder(snapshot.FeedPrefix+prefix, hour)
			if err != nil || next != "" || w.done {
				return next, err
			}
		}
	}
	return "", nil
}

// firstHourUnder returns the first valid hour bucket after 'after' that
// holds an object whose key starts with prefix ("" if none).
func (w *feedWalk) firstHourUnder(prefix, after string) (string, error) {
	var found string
	err := w.list(prefix, func(oi snapshot.ObjectInfo) error {
		if hour, _, ok := splitFeedKey(oi.Key); ok && hour > after {
			found = hour
			return errStop
		}
		return nil
	})
	return found, err
}

var errStop = errors.New("stop")

// isSettingsEntry reports a feed entry that announces a change of an org's
// settings (snapshot.FeedSettingsKey) to the servers' watchers: no change
// set, so the feed's readers pass it by without reading anything.
func isSettingsEntry(key string) bool {
	k, ok := snapshot.ParseFeedKey(key)
	return ok && k.User == snapshot.FeedSettingsUser
}

// feedEntry loads a feed object if it is the change set of a claimed
// version, or returns nil for a loser's or a crashed writer's.
func feedEntry(ctx context.Context, s snapshot.Getter, key string, k snapshot.FeedEntryKey) (*ChangeSet, error) {
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

// Lag is how far a consumer trails its org's feed (FeedLag).
type Lag struct {
	// Entries after the cursor, counted by their names: a change set
	// whose writer lost its version race counts too (rare).
	Entries int
	// Oldest is the time of the first entry after the cursor (zero when
	// there is none), by its writer's clock.
	Oldest time.Time
	// Complete is false when the count stopped at MaxScan names.
	Complete bool
}

// FeedLag counts o.Org's entries after o.After up to the settle horizon,
// by listing names only (no entry is read), examining at most o.MaxScan
// names. Limit is ignored.
func FeedLag(ctx context.Context, s snapshot.ReadStore, o FeedOptions) (Lag, error) {
	o = o.withDefaults()
	o.Limit = o.MaxScan
	w := &feedWalk{ctx: ctx, s: s, o: o, next: o.After, namesOnly: true}
	w.horizon = o.Now.Add(-o.Settle).UnixMilli()
	hour, err := w.firstHour()
	for err == nil && hour != "" && !w.done && hourStart(hour) <= w.horizon {
		if err = w.readHour(hour); err == nil && !w.done {
			hour, err = w.nextHour(hour)
		}
	}
	if err != nil {
		return Lag{}, err
	}
	lag := Lag{Entries: w.counted, Complete: w.scanned < o.MaxScan}
	if w.counted > 0 {
		lag.Oldest = time.UnixMilli(w.firstMillis)
	}
	return lag, nil
}
