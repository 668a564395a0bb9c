package admin

import (
	"context"

	"github.com/deltasync/deltasync/diff"
)

// Ack registers the consumer name of org's change feed, or moves its
// acknowledged cursor: every entry up to and including cursor is consumed
// ("" consumes nothing yet, "now" starts at the feed's current end). gc
// keeps every entry a registered consumer has not acknowledged.
func (c *Client) Ack(ctx context.Context, org, name, cursor string) (*diff.Consumer, error) {
	var out diff.Consumer
	if err := c.call(ctx, "PUT", orgPath(org, "consumers", name), map[string]string{"cursor": cursor}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Consumers lists the registered consumers of org's change feed (the
// webhook's, named diff.WebhookConsumer, among them).
func (c *Client) Consumers(ctx context.Context, org string) ([]diff.Consumer, error) {
	var out struct {
		Consumers []diff.Consumer `json:"consumers"`
	}
	if err := c.call(ctx, "GET", orgPath(org, "consumers"), nil, &out); err != nil {
		return nil, err
	}
	return out.Consumers, nil
}

// DeleteConsumer unregisters a consumer: gc no longer keeps entries for it.
func (c *Client) DeleteConsumer(ctx context.Context, org, name string) error {
	return c.call(ctx, "DELETE", orgPath(org, "consumers", name), nil, nil)
}
