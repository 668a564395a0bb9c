package gc

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// Registered consumers of an org's change feed (diff.Consumer) hold its
// versions: a version whose feed entry comes after some consumer's
// acknowledged cursor is kept whatever the retention rule, and with it
// every later version (retained versions stay a range ending at the head),
// so the entry can still be served. Consumers are read once, before the
// store is listed: one registered during a run with a cursor in the past
// is honoured from the next run on.

// consumerID names a consumer across orgs.
type consumerID struct{ org, name string }

// readConsumers reads every registered consumer, by org. Without them gc
// cannot know what it may delete, so a failure stops the run.
func (r *runner) readConsumers(ctx context.Context) error {
	all, err := diff.ReadConsumers(ctx, r.s, "")
	if err != nil {
		return fmt.Errorf("gc: read feed consumers: %w", err)
	}
	r.consumers = map[string][]diff.Consumer{}
	r.held = map[consumerID]int{}
	for _, c := range all {
		r.consumers[c.Org] = append(r.consumers[c.Org], c)
	}
	return nil
}

// holdForConsumers shortens del (a prefix of the user's versions, oldest
// first) to end before the first version a consumer has not acknowledged.
func (c *collection) holdForConsumers(del []*snapshot.Manifest) []*snapshot.Manifest {
	cons := c.consumers[c.u.org]
	if len(cons) == 0 {
		return del
	}
	for i, m := range del {
		if len(diff.HeldBy(cons, m.Changes)) == 0 {
			continue
		}
		for _, h := range del[i:] {
			for _, by := range diff.HeldBy(cons, h.Changes) {
				c.held[consumerID{by.Org, by.Name}]++
			}
		}
		c.rep.VersionsHeld = len(del) - i
		return del[:i]
	}
	return del
}

// reportConsumers lists the consumers that held versions, and warns of
// the stale ones.
func (r *runner) reportConsumers(rep *Report) {
	for _, cons := range r.consumers {
		for _, c := range cons {
			n := r.held[consumerID{c.Org, c.Name}]
			if n == 0 {
				continue
			}
			cr := ConsumerReport{Org: c.Org, Name: c.Name, Cursor: c.Cursor, AckedUnix: c.AckedUnix, VersionsHeld: n,
				Stale: r.now.Sub(time.Unix(c.AckedUnix, 0)) > r.opts.ConsumerStale}
			rep.Consumers = append(rep.Consumers, cr)
			if cr.Stale {
				r.opts.Logger.Warn("gc: a stale feed consumer keeps versions from deletion; delete it if it is gone for good",
					"org", c.Org, "consumer", c.Name, "acked", time.Unix(c.AckedUnix, 0).UTC(), "versions_held", n)
			}
		}
	}
	slices.SortFunc(rep.Consumers, func(a, b ConsumerReport) int {
		return cmp.Or(cmp.Compare(a.Org, b.Org), cmp.Compare(a.Name, b.Name))
	})
}
