package diff

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Op kinds of a patch.
const (
	OpPut    = "put"
	OpMerge  = "merge"
	OpDelete = "delete"
)

// Patch is a batch of offline edits made against version Base. ID is chosen
// by the client and makes retries idempotent.
type Patch struct {
	ID   string `json:"id"`
	Base uint64 `json:"base"`
	Ops  []Op   `json:"ops"`
	// Seen optionally tells, per key, which value the client's view held
	// before its first op on the key in this patch (see SeenHash): the
	// synced value with the client's own earlier, already sent edits laid
	// over it. When the head still holds exactly that value, nobody else
	// changed the key, and the ops apply as they are: a device's second
	// patch is never taken for a conflict with its own first one, although
	// both were made against the same base version.
	Seen map[string]string `json:"seen,omitempty"`
}

// SeenAbsent is the Seen entry of a key the client's view did not hold.
const SeenAbsent = "-"

// SeenHash is the Seen entry of a canonical value: 128 bits of its SHA-256
// in hex (nil means absent).
func SeenHash(value []byte) string {
	if value == nil {
		return SeenAbsent
	}
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:16])
}

// Op is one edit: put a whole value, merge an RFC 7386 merge patch into an
// object, or delete a key.
type Op struct {
	Op    string          `json:"op"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value,omitempty"`
	Patch json.RawMessage `json:"patch,omitempty"`
	// At is when the edit was made on the device, in unix milliseconds,
	// where the device says so (0: unknown). It is carried to the change
	// feed; replay does not use it.
	At int64 `json:"at,omitempty"`
}

// Receipt statuses.
const (
	StatusApplied  = "applied"  // the key was not changed since base: applied as is
	StatusMerged   = "merged"   // changed on both sides, different fields: both kept
	StatusConflict = "conflict" // same field changed on both sides, or delete vs update
	StatusRejected = "rejected" // not applied; Reason says why
)

// Receipt tells the client what became of one op.
type Receipt struct {
	Index  int    `json:"index"`
	Op     string `json:"op"`
	Key    string `json:"key"`
	Status string `json:"status"`
	// For conflicts: the policy that resolved it, whether the op took
	// effect, the conflicting field paths, and both sides' values (a
	// deleted side is flagged rather than given a value). The ops of one
	// patch on one key that conflict share the two sides: only the key's
	// last conflict receipt carries them (values and deleted flags), the
	// others none, or an answer would hold the values once per op (10,000
	// merges on a 16 MiB record: 320 GB). ShareConflictSides copies them
	// back onto each receipt.
	Policy        string          `json:"policy,omitempty"`
	Won           bool            `json:"won,omitempty"`
	Fields        []string        `json:"fields,omitempty"`
	ClientValue   json.RawMessage `json:"client_value,omitempty"`
	ClientDeleted bool            `json:"client_deleted,omitempty"`
	ServerValue   json.RawMessage `json:"server_value,omitempty"`
	ServerDeleted bool            `json:"server_deleted,omitempty"`
	Reason        string          `json:"reason,omitempty"`
}

// ShareConflictSides gives every conflict receipt of a key the two sides
// that only the key's last conflict receipt carries (see Receipt), for a
// reader that keeps a conflict per op. The values are shared, not copied.
func ShareConflictSides(receipts []Receipt) {
	carrier := map[string]*Receipt{}
	for i := len(receipts) - 1; i >= 0; i-- {
		rc := &receipts[i]
		if rc.Status != StatusConflict {
			continue
		}
		c, ok := carrier[rc.Key]
		if !ok {
			carrier[rc.Key] = rc
			continue
		}
		if rc.ClientValue == nil && !rc.ClientDeleted && rc.ServerValue == nil && !rc.ServerDeleted {
			rc.ClientValue, rc.ClientDeleted = c.ClientValue, c.ClientDeleted
			rc.ServerValue, rc.ServerDeleted = c.ServerValue, c.ServerDeleted
		}
	}
}
