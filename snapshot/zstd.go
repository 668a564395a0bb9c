package snapshot

import (
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// MaxDecodedSize bounds what any single zstd frame (chunk or manifest) may
// expand to, so corrupt or hostile input cannot exhaust memory.
const MaxDecodedSize = 256 << 20

// One encoder and one decoder serve the whole process: EncodeAll and
// DecodeAll are safe for concurrent use.
var (
	zstdOnce sync.Once
	zenc     *zstd.Encoder
	zencFast *zstd.Encoder
	zdec     *zstd.Decoder
)

func initZstd() {
	var err error
	zenc, err = zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderCRC(true),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithZeroFrames(true))
	if err != nil {
		panic(err)
	}
	zencFast, err = zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderCRC(true),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithZeroFrames(true))
	if err != nil {
		panic(err)
	}
	zdec, err = zstd.NewReader(nil,
		zstd.WithDecoderMaxMemory(MaxDecodedSize),
		zstd.WithDecoderMaxWindow(MaxDecodedSize),
		zstd.WithDecoderConcurrency(0))
	if err != nil {
		panic(err)
	}
}

// Compress returns src as one zstd frame (level 3, with checksum) appended to dst.
func Compress(dst, src []byte) []byte {
	zstdOnce.Do(initZstd)
	return zenc.EncodeAll(src, dst)
}

// compressFast is Compress at the fastest level, for manifests: they are
// rewritten on every version and mostly hashes, which no level compresses,
// so the time of a slower level buys almost nothing.
func compressFast(dst, src []byte) []byte {
	zstdOnce.Do(initZstd)
	return zencFast.EncodeAll(src, dst)
}

// Decompress decodes zstd frames in src, appended to dst.
func Decompress(dst, src []byte) ([]byte, error) {
	zstdOnce.Do(initZstd)
	return zdec.DecodeAll(src, dst)
}
