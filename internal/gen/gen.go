package gen

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Record is one generated key/value pair. Value is compact JSON whose object
// keys are sorted, so it is already in the canonical form the snapshot layer
// stores.
type Record struct {
	Key   string
	Value []byte
}

// Options select a data set. The same Options always give the same records.
type Options struct {
	// Size is the target total of NDJSON output in bytes; the result lands
	// within ±2% for sizes from about 1 MB up. Size <= 0 gives no records.
	Size int64
	// Seed selects one of many data sets of the same shape.
	Seed int64
}

// Stats summarises what Generate wrote.
type Stats struct {
	Records int
	Bytes   int64
}

// Attachment sizes (raw bytes, before base64) and their share of the output.
const (
	minAttachment   = 20 << 10
	maxAttachment   = 200 << 10
	attachmentShare = 0.10
)

// lineOverhead is what an NDJSON line adds around key and value:
// {"key":"…","value":…}\n
const lineOverhead = len(`{"key":"","value":}`) + 1

// baseTime is the start of the generated timeline (2024-01-01T00:00:00Z).
const baseTime = 1704067200

// Each generates the data set that opts selects and calls fn for every record
// in generation order (not sorted by key; keys are unique). fn owns the
// Record it receives. An error from fn stops generation and is returned.
func Each(opts Options, fn func(Record) error) error {
	return run(opts, func(key string, val []byte) error {
		return fn(Record{Key: key, Value: slices.Clone(val)})
	})
}

// Generate writes the data set that opts selects to w as NDJSON, one
// {"key":…,"value":…} object per line, in generation order.
func Generate(w io.Writer, opts Options) (Stats, error) {
	bw := bufio.NewWriterSize(w, 256<<10)
	var st Stats
	var line []byte
	err := run(opts, func(key string, val []byte) error {
		line = appendLine(line[:0], key, val)
		n, err := bw.Write(line)
		st.Bytes += int64(n)
		if err != nil {
			return err
		}
		st.Records++
		return nil
	})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return st, fmt.Errorf("gen: write: %w", err)
	}
	return st, nil
}

// Dataset returns all records of the data set sorted by key (bytewise). It
// holds the whole set in memory; use Each or Generate for large sizes.
func Dataset(opts Options) []Record {
	var recs []Record
	if opts.Size > 0 {
		recs = make([]Record, 0, opts.Size/1000)
	}
	// The callback never fails, so neither does Each.
	_ = Each(opts, func(r Record) error {
		recs = append(recs, r)
		return nil
	})
	SortRecords(recs)
	return recs
}

// SortRecords sorts records by key, bytewise.
func SortRecords(recs []Record) {
	slices.SortFunc(recs, func(a, b Record) int { return strings.Compare(a.Key, b.Key) })
}

// LineSize is the number of bytes r takes as one NDJSON line.
func LineSize(r Record) int64 { return int64(len(r.Key) + len(r.Value) + lineOverhead) }

func appendLine(b []byte, key string, val []byte) []byte {
	b = append(b, `{"key":"`...)
	b = append(b, key...)
	b = append(b, `","value":`...)
	b = append(b, val...)
	return append(b, "}\n"...)
}

// gen holds the state of one generation run: the PRNG, the population sizes
// that references point into and the counters that name the next ids.
type gen struct {
	r      *rand.Rand
	seed   uint64
	photos uint64 // photos made so far; picks each photo's data stream
	now    int64  // seconds; the timeline moves forward as records are made

	nUsers, nGroups, nChannels             int
	nMessages, nTasks, nForms, nAttachment int

	key, val []byte
}

// newGen seeds a generator; stream separates the data set's own generator
// from those of the edit scenarios, so that their text and photos differ
// even for equal seeds.
func newGen(seed int64, stream uint64) *gen {
	return &gen{
		r:    rand.New(rand.NewPCG(uint64(seed), stream)),
		seed: uint64(seed) ^ stream,
		now:  baseTime,
	}
}

// population sizes for a data set of the given size: about 2% of bytes are
// users, groups and channels, as in an org where one user sees its
// colleagues.
func population(size int64) (users, groups, channels int) {
	users = int(max(3, min(size/40_000, 200_000)))
	return users, users/8 + 1, users/4 + 2
}

// run drives generation. emit gets buffers that are reused after it returns.
func run(opts Options, emit func(key string, val []byte) error) error {
	size := opts.Size
	if size <= 0 {
		return nil
	}
	g := newGen(opts.Seed, 0x6a09e667f3bcc908)
	g.nUsers, g.nGroups, g.nChannels = population(size)
	plan := attachmentPlan(opts.Seed, size)

	var total int64
	var stop bool
	// put emits one record unless it would overshoot the target by more than
	// stopping short would undershoot it.
	put := func(key, val []byte) error {
		line := int64(len(key) + len(val) + lineOverhead)
		if total > 0 && total+line > size && total+line-size > size-total {
			stop = true
			return nil
		}
		total += line
		if total >= size {
			stop = true
		}
		return emit(string(key), val)
	}

	for i := 1; i <= g.nUsers && !stop; i++ {
		if err := put(g.user(i)); err != nil {
			return err
		}
	}
	for i := 1; i <= g.nGroups && !stop; i++ {
		if err := put(g.group(i)); err != nil {
			return err
		}
	}
	for i := 1; i <= g.nChannels && !stop; i++ {
		if err := put(g.channel(i)); err != nil {
			return err
		}
	}
	next := 0
	for !stop {
		var k, v []byte
		if next < len(plan) && total >= plan[next].at {
			g.nAttachment++
			k, v = g.attachment(g.nAttachment, plan[next].raw)
			next++
		} else {
			switch p := g.r.IntN(100); {
			case p < 58:
				g.nMessages++
				k, v = g.message(g.nMessages)
			case p < 85:
				g.nTasks++
				k, v = g.task(g.nTasks)
			default:
				g.nForms++
				k, v = g.form(g.nForms)
			}
		}
		if err := put(k, v); err != nil {
			return err
		}
	}
	return nil
}

type plannedAttachment struct {
	at  int64 // emit once this many bytes have been produced
	raw int   // raw size of the data
}

// attachmentPlan spreads attachments worth attachmentShare of size evenly
// over the output. Tiny data sets get one smaller attachment.
func attachmentPlan(seed, size int64) []plannedAttachment {
	r := rand.New(rand.NewPCG(uint64(seed), 0xbb67ae8584caa73b))
	const meta = 300 // approximate JSON around the base64 data
	budget := int64(float64(size) * attachmentShare)
	var raws []int
	for budget > meta+base64Len(1<<10) {
		raw := minAttachment + r.IntN(maxAttachment-minAttachment+1)
		if fit := int((budget - meta) / 4 * 3); raw > fit {
			raw = fit
		}
		if raw < minAttachment && len(raws) > 0 {
			break
		}
		raws = append(raws, raw)
		budget -= meta + base64Len(raw)
	}
	plan := make([]plannedAttachment, len(raws))
	for i, raw := range raws {
		// Slot i covers [i, i+1)·size/n; jitter within its middle half.
		slot := float64(size) / float64(len(raws))
		at := slot * (float64(i) + 0.25 + 0.5*r.Float64())
		plan[i] = plannedAttachment{at: int64(at), raw: raw}
	}
	return plan
}

func base64Len(raw int) int64 { return int64(base64.StdEncoding.EncodedLen(raw)) }

// ---- building blocks ----

// word picks from the vocabulary with a skew towards its head, roughly like
// word frequencies in real text.
func (g *gen) word() string {
	if g.r.IntN(4) == 0 {
		return words[g.r.IntN(len(words))]
	}
	return words[g.r.IntN(g.r.IntN(len(words))+1)]
}

// appendText appends n words as sentences: capitalised, with the odd comma.
// It is the hot loop of generation, so one PRNG draw serves each word: bits
// 34-63 pick a word, 32-33 choose a uniform or a skewed pick (as in word),
// 0-15 skew it, 16-23 end the sentence and 24-31 place a comma.
func (g *gen) appendText(b []byte, n int) []byte {
	inSentence := 0
	for i := 0; i < n; i++ {
		x := g.r.Uint64()
		w := (x >> 34) * uint64(len(words)) >> 30
		if (x>>32)&3 != 0 {
			w = (x & 0xffff) * (w + 1) >> 16
		}
		if inSentence == 0 {
			b = appendTitle(b, words[w])
		} else {
			b = append(b, words[w]...)
		}
		inSentence++
		switch {
		case i == n-1:
			b = append(b, g.punct()...)
		case inSentence >= 3 && (x>>16)&0xff < 256/9:
			b = append(b, g.punct()...)
			b = append(b, ' ')
			inSentence = 0
		case inSentence >= 2 && (x>>24)&0xff < 256/14:
			b = append(b, ", "...)
		default:
			b = append(b, ' ')
		}
	}
	return b
}

func (g *gen) punct() string {
	switch g.r.IntN(20) {
	case 0, 1:
		return "?"
	case 2:
		return "!"
	default:
		return "."
	}
}

// textLen draws a word count with a long tail: mostly short, sometimes long.
func (g *gen) textLen(lo, typical, hi int) int {
	n := lo + g.r.IntN(typical-lo+1)
	if g.r.IntN(8) == 0 {
		n += g.r.IntN(hi - typical + 1)
	}
	return n
}

func appendStr(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendInt(b []byte, n int) []byte { return strconv.AppendInt(b, int64(n), 10) }

func appendBool(b []byte, v bool) []byte { return strconv.AppendBool(b, v) }

// appendFloat writes the shortest form, the one encoding/json writes too.
func appendFloat(b []byte, f float64) []byte { return strconv.AppendFloat(b, f, 'f', -1, 64) }

// appendID appends collection/<letter><7 digits>, e.g. tasks/t0000042.
func appendID(b []byte, coll string, letter byte, id int) []byte {
	b = append(b, coll...)
	b = append(b, '/', letter)
	var d [20]byte
	s := strconv.AppendInt(d[:0], int64(id), 10)
	for i := len(s); i < 7; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

func appendRef(b []byte, coll string, letter byte, id int) []byte {
	b = append(b, '"')
	b = appendID(b, coll, letter, id)
	return append(b, '"')
}

func (g *gen) userRef(b []byte) []byte {
	return appendRef(b, "users", 'u', 1+g.r.IntN(max(g.nUsers, 1)))
}

// appendUserList appends a JSON array of n distinct user references.
func (g *gen) appendUserList(b []byte, n int) []byte {
	n = min(n, g.nUsers)
	b = append(b, '[')
	start := 1 + g.r.IntN(max(g.nUsers, 1))
	stride := 1 + g.r.IntN(3)
	if n*stride > g.nUsers {
		stride = 1
	}
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendRef(b, "users", 'u', 1+(start-1+i*stride)%g.nUsers)
	}
	return append(b, ']')
}

// appendTime appends an RFC 3339 time in UTC.
func appendTime(b []byte, sec int64) []byte {
	b = append(b, '"')
	b = time.Unix(sec, 0).UTC().AppendFormat(b, time.RFC3339)
	return append(b, '"')
}

func appendDate(b []byte, sec int64) []byte {
	b = append(b, '"')
	b = time.Unix(sec, 0).UTC().AppendFormat(b, time.DateOnly)
	return append(b, '"')
}

// tick moves the clock forward by up to max seconds and returns it.
func (g *gen) tick(max int) int64 {
	g.now += int64(1 + g.r.IntN(max))
	return g.now
}

func pick[T any](g *gen, s []T) T { return s[g.r.IntN(len(s))] }
