package client

import "github.com/deltasync/deltasync/wire"

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
