package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/deltasync/deltasync/snapshot"
)

func TestRetryLostRace(t *testing.T) {
	lost := fmt.Errorf("claim version 7: %w", snapshot.ErrExist)
	other := errors.New("store down")
	for _, tc := range []struct {
		name         string
		max          int
		results      []error // what try returns, attempt by attempt
		wantAttempts int
		want         error
	}{
		{"wins at once", 5, []error{nil}, 1, nil},
		{"wins after losing twice", 5, []error{lost, lost, nil}, 3, nil},
		{"another error ends it", 5, []error{lost, other}, 2, other},
		{"gives up after max", 3, []error{lost, lost, lost, nil}, 3, snapshot.ErrExist},
		{"at least one try", 0, []error{lost}, 1, snapshot.ErrExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tries []int
			attempts, err := snapshot.RetryLostRace(t.Context(), tc.max, func(attempt int) error {
				tries = append(tries, attempt)
				return tc.results[attempt-1]
			})
			if attempts != tc.wantAttempts || len(tries) != tc.wantAttempts || tries[len(tries)-1] != attempts {
				t.Errorf("attempts %d, tries %v; want %d", attempts, tries, tc.wantAttempts)
			}
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// A context that ends while waiting to try again ends the retries with
// its error.
func TestRetryLostRaceStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	attempts, err := snapshot.RetryLostRace(ctx, 100, func(int) error {
		cancel()
		return snapshot.ErrExist
	})
	if attempts != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("attempts %d, err %v; want 1 and context.Canceled", attempts, err)
	}
}
