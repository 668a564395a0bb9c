package wire

import (
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Blobs travel zstd-compressed only when it helps: a photo or a video is
// compressed already and would only cost CPU. Whoever sends a blob
// compresses a sample of it first.

// BlobSampleBytes is the size of the sample whose compression decides.
const BlobSampleBytes = 64 << 10

// blobWorthRatio: compress only if the sample shrinks below this fraction.
const blobWorthRatio = 0.9

var (
	sampleEncOnce sync.Once
	sampleEnc     *zstd.Encoder
)

// BlobCompresses reports whether zstd shrinks sample (the start of a blob)
// enough to be worth sending the blob compressed.
func BlobCompresses(sample []byte) bool {
	if len(sample) < 512 {
		return false
	}
	sampleEncOnce.Do(func() {
		sampleEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	})
	return float64(len(sampleEnc.EncodeAll(sample, nil))) < blobWorthRatio*float64(len(sample))
}
