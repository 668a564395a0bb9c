package client

import (
	"context"

	"github.com/deltasync/deltasync/wire"
)

// gobind passes structs only by pointer, so these wrappers give gomobile
// callers what Open, Status and Policy give Go callers.

// OpenDir opens the state in dir with DefaultOptions (set the server with
// SetServer).
func OpenDir(dir string) (*Client, error) { return Open(dir, DefaultOptions()) }

// CurrentStatus is Status for gomobile.
func (c *Client) CurrentStatus() *Status {
	s := c.Status()
	return &s
}

// CurrentPolicy is Policy for gomobile.
func (c *Client) CurrentPolicy() *wire.Policy {
	p := c.Policy()
	return &p
}

// StartSync is Start for gomobile callers, which cannot pass a context:
// background sync runs until Stop or Close.
func (c *Client) StartSync() error { return c.Start(context.Background()) }

// SyncNow is Sync for gomobile callers; SetOfflineMode(true) or
// NotifyConnectivity(false) cancel it.
func (c *Client) SyncNow() (*SyncResult, error) { return c.Sync(context.Background()) }

// RebaseNow is Rebase for gomobile callers.
func (c *Client) RebaseNow() (*SyncResult, error) { return c.Rebase(context.Background()) }
