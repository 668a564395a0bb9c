package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deltasync/deltasync/diff"
)

// The backend's side of the API: what the app's own backend (the system of
// record) sends and receives on the admin routes, and the signed requests
// the server makes to it (webhook deliveries, write validation).

// FanoutRequest is the body of POST /v1/admin/orgs/{org}/patches: the same
// ops applied to each listed user's data set at its head, idempotent per
// (ID, user).
type FanoutRequest struct {
	ID    string    `json:"id"`
	Users []string  `json:"users"`
	Ops   []diff.Op `json:"ops"`
}

// FanoutResult is one line of the NDJSON answer to a fan-out: the user and
// either the answer its patch got (as POST /v1/patches would give it) or
// the error that user's patch met (nothing of it was applied; sending the
// same fan-out again retries it, and users already done answer Duplicate).
type FanoutResult struct {
	User string `json:"user"`
	*PatchResponse
	Error *ErrorDetail `json:"error,omitempty"`
}

// ContentTypeNDJSON is the type of the fan-out's answer.
const ContentTypeNDJSON = "application/x-ndjson"

// Headers of the requests the server makes to an org's backend.
const (
	// HeaderTimestamp is the unix time (seconds) the request was signed at.
	HeaderTimestamp = "X-Deltasync-Timestamp"
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, keyed with the
	// org's webhook secret, of the timestamp, a '.', and the body.
	HeaderSignature = "X-Deltasync-Signature"
	// HeaderDelivery names a webhook delivery: the entry's feed cursor,
	// the same on every attempt, for a receiver to drop repeats.
	HeaderDelivery = "X-Deltasync-Delivery"
	// HeaderAttempt counts the attempts at one delivery, from 1.
	HeaderAttempt = "X-Deltasync-Attempt"
)

// Sign returns the HeaderSignature value for body sent at ts (unix seconds).
func Sign(secret []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// ErrBadSignature is what Verify returns for a request that does not carry
// a valid signature within the tolerance.
var ErrBadSignature = errors.New("bad deltasync signature")

// Verify checks a signed request as a receiver should: the signature over
// the timestamp and the body, compared in constant time, and a timestamp
// within tolerance of now (a replayed old request is refused).
func Verify(secret []byte, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrBadSignature, timestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || -d > tolerance {
		return fmt.Errorf("%w: timestamp %d is %v away from now", ErrBadSignature, ts, d.Round(time.Second))
	}
	if !strings.HasPrefix(signature, "sha256=") || !hmac.Equal([]byte(signature), []byte(Sign(secret, ts, body))) {
		return fmt.Errorf("%w: signature does not match", ErrBadSignature)
	}
	return nil
}

// ValidationRequest is what the server sends to an org's validation URL
// before it replays a device's patch.
type ValidationRequest struct {
	Org   string      `json:"org"`
	User  string      `json:"user"`
	Patch *diff.Patch `json:"patch"`
}

// ValidationResponse is the validator's answer (200): the ops it refuses,
// by index, each with the reason the device is told. Ops not named apply.
type ValidationResponse struct {
	Rejected []ValidationRejection `json:"rejected"`
}

// ValidationRejection refuses one op of a patch.
type ValidationRejection struct {
	Index  int    `json:"index"`
	Reason string `json:"reason"`
}
