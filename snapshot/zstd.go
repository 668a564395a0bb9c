package snapshot

import (
	"fmt"
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

// DecompressAtMost is Decompress for one frame of at most max bytes of
// content. A frame must announce its size in its header, which is checked
// before anything is expanded (a few bytes of RLE blocks can claim 256 MiB);
// only frames too small to carry a size field (content under 256 bytes,
// so a frame of a few hundred bytes at most) may omit it, and a frame that
// small cannot expand past 16 MiB. The result is checked against max too.
func DecompressAtMost(dst, src []byte, max int) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(src); err != nil {
		return nil, err
	}
	switch {
	case h.HasFCS && h.FrameContentSize > uint64(max):
		return nil, fmt.Errorf("zstd frame announces %d bytes, more than %d", h.FrameContentSize, max)
	case !h.HasFCS && len(src) > 512:
		return nil, fmt.Errorf("zstd frame of %d bytes does not announce its size", len(src))
	}
	n := len(dst)
	out, err := Decompress(dst, src)
	if err != nil {
		return nil, err
	}
	if len(out)-n > max {
		return nil, fmt.Errorf("zstd frame holds %d bytes, more than %d", len(out)-n, max)
	}
	return out, nil
}
