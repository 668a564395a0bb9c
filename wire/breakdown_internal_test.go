package wire

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// TestZstdFrameContent: the content of an incompressible frame's raw
// blocks is the input, and frame and block headers and the checksum are
// what is left of the frame.
func TestZstdFrameContent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 100, 128 << 10, 300 << 10} {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(r.Uint32())
		}
		for _, crc := range []bool{false, true} {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderCRC(crc), zstd.WithEncoderConcurrency(1))
			f := enc.EncodeAll(raw, nil)
			got, err := zstdFrameContent(f)
			if err != nil {
				t.Fatal(err)
			}
			blocks := (n + 128<<10 - 1) / (128 << 10)
			if got != int64(n) || len(f)-int(got) < 3*blocks+6 || len(f)-int(got) > 3*blocks+18 {
				t.Errorf("%d bytes, crc %v: content %d of a %d-byte frame", n, crc, got, len(f))
			}
			if _, err := zstdFrameContent(f[:len(f)-1]); err == nil {
				t.Errorf("%d bytes: a truncated frame parsed", n)
			}
		}
	}
}

// groupFrames returns the zstd frames of a format-3 pack's groups without
// dictionaries.
func groupFrames(t testing.TB, pack []byte) [][]byte {
	p := &packParser{b: pack[5:]}
	p.skip(p.num())
	p.skip(p.num())
	var out [][]byte
	for p.err == nil {
		if p.byte() != sectionGroup {
			break
		}
		p.num()
		if p.num() != 0 {
			t.Fatal("a group with a dictionary")
		}
		out = append(out, p.skip(p.num()))
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return out
}

// BenchmarkDecompressFullSync is the zstd part alone of reading a format-3
// full sync (MB/s of raw stream; see BenchmarkReadFullSync for the whole).
func BenchmarkDecompressFullSync(b *testing.B) {
	for _, family := range []string{"work", "crm"} {
		data, raw := fullSyncPack(b, family)
		frames := groupFrames(b, data)
		dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxDeltaMemory))
		b.Run(family, func(b *testing.B) {
			b.SetBytes(raw)
			var buf []byte
			start := cpuTime()
			defer func() {
				if d := cpuTime() - start; d > 0 {
					b.ReportMetric(float64(raw)*float64(b.N)/1e6/d.Seconds(), "MB/cpu-s")
				}
			}()
			for b.Loop() {
				for _, f := range frames {
					var err error
					if buf, err = dec.DecodeAll(f, buf[:0]); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
