package memstore_test

import (
	"testing"

	"github.com/deltasync/deltasync/snapshot"
	"github.com/deltasync/deltasync/snapshot/memstore"
	"github.com/deltasync/deltasync/snapshot/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) snapshot.Store { return memstore.New() })
}
