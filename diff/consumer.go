package diff

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/deltasync/deltasync/snapshot"
)

// Consumer is a named reader of one org's change feed (the app's backend,
// or the server's webhook delivery) that acknowledges what it has read.
// Its cursor is a feed position: every entry up to and including it is
// consumed, and gc deletes no version whose entry comes after it (see
// package gc), so a registered consumer loses nothing however long it is
// away. It lives at snapshot.ConsumerKey, written with compare-and-swap.
type Consumer struct {
	Org  string `json:"org"`
	Name string `json:"name"`
	// Cursor is the acknowledged position ("": nothing consumed yet, the
	// whole feed is kept for it).
	Cursor         string `json:"cursor"`
	RegisteredUnix int64  `json:"registered_unix"`
	AckedUnix      int64  `json:"acked_unix"`
	// ETag is the stored object's, for the next compare-and-swap ("": not
	// stored yet).
	ETag string `json:"-"`
}

// WebhookConsumer is the consumer that an org's webhook delivery advances
// (on a 2xx only). Its leading "_" keeps it apart from the names an API
// caller may give (ValidateConsumerName).
const WebhookConsumer = "_webhook"

// maxConsumerBytes bounds a stored consumer object.
const maxConsumerBytes = 16 << 10

// ValidateConsumerName checks a consumer name an API caller gives: the
// rules of snapshot.ValidateName.
func ValidateConsumerName(name string) error { return snapshot.ValidateName("consumer", name) }

// CheckCursor checks a cursor a consumer acknowledges: "" or a change feed
// position no further ahead of now than FeedCursorAhead. Errors match
// snapshot.ErrInvalid.
func CheckCursor(cursor string, now time.Time) error {
	if cursor == "" {
		return nil
	}
	_, err := checkCursor(cursor, now)
	if errors.Is(err, errBeforeEpoch) {
		return nil // a position all the same: before everything
	}
	return err
}

// FeedPositionAt is a cursor just before every entry written at or after t
// (by the writer's clock): a consumer that starts "now" starts there, less
// the feed's settle time, so an entry a slower replica writes late is not
// passed.
func FeedPositionAt(t time.Time) string {
	ms := t.UnixMilli()
	return fmt.Sprintf("%s%013d", snapshot.FeedHourPrefix(ms), ms)
}

// ReadConsumer reads one consumer; a missing one matches
// snapshot.ErrNotExist.
func ReadConsumer(ctx context.Context, s snapshot.Getter, org, name string) (*Consumer, error) {
	key := snapshot.ConsumerKey(org, name)
	rc, info, err := s.Get(ctx, key)
	if err != nil {
		return nil, &snapshot.ObjectError{Op: "read consumer", Key: key, Err: err}
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(rc, maxConsumerBytes+1)); err != nil {
		return nil, &snapshot.ObjectError{Op: "read consumer", Key: key, Err: err}
	}
	var c Consumer
	if err := json.Unmarshal(buf.Bytes(), &c); err != nil || buf.Len() > maxConsumerBytes || c.Org != org || c.Name != name {
		return nil, &snapshot.ObjectError{Op: "read consumer", Key: key, Err: fmt.Errorf("undecodable or names another consumer: %w", snapshot.ErrCorrupt)}
	}
	c.ETag = info.ETag
	return &c, nil
}

// ReadConsumers reads the consumers of org ("": of every org), in key
// order. One deleted meanwhile is skipped.
func ReadConsumers(ctx context.Context, s snapshot.ReadStore, org string) ([]Consumer, error) {
	prefix := snapshot.ConsumersPrefix
	if org != "" {
		prefix += org + "/"
	}
	var keys []string
	err := s.List(ctx, prefix, func(oi snapshot.ObjectInfo) error {
		if _, _, ok := snapshot.ParseConsumerKey(oi.Key); ok {
			keys = append(keys, oi.Key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list consumers: %w", err)
	}
	out := make([]Consumer, 0, len(keys))
	for _, k := range keys {
		o, n, _ := snapshot.ParseConsumerKey(k)
		c, err := ReadConsumer(ctx, s, o, n)
		if errors.Is(err, snapshot.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *c)
	}
	return out, nil
}

// PutConsumer stores c: create-only if c.ETag is "", else compare-and-swap
// against it. Losing either race matches snapshot.ErrExist,
// ErrPrecondition or ErrNotExist and changes nothing; on success c.ETag is
// the new one. It only ever writes conditionally.
func PutConsumer(ctx context.Context, s interface {
	snapshot.Creator
	snapshot.Swapper
}, c *Consumer) error {
	body, err := json.Marshal(c)
	if err != nil {
		return err
	}
	key := snapshot.ConsumerKey(c.Org, c.Name)
	var info snapshot.ObjectInfo
	if c.ETag == "" {
		info, err = s.PutIfAbsent(ctx, key, bytes.NewReader(body), int64(len(body)))
	} else {
		info, err = s.PutIfMatch(ctx, key, bytes.NewReader(body), int64(len(body)), c.ETag)
	}
	if err != nil {
		return &snapshot.ObjectError{Op: "write consumer", Key: key, Err: err}
	}
	c.ETag = info.ETag
	return nil
}

// HeldBy returns, of the consumers, those that have not acknowledged the
// feed entry named key (a version's Manifest.Changes): gc must keep that
// version for them. A key that is not a feed entry is held by none.
func HeldBy(consumers []Consumer, key string) []Consumer {
	if _, ok := snapshot.ParseFeedKey(key); !ok {
		return nil
	}
	var out []Consumer
	for _, c := range consumers {
		if strings.Compare(key, c.Cursor) > 0 {
			out = append(out, c)
		}
	}
	return out
}
