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

// Conflict policies an organisation can choose (defined by the replay in
// package diff, which applies them).
const (
	PolicyClientWins = diff.PolicyClientWins
	PolicyServerWins = diff.PolicyServerWins
	PolicyReject     = diff.PolicyReject
)

// Policy is an organisation's offline policy. It is stored by the server
// (as part of the org settings) and returned to clients with every sync.
//
// The patch limits are the ones a patch is held to: in what the server
// sends, each is the lower of the server's own limit and the org's (so
// never zero); in stored org settings, zero means "no limit of the org's
// own". A client splits its queue into patches within MaxPatchOps and
// MaxPatchBytes (a patch of one edit may be as large as one value of
// MaxRecordBytes needs), and refuses at edit time a value over
// MaxRecordBytes. A client that got a policy without a limit (an older
// server) uses diff.DefaultLimits.
//
// MaxOfflineSeconds and MaxPendingBytes are for the device: a client over
// either reports it in its status (error, reason policy, with the limit in
// the message) and asks the user to connect, but keeps accepting and
// sending edits. The server does not refuse uploads for them: it cannot
// see either quantity, and refusing work that the device already accepted
// would lose it.
type Policy struct {
	OfflineMode       bool   `json:"offline_mode"`
	ConflictPolicy    string `json:"conflict_policy"`
	MaxOfflineSeconds int64  `json:"max_offline_seconds,omitempty"`
	MaxPendingBytes   int64  `json:"max_pending_bytes,omitempty"`
	MaxPatchOps       int    `json:"max_patch_ops,omitempty"`
	MaxPatchBytes     int64  `json:"max_patch_bytes,omitempty"`
	MaxRecordBytes    int64  `json:"max_record_bytes,omitempty"`
	// Blobs (blob.go): the largest blob a user may upload, and the largest
	// a client downloads eagerly when a synced record references it
	// (bigger ones are fetched on demand). Both filled in by the server.
	MaxBlobBytes   int64 `json:"max_blob_bytes,omitempty"`
	EagerBlobBytes int64 `json:"eager_blob_bytes,omitempty"`
}

// Limits returns the patch limits of p, with diff's defaults where p has
// none.
func (p Policy) Limits() diff.Limits {
	return diff.Limits{MaxOps: p.MaxPatchOps, MaxBytes: p.MaxPatchBytes, MaxRecordBytes: p.MaxRecordBytes}.Fill()
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
	// CodeBlobMissing: a patch references a blob its user has not uploaded
	// (upload it first), or an upload's bytes do not hash to its name.
	CodeBlobMissing  = "blob_missing"
	CodeBlobMismatch = "blob_mismatch"
)

// ErrorBody is the JSON body of every error answer:
// {"error": {"code": "...", "message": "..."}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// LimitErrorBody is the 413 answer to a patch over a limit of the policy:
// the error (code too_large), which limit, and the policy in force, so a
// client forms the next patches to fit without another round trip. Nothing
// of the patch was applied.
type LimitErrorBody struct {
	Error  ErrorDetail `json:"error"`
	Limit  string      `json:"limit,omitempty"` // diff.LimitPatchOps, LimitPatchBytes or LimitRecordBytes
	Policy *Policy     `json:"policy,omitempty"`
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
