package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// ChunkID is the 128-bit keyed content hash of a chunk's raw bytes.
type ChunkID [16]byte

func (id ChunkID) String() string { return hex.EncodeToString(id[:]) }

// ParseChunkID parses the 32-hex-digit form returned by String.
func ParseChunkID(s string) (ChunkID, error) {
	var id ChunkID
	if len(s) != 32 {
		return id, fmt.Errorf("chunk id %q: want 32 hex digits: %w", s, ErrInvalid)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("chunk id %q: %w", s, ErrInvalid)
	}
	return id, nil
}

// Hasher computes chunk IDs for one user's data set. IDs are two xxhash64
// digests with independent seeds, both derived from the deployment secret and
// the (org, user) scope: the same bytes get unrelated IDs for different users
// or deployments, so object names and IDs say nothing about content across
// scopes. A Hasher is safe for concurrent use.
type Hasher struct {
	seed1, seed2 uint64
}

// NewHasher derives the seeds for one user's scope.
func NewHasher(secret []byte, org, user string) *Hasher {
	h := sha256.New()
	var n [8]byte
	for _, part := range [][]byte{[]byte("deltasync chunk id v1"), secret, []byte(org), []byte(user)} {
		binary.LittleEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	sum := h.Sum(nil)
	return &Hasher{
		seed1: binary.LittleEndian.Uint64(sum[0:8]),
		seed2: binary.LittleEndian.Uint64(sum[8:16]),
	}
}

// Sum returns the ID of data.
func (h *Hasher) Sum(data []byte) ChunkID {
	var id ChunkID
	var d xxhash.Digest
	d.ResetWithSeed(h.seed1)
	d.Write(data)
	binary.BigEndian.PutUint64(id[0:8], d.Sum64())
	d.ResetWithSeed(h.seed2 ^ uint64(len(data)))
	d.Write(data)
	binary.BigEndian.PutUint64(id[8:16], d.Sum64())
	return id
}

// Seeds returns the hasher's two seeds. They are specific to one user of one
// deployment (derived one-way from the secret), so the server can hand them
// to that user's clients to verify chunks without revealing the secret.
func (h *Hasher) Seeds() [2]uint64 { return [2]uint64{h.seed1, h.seed2} }

// HasherFromSeeds rebuilds a Hasher from Seeds.
func HasherFromSeeds(s [2]uint64) *Hasher { return &Hasher{seed1: s[0], seed2: s[1]} }
