package wire_test

import (
	"testing"

	"github.com/deltasync/deltasync/internal/gen"
	"github.com/deltasync/deltasync/snapshot/memstore"
)

// TestDeltaEntropyCodesBase64: a new 2 MiB photo as base64 in a JSON value
// costs at most 2.15 MB down (issue 14 item 5), in format 3 and in the
// format 2 that clients built before it get: its chunks, which no old chunk
// helps, are still Huffman-coded (base64 carries 6 bits per character), not
// sent as they are (2.8 MB; klauspost/compress skips the entropy coding of
// a block without matches at its default level unless told otherwise).
func TestDeltaEntropyCodesBase64(t *testing.T) {
	s := memstore.New()
	recs := gen.Dataset(gen.Options{Size: 2 << 20, Seed: 41})
	a := build(t, s, recs)
	b := build(t, s, gen.AddAttachment(recs, 2<<20, 41))
	for _, format := range formats {
		got := len(packFormat(t, s, a, b, 0, format))
		t.Logf("format %d: a new 2 MiB attachment costs %d bytes down", format, got)
		if got > 2_150_000 {
			t.Errorf("format %d: a new 2 MiB attachment costs %d bytes down, want at most 2,150,000", format, got)
		}
	}
}
