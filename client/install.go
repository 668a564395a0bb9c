package client

import (
	"github.com/deltasync/deltasync/client/internal/state"
)

// installedChange is what one installed version changed: the keys whose
// value changed (put or deleted), in key order. All reports that any key
// may have changed, with Keys nil: a full sync (it replaces every record,
// and comparing it with the version it replaced would cost what the
// install saved), or a delta of more than state.MaxChangedKeys changes.
type installedChange struct {
	From, Version uint64
	All           bool
	Keys          []string
}

// installed records a version the store just switched to: the status
// shows it, sent edits it holds are tidied away (reads already ignore
// them), and its changes are reported.
func (c *Client) installed(in *state.Installed) {
	c.st.mu.Lock()
	c.st.localVersion = in.Version
	c.st.mu.Unlock()
	// Only tidying (see state.Store.View): a failure costs nothing, the
	// next install drops them. (The counters are written with the state
	// the sync reports next.)
	_ = c.store.DropSentThrough(in.Version)
	c.emitStatus()
	c.installedChanges(installedChange{From: in.From, Version: in.Version, All: in.AllKeys, Keys: in.Keys})
}

// installedChanges is the one place the install path reports the keys an
// installed version changed, once the version is what readers see: the
// change listeners (OnChange) hear of them from here. A change too large
// to list (All) reaches them as a full one: reload everything.
func (c *Client) installedChanges(ch installedChange) {
	c.wakeMu.Lock()
	hook := c.onInstalled
	c.wakeMu.Unlock()
	if hook != nil {
		hook(ch)
	}
	c.notifyInstalled(ch.Version, ch.Keys, ch.All)
}
