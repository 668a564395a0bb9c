package snapshot

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// RetryLostRace runs try until it does not lose the race for a version
// number: until it returns nil or an error that does not match ErrExist
// (what Commit returns when another writer claimed the version first).
// Every writer of versions retries through it: a batch build builds again
// on the new head, a patch replays again.
//
// Between tries it waits a jittered delay that grows from about 1 ms to
// about 100 ms, so writers that keep colliding spread out instead of
// colliding again; the wait ends early with ctx's error if ctx ends. After
// maxAttempts tries (at least one) it gives up and returns the last
// ErrExist error. try gets the attempt number, from 1; attempts is how many
// tries ran.
func RetryLostRace(ctx context.Context, maxAttempts int, try func(attempt int) error) (attempts int, err error) {
	for attempt := 1; ; attempt++ {
		err := try(attempt)
		if !errors.Is(err, ErrExist) || attempt >= maxAttempts {
			return attempt, err
		}
		if err := raceBackoff(ctx, attempt); err != nil {
			return attempt, err
		}
	}
}

// raceBackoff sleeps between half and all of 2^min(attempt,7) ms (1-2 ms
// after the first try, at most 64-128 ms), or until ctx ends.
func raceBackoff(ctx context.Context, attempt int) error {
	d := time.Duration(1<<min(attempt, 7)) * time.Millisecond
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
