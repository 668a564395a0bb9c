package client

import (
	"cmp"
	"slices"
	"strings"
	"sync"
)

// Sources of a Change.
const (
	// ChangeServer: a new version from the server was installed.
	ChangeServer = "server"
	// ChangeLocal: the app edited a record on this device, or a local edit
	// left the view (discarded, refused by the server, lost a conflict).
	ChangeLocal = "local"
)

// DefaultMaxChangeKeys is Options.MaxChangeKeys when unset.
const DefaultMaxChangeKeys = 100

// Change tells a change listener which keys of the merged view (Get, Scan)
// may have changed, so that a UI refreshes only those. A server change
// lists the keys whose value in the synced version changed, including keys
// that carry this device's own edits (their value on screen may not move).
type Change struct {
	Source  string // ChangeServer or ChangeLocal
	Version uint64 // the local (synced) version after the change
	// Full reports a full sync (the first one, or a repair), or a delta
	// of more changes than the install lists: every record may have
	// changed, and keys deleted by it are not listed; reload everything.
	// Keys and Collections then describe the whole new version.
	Full bool
	// Total is the number of keys changed.
	Total int
	// Keys are the changed keys in bytewise order; nil when Total is over
	// Options.MaxChangeKeys (a large change: see Collections).
	Keys []string
	// Collections count the changed keys per collection (the key up to its
	// first '/'; "" for keys without one), sorted by name. Always set.
	Collections []CollectionCount
}

// CollectionCount is the number of changed keys in one collection.
type CollectionCount struct {
	Name  string
	Count int
}

// CollectionOf returns the collection of a key: the part before its first
// '/', or "" if it has none.
func CollectionOf(key string) string {
	if i := strings.IndexByte(key, '/'); i >= 0 {
		return key[:i]
	}
	return ""
}

type changeListener struct {
	id int
	fn func(Change)
}

// changeState holds the change listeners and the queue of changes to
// deliver (one at a time, in order, like the status).
type changeState struct {
	mu         sync.Mutex
	listeners  []changeListener
	nextID     int
	queue      []Change
	delivering bool
}

// OnChange registers fn to be called with every change of the merged view
// (see Change), and returns a handle for RemoveChangeListener. Calls
// happen outside the client's locks, one at a time, in the order of the
// changes, on the goroutine that made the change (the sync, or the caller
// of Put): fn may call any method of the Client, but should be quick. All
// listeners share the Change's slices: fn must not modify them.
func (c *Client) OnChange(fn func(Change)) int {
	s := &c.changes
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	s.listeners = append(s.listeners, changeListener{s.nextID, fn})
	return s.nextID
}

// RemoveChangeListener unregisters a change listener; unknown ids are
// ignored. After it returns, the listener is not called again.
func (c *Client) RemoveChangeListener(id int) {
	s := &c.changes
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range s.listeners {
		if l.id == id {
			s.listeners = append(s.listeners[:i:i], s.listeners[i+1:]...)
			return
		}
	}
}

func (c *Client) hasChangeListeners() bool {
	c.changes.mu.Lock()
	defer c.changes.mu.Unlock()
	return len(c.changes.listeners) > 0
}

// notifyInstalled is called by the install path once version is the local
// version: keys are the keys the new version changed (put or deleted), or
// with full, nil (the keys of the new version are read here, only if
// someone listens).
func (c *Client) notifyInstalled(version uint64, keys []string, full bool) {
	if !c.hasChangeListeners() {
		return
	}
	sum := newChangeSummary(c.opts.MaxChangeKeys)
	if full {
		if err := c.syncedKeys(sum.add); err != nil {
			// The version is installed; a listener that misses the list
			// still learns that everything changed.
			sum = newChangeSummary(0)
		}
	} else {
		for _, k := range keys {
			sum.add(k)
		}
	}
	c.emitChange(sum.change(ChangeServer, version, full))
}

// notifyEdited is called after local edits changed the merged view of keys.
func (c *Client) notifyEdited(keys ...string) {
	if len(keys) == 0 || !c.hasChangeListeners() {
		return
	}
	sum := newChangeSummary(c.opts.MaxChangeKeys)
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			sum.add(k)
		}
	}
	c.emitChange(sum.change(ChangeLocal, c.Status().LocalVersion, false))
}

// changeSummary gathers the keys of one change: all of them up to max,
// and per collection counts, so memory stays small for a large change.
// Keys must be distinct.
type changeSummary struct {
	max   int
	keys  []string
	total int
	colls map[string]int
}

func newChangeSummary(max int) *changeSummary {
	return &changeSummary{max: max, colls: map[string]int{}}
}

func (s *changeSummary) add(key string) {
	s.total++
	s.colls[CollectionOf(key)]++
	if s.total <= s.max {
		s.keys = append(s.keys, key)
	} else {
		s.keys = nil // a large change: counted per collection only
	}
}

func (s *changeSummary) change(source string, version uint64, full bool) Change {
	ch := Change{Source: source, Version: version, Full: full, Total: s.total, Keys: s.keys}
	slices.Sort(ch.Keys)
	for name, n := range s.colls {
		ch.Collections = append(ch.Collections, CollectionCount{Name: name, Count: n})
	}
	slices.SortFunc(ch.Collections, func(a, b CollectionCount) int { return cmp.Compare(a.Name, b.Name) })
	return ch
}

// emitChange queues ch for the listeners and delivers the queue unless
// another goroutine already is (it will deliver this one too).
func (c *Client) emitChange(ch Change) {
	s := &c.changes
	s.mu.Lock()
	s.queue = append(s.queue, ch)
	if s.delivering {
		s.mu.Unlock()
		return
	}
	s.delivering = true
	for len(s.queue) > 0 {
		next := s.queue[0]
		s.queue = s.queue[1:]
		ls := append([]changeListener(nil), s.listeners...)
		for _, l := range ls {
			if !s.hasListenerLocked(l.id) {
				continue // removed by an earlier listener
			}
			s.mu.Unlock()
			l.fn(next)
			s.mu.Lock()
		}
	}
	s.delivering = false
	s.mu.Unlock()
}

func (s *changeState) hasListenerLocked(id int) bool {
	for _, l := range s.listeners {
		if l.id == id {
			return true
		}
	}
	return false
}
