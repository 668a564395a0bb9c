package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// Blobs are binary attachments (photos, files) kept beside a data set,
// content-addressed by SHA-256. A record refers to one with a small JSON
// object, the blob reference:
//
//	{"$blob": "sha256:<64 hex>", "bytes": 3000000, "mime": "image/jpeg"}
//
// Upload (the tus 1.0 core protocol with the creation extension, see the
// README for why):
//
//	POST  /v1/blobs                    Upload-Length: N, Upload-Metadata: sha256 <b64 hex>,mime <b64>
//	                                   → 201 Location: /v1/blobs/uploads/<hex>, Upload-Offset
//	                                     (200 with Upload-Offset: N if the caller already has it)
//	HEAD  /v1/blobs/uploads/<hex>      → Upload-Offset, Upload-Length
//	PATCH /v1/blobs/uploads/<hex>      Upload-Offset: o, Content-Type: application/offset+octet-stream
//	                                   → 204 Upload-Offset: o+n; the last PATCH verifies the SHA-256
//	GET   /v1/blobs/sha256:<hex>       Range: bytes=o- resumes a download
//
// The upload is named by the blob's hash, so a client that lost its upload
// URL (or crashed) resumes by creating it again.

// BlobPrefix starts every blob ID.
const BlobPrefix = "sha256:"

// BlobRefKey is the JSON key that marks an object as a blob reference.
const BlobRefKey = "$blob"

// TusVersion is the tus protocol version the blob routes speak.
const TusVersion = "1.0.0"

// Tus header names.
const (
	HeaderTusResumable   = "Tus-Resumable"
	HeaderUploadLength   = "Upload-Length"
	HeaderUploadOffset   = "Upload-Offset"
	HeaderUploadMetadata = "Upload-Metadata"
	HeaderUploadChecksum = "Upload-Checksum"
	ContentTypeOffset    = "application/offset+octet-stream"
)

// BlobRef is a record's reference to a blob.
type BlobRef struct {
	Blob  string `json:"$blob"`
	Bytes int64  `json:"bytes"`
	Mime  string `json:"mime,omitempty"`
}

// BlobID names content by its SHA-256: "sha256:<hex>".
func BlobID(sum [sha256.Size]byte) string { return BlobPrefix + hex.EncodeToString(sum[:]) }

// ParseBlobID checks a blob ID and returns its hex digest (64 lower-case
// hex digits). Only the exact form BlobID writes is accepted, so one blob
// has one name.
func ParseBlobID(id string) (string, error) {
	h, ok := strings.CutPrefix(id, BlobPrefix)
	if !ok {
		return "", fmt.Errorf("blob id %q must start with %q", id, BlobPrefix)
	}
	if err := ValidBlobHex(h); err != nil {
		return "", fmt.Errorf("blob id %q: %w", id, err)
	}
	return h, nil
}

// ValidBlobHex checks a bare SHA-256 hex digest: 64 lower-case hex digits.
func ValidBlobHex(h string) error {
	if len(h) != 2*sha256.Size {
		return fmt.Errorf("a SHA-256 digest is %d hex digits, got %d", 2*sha256.Size, len(h))
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("a SHA-256 digest is lower-case hex, got %q", h)
		}
	}
	return nil
}

// blobMarker is how a blob reference starts in canonical JSON (compact,
// keys sorted: "$blob" sorts before every letter).
var blobMarker = []byte(`"` + BlobRefKey + `":`)

// BlobMarker returns the bytes every canonical JSON value that references
// a blob contains: a value without them references none (BlobRefs).
func BlobMarker() []byte { return bytes.Clone(blobMarker) }

// BlobRefs returns the hex digests of the blobs a JSON value references:
// every object with a "$blob" member whose value is a valid blob ID, at any
// depth, in no particular order (duplicates kept). value must be canonical
// JSON (snapshot.CanonicalJSON: what the store holds); a value that
// mentions no blob is recognised without being decoded.
func BlobRefs(value []byte) ([]string, error) {
	refs, err := BlobRefsOf(value)
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.Blob[len(BlobPrefix):]
	}
	return out, err
}

// BlobRefsOf is BlobRefs with each reference whole (its "bytes" and "mime"
// as the record states them; 0 and "" where absent or not valid).
func BlobRefsOf(value []byte) ([]BlobRef, error) {
	if !bytes.Contains(value, blobMarker) {
		return nil, nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("find blob references: %w", err)
	}
	var out []BlobRef
	walkBlobRefs(v, &out)
	return out, nil
}

func walkBlobRefs(v any, out *[]BlobRef) {
	switch t := v.(type) {
	case map[string]any:
		if id, ok := t[BlobRefKey].(string); ok {
			if _, err := ParseBlobID(id); err == nil {
				r := BlobRef{Blob: id}
				if n, ok := t["bytes"].(json.Number); ok {
					r.Bytes, _ = n.Int64()
				}
				r.Mime, _ = t["mime"].(string)
				*out = append(*out, r)
			}
		}
		for _, x := range t {
			walkBlobRefs(x, out)
		}
	case []any:
		for _, x := range t {
			walkBlobRefs(x, out)
		}
	}
}
