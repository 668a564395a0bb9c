package gen

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Scenario is a named edit of a data set, as the bench command runs them.
// Apply follows the rules of the edit functions below: it takes records
// sorted by key and returns a new sorted slice, leaving its input alone.
type Scenario struct {
	Name  string
	Apply func([]Record) []Record
}

// Scenarios lists the edits that the bench command measures: one field of
// one task; 100 scattered record edits; 500 records inserted between
// existing ones; 1,000 records deleted; one new 2 MiB attachment; 10% of the
// records changed.
func Scenarios(seed int64) []Scenario {
	return []Scenario{
		{"edit-one-field", func(r []Record) []Record { return EditOneField(r, seed) }},
		{"edit-100-scattered", func(r []Record) []Record { return EditScattered(r, 100, seed) }},
		{"insert-500-interleaved", func(r []Record) []Record { return InsertInterleaved(r, 500, seed) }},
		{"delete-1000", func(r []Record) []Record { return DeleteRandom(r, 1000, seed) }},
		{"add-2MiB-attachment", func(r []Record) []Record { return AddAttachment(r, 2<<20, seed) }},
		{"change-10pct", func(r []Record) []Record { return ChangeFraction(r, 0.10, seed) }},
	}
}

// The edit functions below are pure: given records sorted by key and a
// seed, they return a new sorted slice and never modify the input slice or
// its Values. Records they leave alone share their Value with the input, so
// treat all Values as read-only.

// scenarioStream keeps a scenario's PRNG apart from the data set's.
const scenarioStream = 0xa54ff53a5f1d36f1

// EditOneField changes one field of one task record (of any record if there
// are no tasks).
func EditOneField(recs []Record, seed int64) []Record {
	if len(recs) == 0 {
		return slices.Clone(recs)
	}
	g := newGen(seed, scenarioStream)
	i := g.r.IntN(len(recs))
	if lo, hi := prefixRange(recs, "tasks/"); hi > lo {
		i = lo + g.r.IntN(hi-lo)
	}
	out := slices.Clone(recs)
	out[i].Value = g.editValue(out[i].Key, out[i].Value)
	return out
}

// EditScattered changes one field in each of n distinct random records (all
// records if n exceeds their number).
func EditScattered(recs []Record, n int, seed int64) []Record {
	g := newGen(seed, scenarioStream)
	out := slices.Clone(recs)
	for _, i := range g.sample(len(recs), n) {
		out[i].Value = g.editValue(out[i].Key, out[i].Value)
	}
	return out
}

// ChangeFraction changes one field in a fraction f (0..1) of the records,
// chosen at random.
func ChangeFraction(recs []Record, f float64, seed int64) []Record {
	n := int(math.Round(f * float64(len(recs))))
	return EditScattered(recs, n, seed)
}

// DeleteRandom removes n distinct random records (all if n exceeds their
// number).
func DeleteRandom(recs []Record, n int, seed int64) []Record {
	g := newGen(seed, scenarioStream)
	drop := g.sample(len(recs), n)
	out := make([]Record, 0, len(recs)-len(drop))
	prev := 0
	for _, i := range drop {
		out = append(out, recs[prev:i]...)
		prev = i + 1
	}
	return append(out, recs[prev:]...)
}

// InsertInterleaved adds n new records whose keys fall between existing
// ones: a copy of a random existing key with a letter appended
// (tasks/t0000042 → tasks/t0000042a), valued like a record of that
// collection. Attachments are never the base, so the new records are small.
func InsertInterleaved(recs []Record, n int, seed int64) []Record {
	g := newGen(seed, scenarioStream)
	g.population(recs)
	var bases []int
	for i, r := range recs {
		if !strings.HasPrefix(r.Key, "attachments/") && len(r.Key) < 500 {
			bases = append(bases, i)
		}
	}
	taken := make(map[string]bool, n)
	exists := func(k string) bool {
		if taken[k] {
			return true
		}
		_, found := slices.BinarySearchFunc(recs, k, func(r Record, k string) int { return strings.Compare(r.Key, k) })
		return found
	}
	added := make([]Record, 0, max(n, 0))
	for i := 0; i < n; i++ {
		base := "tasks/t0000000"
		if len(bases) > 0 {
			base = recs[bases[g.r.IntN(len(bases))]].Key
		}
		key := nextFreeKey(base, exists)
		taken[key] = true
		coll, _, _ := strings.Cut(key, "/")
		_, val := g.fresh(coll, i+1)
		added = append(added, Record{Key: key, Value: slices.Clone(val)})
	}
	SortRecords(added)
	return merge(recs, added)
}

// nextFreeKey returns base+"a", or the next free suffix after it: "b" …
// "z", then "za", "zb" …
func nextFreeKey(base string, exists func(string) bool) string {
	suffix := []byte{'a'}
	for {
		k := base + string(suffix)
		if !exists(k) {
			return k
		}
		if last := len(suffix) - 1; suffix[last] < 'z' {
			suffix[last]++
		} else {
			suffix = append(suffix, 'a')
		}
	}
}

// AddAttachment adds one attachment record holding size raw bytes of photo
// data, with the next free attachment id.
func AddAttachment(recs []Record, size int, seed int64) []Record {
	g := newGen(seed, scenarioStream)
	g.population(recs)
	id := 1
	if lo, hi := prefixRange(recs, "attachments/a"); hi > lo {
		if n, err := strconv.Atoi(recs[hi-1].Key[len("attachments/a"):]); err == nil {
			id = n + 1
		}
	}
	for {
		key, val := g.attachment(id, max(size, 0))
		if _, found := slices.BinarySearchFunc(recs, string(key), func(r Record, k string) int { return strings.Compare(r.Key, k) }); !found {
			return merge(recs, []Record{{Key: string(key), Value: slices.Clone(val)}})
		}
		id++
	}
}

// merge merges two sorted record slices with disjoint keys into a new one.
func merge(a, b []Record) []Record {
	out := make([]Record, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].Key < b[0].Key {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}

// prefixRange returns the index range of the sorted records whose key starts
// with prefix.
func prefixRange(recs []Record, prefix string) (lo, hi int) {
	lo, _ = slices.BinarySearchFunc(recs, prefix, func(r Record, p string) int { return strings.Compare(r.Key, p) })
	hi = lo
	for hi < len(recs) && strings.HasPrefix(recs[hi].Key, prefix) {
		hi++
	}
	return lo, hi
}

// population sets the counts that references point into from an existing
// data set, so new records refer to users, channels … that exist.
func (g *gen) population(recs []Record) {
	count := func(p string) int { lo, hi := prefixRange(recs, p); return hi - lo }
	g.nUsers = max(1, count("users/"))
	g.nGroups = max(1, count("groups/"))
	g.nChannels = max(1, count("channels/"))
	g.nMessages = count("messages/")
	g.nTasks = count("tasks/")
	g.nForms = count("forms/")
	g.nAttachment = count("attachments/")
	g.now += 2 * 365 * 86400 // edits happen after the data set was made
}

// fresh builds a new value for a collection; unknown collections get tasks.
func (g *gen) fresh(coll string, id int) (key, val []byte) {
	switch coll {
	case "users":
		return g.user(id)
	case "groups":
		return g.group(id)
	case "channels":
		return g.channel(id)
	case "messages":
		return g.message(id)
	case "forms":
		return g.form(id)
	default:
		return g.task(id)
	}
}

// sample returns min(k, n) distinct indices in [0, n), ascending.
func (g *gen) sample(n, k int) []int {
	k = max(0, min(k, n))
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	for i := 0; i < k; i++ { // partial Fisher-Yates
		j := i + g.r.IntN(n-i)
		idx[i], idx[j] = idx[j], idx[i]
	}
	idx = idx[:k]
	slices.Sort(idx)
	return idx
}

// editField names the field an edit changes in each collection: a state
// change where the record has one, otherwise a small text edit.
var editField = map[string]string{
	"tasks":       "status",
	"forms":       "status",
	"messages":    "text",
	"users":       "status_text",
	"groups":      "description",
	"channels":    "topic",
	"attachments": "caption",
}

// editValue returns a copy of val with exactly one top-level field changed.
// A value that is not a JSON object is replaced by an object.
func (g *gen) editValue(key string, val []byte) []byte {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(val))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m == nil {
		return []byte(`{"edited":` + strconv.Quote(g.newText(nil)) + `}`)
	}
	coll, _, _ := strings.Cut(key, "/")
	field, ok := editField[coll]
	if !ok {
		field = "edited"
	}
	old, _ := m[field].(string)
	switch {
	case coll == "tasks" && field == "status":
		m[field] = g.otherThan(statuses[:], old)
	case coll == "forms" && field == "status":
		m[field] = g.otherThan(formStates[:], old)
	default:
		m[field] = g.editText(old)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		// Cannot happen: m came from valid JSON.
		panic("gen: re-encode edited value: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func (g *gen) otherThan(choices []string, old string) string {
	for {
		if c := pick(g, choices); c != old {
			return c
		}
	}
}

// editText replaces one word of s (or writes a short text if s is empty),
// the way a user fixes a typo or a detail.
func (g *gen) editText(s string) string {
	if s == "" {
		return g.newText(nil)
	}
	toks := strings.Split(s, " ")
	i := g.r.IntN(len(toks))
	tok := toks[i]
	end := len(tok)
	for end > 0 && strings.ContainsRune(".,?!", rune(tok[end-1])) {
		end--
	}
	for {
		if w := g.word(); w != tok[:end] {
			toks[i] = w + tok[end:]
			return strings.Join(toks, " ")
		}
	}
}

func (g *gen) newText(b []byte) string { return string(g.appendText(b, 3+g.r.IntN(6))) }
