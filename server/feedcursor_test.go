package server

import (
	"net/url"
	"testing"
	"time"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// feedCursorCases are the change feed's hostile probes (hostileFeedCases):
// cursors that are no position in the feed or lie outside its lifetime.
// Each answers 400 at once; none walks the feed hour by hour.
func feedCursorCases(t *testing.T) []hostileCase {
	admin := adminToken(t)
	feed := func(name, after string) hostileCase {
		return hostileCase{name: name, method: "GET", path: "/v1/admin/changes?after=" + url.QueryEscape(after),
			opts: []reqOpt{withToken(admin)}, status: 400, code: "bad_request"}
	}
	at := func(t time.Time) string {
		return snapshot.FeedKey(t.UnixMilli(), hostileEnvOrg, hostileEnvUser, 1, "0123456789abcdef")
	}
	return []hostileCase{
		feed("garbage cursor", "nonsense"),
		feed("cursor with a bad hour", snapshot.FeedPrefix+"2026991299/x"),
		feed("cursor without a name", snapshot.FeedPrefix+"2026120213/"),
		feed("cursor far in the future", at(time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC))),
		feed("cursor a day ahead", at(time.Now().Add(24*time.Hour))),
		feed("cursor at unix time 0", at(time.Unix(0, 0))),
		feed("cursor before the feed began", at(diff.FeedEpoch.Add(-24*time.Hour))),
		feed("cursor not UTF-8", snapshot.FeedPrefix+"2026120213/\xff"),
	}
}
