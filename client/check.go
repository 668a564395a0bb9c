package client

import (
	"encoding/hex"
	"encoding/json"

	"github.com/deltasync/deltasync/client/internal/state"
)

// CheckReport is what Check found in a state directory.
type CheckReport struct {
	Version      uint64 `json:"version"`       // the synced version (0: none)
	Records      uint64 `json:"records"`       // its records
	StreamHash   string `json:"stream_hash"`   // hex, recomputed from its chunks
	Chunks       int    `json:"chunks"`        // its chunks
	StoredChunks int    `json:"stored_chunks"` // chunks on disk (a download or a replaced version's included)
	NeedFull     bool   `json:"need_full"`     // the next pull is a full sync (damage found earlier)
	Downloading  bool   `json:"downloading"`   // a download is in progress (it resumes)

	Queued       []CheckedEdit `json:"queued"`        // pending edits, in queue order
	Sent         []CheckedEdit `json:"sent"`          // applied by the server, not yet pulled
	InflightID   string        `json:"inflight_id"`   // the patch in flight ("" if none)
	InflightSeqs []uint64      `json:"inflight_seqs"` // its edits
	Conflicts    int           `json:"conflicts"`

	StateBytes int64 `json:"state_bytes"` // size of StateFile
	DataBytes  int64 `json:"data_bytes"`  // size of DataFile
}

// CheckedEdit is one edit of the queue or the sent edits, as Check found it.
type CheckedEdit struct {
	Seq     uint64          `json:"seq"`
	Op      string          `json:"op"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value,omitempty"`
	Patch   json.RawMessage `json:"patch,omitempty"`
	Version uint64          `json:"version,omitempty"` // sent edits: the server version holding it
}

// CheckOptions configure Check.
type CheckOptions struct {
	// Records, if set, is called with every record of the synced version
	// (without pending edits) in key order.
	Records func(key string, value []byte) error
}

// Check verifies the state directory dir, which no process may hold: both
// files' own consistency; the synced version (its manifest, every chunk
// present with its SHA-256, the hash list equal to the manifest's, the
// index pointing at exactly the records the chunks hold); that nothing
// stored is left over; the download in progress; the queue, the sent
// edits, their index and the patch in flight consistent with each other.
// Every problem found is in the error, which matches ErrCorrupt; the
// report is returned either way (nil only when dir cannot be opened). A
// state of an older format must be opened (and so migrated) first.
func Check(dir string, opts CheckOptions) (*CheckReport, error) {
	var so state.CheckOptions
	if opts.Records != nil {
		so.Records = func(k, v []byte) error { return opts.Records(string(k), v) }
	}
	r, err := state.Check(dir, so)
	if r == nil {
		return nil, err
	}
	out := &CheckReport{
		Version: r.Version, Records: r.Records, StreamHash: hex.EncodeToString(r.StreamHash[:]),
		Chunks: r.Chunks, StoredChunks: r.Stored, NeedFull: r.NeedFull, Downloading: r.Download != nil,
		Queued: checkedEdits(r.Queue), Sent: checkedEdits(r.Sent), Conflicts: r.Conflicts,
		StateBytes: r.EditsBytes, DataBytes: r.DataBytes,
	}
	if r.Inflight != nil {
		out.InflightID, out.InflightSeqs = r.Inflight.ID, r.Inflight.Seqs
	}
	return out, err
}

func checkedEdits(es []*state.Edit) []CheckedEdit {
	out := make([]CheckedEdit, len(es))
	for i, e := range es {
		out[i] = CheckedEdit{Seq: e.Seq, Op: e.Op, Key: e.Key, Value: e.Value, Patch: e.Patch, Version: e.Version}
	}
	return out
}
