package server

import (
	"context"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/deltasync/deltasync/diff"
)

// The per-org change feed: GET /v1/admin/orgs/{org}/changes reads the
// change feed (diff.ReadFeed) keeping one org's entries, as diff.Events,
// readable with that org's admin token. The cursor is a position in the
// deployment's feed, so it moves past other orgs' entries too: an answer
// may carry no entries and a new cursor, and the reader continues from it.
//
// With wait, an empty answer waits (long poll) until entries arrive, the
// wait is over or the server stops. It waits in the replica's orgFeeds
// (orgfeedhub.go), woken by news of the org's entries, so a waiting reader
// makes no store request: the feed is read again only when it may hold a
// new entry of the org that the reader can see.

// orgFeedPage is the answer of GET /v1/admin/orgs/{org}/changes.
type orgFeedPage struct {
	Entries []diff.Event `json:"entries"`
	Next    string       `json:"next"` // pass as after; equal to after when nothing was passed
}

// orgChanges handles GET /v1/admin/orgs/{org}/changes?after=C&limit=N&wait=D.
func (s *Server) orgChanges(ctx *fasthttp.RequestCtx, req *request) error {
	org, err := adminOrg(req)
	if err != nil {
		return err
	}
	limit, err := queryUint(ctx, "limit", 100)
	if err != nil {
		return err
	}
	if limit == 0 || limit > 1000 {
		return badRequest("limit must be 1..1000")
	}
	wait, err := s.queryWait(ctx)
	if err != nil {
		return err
	}
	page, err := s.readOrgFeed(req, org, string(ctx.QueryArgs().Peek("after")), int(limit), wait)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, page)
	return nil
}

// queryWait reads the wait parameter of a long poll (0 if absent), at most
// LongPollMax.
func (s *Server) queryWait(ctx *fasthttp.RequestCtx) (time.Duration, error) {
	w := ctx.QueryArgs().Peek("wait")
	if w == nil {
		return 0, nil
	}
	d, err := time.ParseDuration(string(w))
	if err != nil || d < 0 {
		return 0, badRequest("query parameter wait=%q is not a duration such as 30s", w)
	}
	return min(d, s.opts.LongPollMax), nil
}

// maxOrgFeedPasses is how many times one long poll walks on at once after
// a read that passed other orgs' entries (each read examines at most
// diff.FeedOptions.MaxScan names). Past it the poll answers the cursor it
// reached with no entries, and its reader goes on from there: an old
// cursor must not make one request list the deployment's whole feed
// history for as long as it may wait.
const maxOrgFeedPasses = 2

// readOrgFeed reads org's entries after the cursor; with nothing there it
// walks on over other orgs' entries (at most maxOrgFeedPasses times) and
// then waits, until entries come or the wait is over.
func (s *Server) readOrgFeed(req *request, org, after string, limit int, wait time.Duration) (*orgFeedPage, error) {
	until := time.Now().Add(wait)
	if wait > 0 {
		s.startWatcher() // the news of other replicas' entries
		s.orgFeeds.join(org)
		defer s.orgFeeds.leave(org)
	}
	page := &orgFeedPage{Entries: []diff.Event{}, Next: after}
	passes := 0
	for {
		var wake <-chan struct{}
		var gen uint64
		if wait > 0 {
			wake, gen = s.orgFeeds.wakeChan(org) // before the read: news after it wakes us
		}
		entries, next, err := s.orgFeedRead(req.Ctx, org, page.Next, limit, gen)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			page.Entries = append(page.Entries, diff.NewEvent(e))
		}
		moved := next != page.Next
		page.Next = next
		switch {
		case len(page.Entries) > 0 || wait == 0:
			return page, nil
		case moved && passes >= maxOrgFeedPasses:
			return page, nil // bounded work per request: the reader goes on from Next
		case moved && time.Now().Before(until):
			passes++
			continue // other orgs' entries were passed: read on at once
		case !waitOrgFeed(req.Ctx, wake, until, s.stopping):
			return page, nil
		}
	}
}

// orgFeedResult is one read of an org's feed, shared by its readers.
type orgFeedResult struct {
	entries []diff.FeedEntry
	next    string
}

// orgFeedRead reads org's feed after the cursor. A long poll's read (gen,
// the wake generation it started in, is not 0) is shared by the org's
// readers at the same cursor and limit in the same generation, whether
// they read at once or later in it (orgFeeds.share): readers woken by one
// entry make one read of the feed, and none takes a read that began
// before the news that woke it.
func (s *Server) orgFeedRead(ctx context.Context, org, after string, limit int, gen uint64) ([]diff.FeedEntry, string, error) {
	read := func(ctx context.Context) ([]diff.FeedEntry, string, error) {
		return diff.ReadFeed(ctx, s.store, diff.FeedOptions{After: after, Limit: limit, Settle: s.orgFeeds.settle, Org: org, Now: s.opts.now()})
	}
	if gen == 0 {
		return read(ctx)
	}
	key := fmt.Sprintf("%s\x00%d", after, limit)
	if r, ok := s.orgFeeds.sharedRead(org, gen, key); ok {
		return r.entries, r.next, nil
	}
	ch := s.orgFeedReads.DoChan(fmt.Sprintf("%s\x00%s\x00%d", org, key, gen), func() (any, error) {
		// The read outlives a reader that leaves: the others share it.
		entries, next, err := read(context.WithoutCancel(ctx))
		if err == nil {
			s.orgFeeds.share(org, gen, key, orgFeedResult{entries, next})
		}
		return orgFeedResult{entries, next}, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, "", r.Err
		}
		res := r.Val.(orgFeedResult)
		return res.entries, res.next, nil
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}
