package gen

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
)

const mb = 1 << 20

// generated caches data sets: several tests read the same ones.
var generated sync.Map // Options → []byte

func ndjson(t testing.TB, opts Options) []byte {
	t.Helper()
	if b, ok := generated.Load(opts); ok {
		return b.([]byte)
	}
	var buf bytes.Buffer
	st, err := Generate(&buf, opts)
	if err != nil {
		t.Fatalf("Generate(%+v): %v", opts, err)
	}
	if st.Bytes != int64(buf.Len()) || st.Records != bytes.Count(buf.Bytes(), []byte("\n")) {
		t.Fatalf("Stats %+v, but wrote %d bytes in %d lines", st, buf.Len(), bytes.Count(buf.Bytes(), []byte("\n")))
	}
	generated.Store(opts, buf.Bytes())
	return buf.Bytes()
}

type line struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

func parseLines(t testing.TB, data []byte) []line {
	t.Helper()
	var out []line
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 16*mb)
	for n := 1; sc.Scan(); n++ {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeterministic(t *testing.T) {
	a := ndjson(t, Options{Size: mb, Seed: 1})
	var b bytes.Buffer
	if _, err := Generate(&b, Options{Size: mb, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b.Bytes()) {
		t.Error("same options gave different output")
	}
	if c := ndjson(t, Options{Size: mb, Seed: 2}); bytes.Equal(a[:4096], c[:4096]) {
		t.Error("seeds 1 and 2 gave the same output")
	}
}

func TestEachMatchesGenerateAndDataset(t *testing.T) {
	opts := Options{Size: mb, Seed: 7}
	var lines []byte
	var recs []Record
	if err := Each(opts, func(r Record) error {
		lines = appendLine(lines, r.Key, r.Value)
		recs = append(recs, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(lines, ndjson(t, opts)) {
		t.Error("Each and Generate disagree")
	}
	// Each hands out records it does not reuse.
	if got := parseLines(t, lines); got[0].Key != recs[0].Key || !bytes.Equal(got[0].Value, recs[0].Value) {
		t.Error("first record changed after Each returned")
	}
	ds := Dataset(opts)
	if len(ds) != len(recs) {
		t.Fatalf("Dataset has %d records, Each %d", len(ds), len(recs))
	}
	for i := 1; i < len(ds); i++ {
		if ds[i-1].Key >= ds[i].Key {
			t.Fatalf("Dataset not sorted at %d: %q >= %q", i, ds[i-1].Key, ds[i].Key)
		}
	}
	if sorted := isSorted(recs); sorted {
		t.Error("Each yielded records sorted by key; want generation order")
	}
}

func isSorted(recs []Record) bool {
	for i := 1; i < len(recs); i++ {
		if recs[i-1].Key > recs[i].Key {
			return false
		}
	}
	return true
}

func TestEachStopsOnError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := Each(Options{Size: mb, Seed: 1}, func(Record) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("Each = %v after %d records; want stop after 3", err, n)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

func TestGenerateWriteError(t *testing.T) {
	werr := errors.New("disk full")
	if _, err := Generate(failWriter{werr}, Options{Size: mb, Seed: 1}); !errors.Is(err, werr) {
		t.Errorf("Generate = %v; want %v", err, werr)
	}
}

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		size int64
		tol  float64
	}{
		{mb, 0.02},
		{8 * mb, 0.02},
		{100 << 10, 0.05},
	} {
		for seed := int64(1); seed <= 3; seed++ {
			got := int64(len(ndjson(t, Options{Size: tc.size, Seed: seed})))
			if dev := float64(got-tc.size) / float64(tc.size); dev < -tc.tol || dev > tc.tol {
				t.Errorf("size %d seed %d: got %d bytes (%+.2f%%)", tc.size, seed, got, 100*dev)
			}
		}
	}
	for _, size := range []int64{0, -1} {
		var buf bytes.Buffer
		if st, err := Generate(&buf, Options{Size: size}); err != nil || st.Records != 0 || buf.Len() != 0 {
			t.Errorf("Size %d: %+v, %v, %d bytes; want nothing", size, st, err, buf.Len())
		}
	}
}

var collections = []string{"users", "groups", "channels", "messages", "tasks", "forms", "attachments"}

func TestKeysAndValues(t *testing.T) {
	lines := parseLines(t, ndjson(t, Options{Size: 8 * mb, Seed: 1}))
	seen := make(map[string]bool, len(lines))
	perColl := map[string]int{}
	for _, l := range lines {
		k := l.Key
		if len(k) == 0 || len(k) > 512 || !utf8.ValidString(k) || strings.IndexByte(k, 0) >= 0 {
			t.Fatalf("invalid key %q", k)
		}
		if seen[k] {
			t.Fatalf("duplicate key %q", k)
		}
		seen[k] = true
		coll, id, ok := strings.Cut(k, "/")
		if !ok || id == "" {
			t.Fatalf("key %q is not collection/id", k)
		}
		perColl[coll]++
		if !json.Valid(l.Value) {
			t.Fatalf("%s: invalid JSON value", k)
		}
		if c := canonical(t, l.Value); !bytes.Equal(c, l.Value) {
			t.Fatalf("%s: value is not canonical:\n got %s\nwant %s", k, l.Value, c)
		}
		if len(l.Value) > 16*mb {
			t.Fatalf("%s: value of %d bytes", k, len(l.Value))
		}
	}
	for _, c := range collections {
		if perColl[c] == 0 {
			t.Errorf("no records in %s", c)
		}
	}
	if len(perColl) != len(collections) {
		t.Errorf("collections %v; want %v", perColl, collections)
	}
	t.Logf("records per collection: %v", perColl)
}

// canonical re-encodes a value the way the snapshot layer does.
func canonical(t testing.TB, v []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func TestValueSizesVary(t *testing.T) {
	lines := parseLines(t, ndjson(t, Options{Size: 8 * mb, Seed: 1}))
	lo, hi := 1<<30, 0
	for _, l := range lines {
		if strings.HasPrefix(l.Key, "attachments/") {
			continue
		}
		lo, hi = min(lo, len(l.Value)), max(hi, len(l.Value))
	}
	if lo > 400 || hi < 2000 || hi > 16<<10 {
		t.Errorf("non-attachment values from %d to %d bytes; want a few hundred up to a few KB", lo, hi)
	}
}

func TestAttachments(t *testing.T) {
	for _, size := range []int64{mb, 8 * mb} {
		data := ndjson(t, Options{Size: size, Seed: 1})
		var attBytes, n int
		for _, l := range parseLines(t, data) {
			if !strings.HasPrefix(l.Key, "attachments/") {
				continue
			}
			n++
			attBytes += len(l.Key) + len(l.Value) + lineOverhead
			var a struct {
				ContentType string `json:"content_type"`
				Data        string `json:"data"`
				Size        int    `json:"size"`
			}
			if err := json.Unmarshal(l.Value, &a); err != nil {
				t.Fatal(err)
			}
			raw, err := base64.StdEncoding.DecodeString(a.Data)
			if err != nil {
				t.Fatalf("%s: %v", l.Key, err)
			}
			if len(raw) != a.Size || a.ContentType != "image/jpeg" || !bytes.HasPrefix(raw, []byte{0xff, 0xd8, 0xff}) {
				t.Errorf("%s: %d bytes of data, size %d, type %q", l.Key, len(raw), a.Size, a.ContentType)
			}
			if size >= 8*mb && (a.Size < minAttachment || a.Size > maxAttachment) {
				t.Errorf("%s: %d raw bytes; want 20–200 KiB", l.Key, a.Size)
			}
		}
		share := float64(attBytes) / float64(len(data))
		if share < 0.05 || share > 0.15 {
			t.Errorf("size %d: attachments are %.1f%% of bytes; want 5–15%%", size, 100*share)
		}
		t.Logf("size %d: %d attachments, %.1f%% of bytes", size, n, 100*share)
	}
}

// TestCompressesLikeText checks that the non-attachment part compresses
// like real data, neither like noise nor like a repeated string.
func TestCompressesLikeText(t *testing.T) {
	var text []byte
	for _, l := range bytes.SplitAfter(ndjson(t, Options{Size: 8 * mb, Seed: 1}), []byte("\n")) {
		if !bytes.HasPrefix(l, []byte(`{"key":"attachments/`)) {
			text = append(text, l...)
		}
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	ratio := float64(len(text)) / float64(len(enc.EncodeAll(text, nil)))
	if ratio < 3 || ratio > 5 {
		t.Errorf("zstd ratio of non-attachment data %.2f; want 3–5", ratio)
	}
	t.Logf("zstd ratio of non-attachment data: %.2f", ratio)
}

func BenchmarkGenerate(b *testing.B) {
	opts := Options{Size: 16 * mb, Seed: 1}
	b.SetBytes(opts.Size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate(io.Discard, opts); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDataset(b *testing.B) {
	opts := Options{Size: 16 * mb, Seed: 1}
	b.SetBytes(opts.Size)
	b.ReportAllocs()
	for b.Loop() {
		Dataset(opts)
	}
}
