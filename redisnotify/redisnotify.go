// Package redisnotify is the optional Redis pub/sub plug-in of the server's
// change hub (server.Notifier): every replica publishes the versions
// committed through it on one channel and subscribes to it, so a long poll
// on one replica wakes within milliseconds of a commit on another instead of
// the feed watcher's interval. The feed watcher keeps running as the safety
// net (a message can be lost, batch builds publish nothing), and a note is
// only a hint: the receiving replica reads the version's manifest before it
// wakes anyone.
//
// A message is "org user version" (names never hold a space); anything else
// on the channel is ignored and counted.
package redisnotify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/deltasync/deltasync/snapshot"
)

// DefaultChannel is the pub/sub channel used when Options.Channel is empty.
const DefaultChannel = "deltasync:versions"

// Options configure a Notifier.
type Options struct {
	// URL is the Redis server: redis://[user:password@]host:port[/db] or
	// rediss:// for TLS.
	URL string
	// Channel is the pub/sub channel (DefaultChannel if empty). Every
	// replica of one deployment must use the same, and no other
	// deployment on the same Redis.
	Channel string
}

// Notifier publishes and receives versions through Redis pub/sub.
type Notifier struct {
	client  *redis.Client
	channel string
	// Ignored counts messages that were not "org user version".
	Ignored atomic.Int64
}

// New connects lazily to the Redis server of opts.URL.
func New(opts Options) (*Notifier, error) {
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("redisnotify: URL: %w", err)
	}
	ch := opts.Channel
	if ch == "" {
		ch = DefaultChannel
	}
	return &Notifier{client: redis.NewClient(ro), channel: ch}, nil
}

// Ping checks that the server answers.
func (n *Notifier) Ping(ctx context.Context) error {
	if err := n.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisnotify: %w", err)
	}
	return nil
}

// Close closes the connections.
func (n *Notifier) Close() error { return n.client.Close() }

// Publish implements server.Notifier.
func (n *Notifier) Publish(ctx context.Context, org, user string, v uint64) error {
	msg := org + " " + user + " " + strconv.FormatUint(v, 10)
	if err := n.client.Publish(ctx, n.channel, msg).Err(); err != nil {
		return fmt.Errorf("redisnotify: publish: %w", err)
	}
	return nil
}

// Subscribe implements server.Notifier. It returns once the subscription
// is confirmed and then lost, or when ctx ends.
func (n *Notifier) Subscribe(ctx context.Context, fn func(org, user string, v uint64)) error {
	sub := n.client.Subscribe(ctx, n.channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		return fmt.Errorf("redisnotify: subscribe: %w", err)
	}
	for {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("redisnotify: receive: %w", err)
		}
		org, user, v, err := Parse(msg.Payload)
		if err != nil {
			n.Ignored.Add(1)
			continue
		}
		fn(org, user, v)
	}
}

// Parse reads a message: "org user version", with valid names and a
// version above 0.
func Parse(msg string) (org, user string, v uint64, err error) {
	f := strings.Split(msg, " ")
	if len(f) != 3 {
		return "", "", 0, errors.New("not three fields")
	}
	if err := snapshot.ValidateName("org", f[0]); err != nil {
		return "", "", 0, err
	}
	if err := snapshot.ValidateName("user", f[1]); err != nil {
		return "", "", 0, err
	}
	v, err = strconv.ParseUint(f[2], 10, 64)
	if err != nil || v == 0 {
		return "", "", 0, fmt.Errorf("version %q", f[2])
	}
	return f[0], f[1], v, nil
}
