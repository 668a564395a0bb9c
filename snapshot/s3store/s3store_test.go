package s3store_test

import (
	"testing"

	"github.com/deltasync/deltasync/internal/s3test"
	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

// TestConformance runs the store suite against each server scripts/test
// starts (versitygw and MinIO; see internal/s3test).
func TestConformance(t *testing.T) {
	s3test.Each(t, func(t *testing.T, srv s3test.Server) {
		storetest.Run(t, func(t *testing.T) snapshot.Store { return srv.Store(t) })
	})
}
