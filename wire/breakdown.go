package wire

import (
	"encoding/binary"
	"fmt"

	"github.com/deltasync/deltasync/snapshot"
)

// PackBytes says where the bytes of a format-3 delta pack go. The four
// parts add up to the pack's length.
type PackBytes struct {
	Header   int64 `json:"pack_header"`    // the SyncHeader JSON, compressed
	Manifest int64 `json:"manifest_delta"` // the manifest delta, compressed
	Payload  int64 `json:"chunk_payload"`  // the chunks, compressed
	// Framing is everything else: magic, lengths, section marks, group
	// headers (chunk counts, dictionary runs), zstd frame and block
	// headers and checksums, the abort section, the end mark.
	Framing    int64 `json:"pack_framing"`
	Groups     int   `json:"groups"`
	DictGroups int   `json:"dict_groups"` // groups compressed against old chunks
}

// Breakdown parses a format-3 pack (without decompressing it) and says
// where its bytes go. The bench uses it to decide by measurement.
func Breakdown(pack []byte) (PackBytes, error) {
	var pb PackBytes
	if len(pack) < 5 || string(pack[:4]) != DeltaMagic {
		return pb, fmt.Errorf("not a delta pack: %w", ErrBadDelta)
	}
	if pack[4] != DeltaFormat {
		return pb, fmt.Errorf("delta format %d: %w", pack[4], snapshot.ErrUnsupportedVersion)
	}
	p := &packParser{b: pack[5:]}
	pb.Header = p.frame()
	pb.Manifest = p.frame()
	ended := false
	for p.err == nil && !ended {
		switch kind := p.byte(); kind {
		case sectionGroup:
			p.num()
			runs := p.num()
			for i := uint64(0); i < runs && p.err == nil; i++ {
				p.num()
				p.num()
			}
			pb.Payload += p.frame()
			pb.Groups++
			if runs > 0 {
				pb.DictGroups++
			}
		case sectionAbort:
			p.skip(p.num())
		case sectionEnd:
			ended = true
			if len(p.b) != 0 {
				p.fail("trailing data")
			}
		default:
			p.fail(fmt.Sprintf("section %d", kind))
		}
	}
	if p.err != nil {
		return pb, p.err
	}
	pb.Framing = int64(len(pack)) - pb.Header - pb.Manifest - pb.Payload
	return pb, nil
}

type packParser struct {
	b   []byte
	err error
}

func (p *packParser) fail(why string) {
	if p.err == nil {
		p.err = fmt.Errorf("%s: %w", why, ErrBadDelta)
	}
	p.b = nil
}

func (p *packParser) num() uint64 {
	x, n := binary.Uvarint(p.b)
	if n <= 0 {
		p.fail("truncated number")
		return 0
	}
	p.b = p.b[n:]
	return x
}

func (p *packParser) byte() byte {
	if len(p.b) == 0 {
		p.fail("truncated")
		return 0
	}
	c := p.b[0]
	p.b = p.b[1:]
	return c
}

func (p *packParser) skip(n uint64) []byte {
	if n > uint64(len(p.b)) {
		p.fail("truncated")
		return nil
	}
	out := p.b[:n]
	p.b = p.b[n:]
	return out
}

// frame skips uvarint len and a zstd frame, and returns the bytes of its
// blocks' content (what is left once frame and block headers and the
// checksum are taken off).
func (p *packParser) frame() int64 {
	f := p.skip(p.num())
	if p.err != nil {
		return 0
	}
	n, err := zstdFrameContent(f)
	if err != nil {
		p.fail(err.Error())
	}
	return n
}

// zstdFrameContent returns the block content bytes of one zstd frame
// (RFC 8878 section 3.1.1).
func zstdFrameContent(f []byte) (int64, error) {
	if len(f) < 6 || binary.LittleEndian.Uint32(f) != 0xFD2FB528 {
		return 0, fmt.Errorf("not a zstd frame")
	}
	fhd := f[4]
	single := fhd&0x20 != 0
	hdr := 5 + [4]int{0, 1, 2, 4}[fhd&3] + [4]int{0, 2, 4, 8}[fhd>>6]
	if !single {
		hdr++ // window descriptor
	} else if fhd>>6 == 0 {
		hdr++ // one-byte content size
	}
	pos, content := hdr, int64(0)
	for {
		if pos+3 > len(f) {
			return 0, fmt.Errorf("truncated zstd block")
		}
		bh := uint32(f[pos]) | uint32(f[pos+1])<<8 | uint32(f[pos+2])<<16
		pos += 3
		size := int(bh >> 3)
		if (bh>>1)&3 == 1 { // RLE: one byte repeated
			size = 1
		}
		if pos+size > len(f) {
			return 0, fmt.Errorf("truncated zstd block")
		}
		pos += size
		content += int64(size)
		if bh&1 != 0 {
			break
		}
	}
	if fhd&4 != 0 {
		pos += 4
	}
	if pos != len(f) {
		return 0, fmt.Errorf("zstd frame of %d bytes, blocks end at %d", len(f), pos)
	}
	return content, nil
}
