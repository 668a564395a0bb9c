package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/wire"
)

// Patch sends an admin patch to one user: without a base (0 and AtHead)
// its ops apply to the head as the system of record; with one it is merged
// three-way and the backend wins every conflict. The same id again gets
// the same answer with Duplicate set.
func (c *Client) Patch(ctx context.Context, org, user string, p *diff.Patch, atHead bool) (*wire.PatchResponse, error) {
	var in any = p
	if atHead {
		in = struct {
			ID  string    `json:"id"`
			Ops []diff.Op `json:"ops"`
		}{p.ID, p.Ops}
	}
	var out wire.PatchResponse
	if err := c.call(ctx, "POST", orgPath(org, "users", user, "patches"), in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Fanout applies the same ops to each user of req at its head, and calls
// fn with each user's result as the server streams it (in the order users
// finish). A user whose result carries an Error got nothing applied:
// sending the same fan-out again retries it, and the users already done
// answer Duplicate. If the stream breaks, Fanout returns an error after
// the results that arrived; send the fan-out again for the rest.
func (c *Client) Fanout(ctx context.Context, org string, req *wire.FanoutRequest, fn func(wire.FanoutResult) error) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("admin: encode fan-out: %w", err)
	}
	resp, err := c.do(ctx, "POST", orgPath(org, "patches"), body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 256<<20) // a line carries receipts, which may hold values
	n := 0
	for sc.Scan() {
		var r wire.FanoutResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("admin: fan-out result %d: %w", n+1, err)
		}
		n++
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("admin: fan-out answer broke after %d of %d users: %w", n, len(req.Users), err)
	}
	if n != len(req.Users) {
		return fmt.Errorf("admin: fan-out answered %d of %d users; send it again for the rest", n, len(req.Users))
	}
	return nil
}
