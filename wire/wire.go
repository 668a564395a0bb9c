// Package wire holds the message types that the server and the client share:
// JSON control messages and the binary delta-pack format. It sits below both
// so that neither imports the other.
//
// The delta pack is versioned by its fifth byte. Format 3 (delta3.go, the
// one WriteDelta writes by default) sends only what a client cannot derive
// and compresses the chunks in groups against the old chunks they overlap;
// format 2 (delta.go) is what clients that ask for no format get. One
// DeltaReader reads both, and bounds what a hostile pack can make it
// allocate (MaxDeltaMemory, MaxDeltaChunks, MaxDeltaKeyBytes). Breakdown
// says where a format-3 pack's bytes go, for the bench.
package wire

import "github.com/deltasync/deltasync/diff"

// Conflict policies an organisation can choose.
const (
	PolicyClientWins = "client-wins"
	PolicyServerWins = "server-wins"
	PolicyReject     = "reject"
)

// Policy is an organisation's offline policy. It is stored by the server
// (as part of the org settings), returned to clients with every sync and
// enforced on upload. Zero limits mean "no limit".
type Policy struct {
	OfflineMode       bool   `json:"offline_mode"`
	ConflictPolicy    string `json:"conflict_policy"`
	MaxOfflineSeconds int64  `json:"max_offline_seconds,omitempty"`
	MaxPendingBytes   int64  `json:"max_pending_bytes,omitempty"`
	MaxPatchOps       int    `json:"max_patch_ops,omitempty"`
	MaxPatchBytes     int64  `json:"max_patch_bytes,omitempty"`
}

// Error codes carried in ErrorBody.
const (
	CodeBadRequest       = "bad_request"
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeOfflineDisabled  = "offline_mode_disabled"
	CodeNotFound         = "not_found"
	CodeConflict         = "conflict"
	CodeTooLarge         = "too_large"
	CodeRateLimited      = "rate_limited"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
	CodeMethodNotAllowed = "method_not_allowed"
)

// ErrorBody is the JSON body of every error answer:
// {"error": {"code": "...", "message": "..."}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// StatusResponse is the answer of GET /v1/status.
type StatusResponse struct {
	Org         string `json:"org"`
	User        string `json:"user"`
	Head        uint64 `json:"head"`
	Records     uint64 `json:"records"`
	StreamBytes uint64 `json:"stream_bytes"`
	StoredBytes uint64 `json:"stored_bytes"`
	Chunks      int    `json:"chunks"`
	Policy      Policy `json:"policy"`
	UpdatedUnix int64  `json:"updated_unix,omitempty"`
}

// PatchResponse is the answer of POST /v1/patches: the version the patch
// produced (or the head, if it changed nothing), a receipt for every op and,
// separately, the conflict receipts. The same patch id again gets the same
// answer with Duplicate set.
type PatchResponse struct {
	Version   uint64         `json:"version"`
	Created   bool           `json:"created"`
	Duplicate bool           `json:"duplicate,omitempty"`
	Receipts  []diff.Receipt `json:"receipts"`
	Conflicts []diff.Receipt `json:"conflicts"`
}
