package main

import (
	"encoding/json"
	"testing"

	"github.com/deltasync/deltasync/loadtest"
)

// TestLoadtestSmall runs the fleet load test at a small size, as CI does:
// two serve processes, twenty devices. The figures of the README come from
// large runs; this checks that every phase runs and reports, that the polls
// were all held, that edits woke devices on both replicas, and that the
// idle fleet stayed within the store budget of the acceptance (5 requests
// a second per replica).
func TestLoadtestSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two server processes")
	}
	stdout, stderr, code := cli(t, "", "loadtest", "--devices", "20", "--replicas", "2", "--wait", "1s",
		"--idle", "2s", "--duration", "3s", "--edit-rate", "5", "--sync-rate", "5", "--cost-samples", "2", "--json")
	if code != 0 {
		t.Fatalf("loadtest exited %d: %s", code, stderr)
	}
	var r loadtest.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("report %q: %v", stdout, err)
	}
	if r.Devices != 20 || r.Replicas != 2 || r.Connected != 20 {
		t.Errorf("devices %d on %d replicas, %d polls held; want 20 on 2, all held", r.Devices, r.Replicas, r.Connected)
	}
	for i, n := range r.Idle.StorePerSec {
		if n > 5 {
			t.Errorf("idle replica %d: %.1f store requests a second, want at most 5", i, n)
		}
	}
	if r.WakeSame.N == 0 || r.WakeCross.N == 0 {
		t.Errorf("wake-ups measured: %d on the committing replica, %d on the other; want some of each", r.WakeSame.N, r.WakeCross.N)
	}
	for _, k := range []string{"status", "patch", "sync"} {
		if r.Requests[k].N == 0 {
			t.Errorf("no %s requests measured", k)
		}
	}
	if c := r.Cost["patch"]; c["put"] == 0 {
		t.Errorf("cost of a patch: %v, want its writes counted", c)
	}
	if len(r.Errors) > 0 {
		t.Errorf("errors: %v", r.Errors)
	}
}
