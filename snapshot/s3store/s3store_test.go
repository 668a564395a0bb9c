package s3store_test

import (
	"testing"

	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// TestConformance runs the store suite against the server scripts/test
// starts (see internal/s3test).
func TestConformance(t *testing.T) {
	s3test.Check(t)
	storetest.Run(t, func(t *testing.T) snapshot.Store { return s3test.Store(t) })
}
