package admin

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/deltasync/deltasync/diff"
)

// FeedPage is one answer of the per-org change feed.
type FeedPage struct {
	Entries []diff.Event `json:"entries"`
	// Next is the cursor to read on from: after the last entry, or past
	// other orgs' entries when there are none. It equals the cursor asked
	// with when nothing was passed.
	Next string `json:"next"`
}

// Changes reads up to limit entries of org's change feed after the cursor
// ("" reads from the start). With wait > 0 an empty answer waits up to
// that long (bounded by the server's --long-poll-max) for entries.
func (c *Client) Changes(ctx context.Context, org, after string, limit int, wait time.Duration) (*FeedPage, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	var p FeedPage
	if err := c.call(ctx, "GET", orgPath(org, "changes")+"?"+q.Encode(), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}
