package gen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// The CRM family is a second, independently shaped data set, so that the
// bench does not only measure what this package's work-management data
// happens to be good at: the records of a sales CRM with random ids
// (related records scatter across the key space instead of sitting in id
// order), camelCase fields, arrays of objects with money amounts, long
// free-text notes, and words made of syllables rather than drawn from a
// vocabulary. Its scenarios include a schema migration: one field renamed
// in a tenth of the records.

// crmGen generates CRM records.
type crmGen struct {
	r   *rand.Rand
	now int64
	ids map[string]bool
}

func newCRMGen(seed int64, stream uint64) *crmGen {
	return &crmGen{r: rand.New(rand.NewPCG(uint64(seed)^0x3c6ef372fe94f82b, stream)), now: baseTime, ids: map[string]bool{}}
}

var crmSyllables = strings.Fields(`ka lo mi ne tra vel or sen da qui bra ton mar pel ix
	ste an dor fu gle ri sto pra mun ce vo lan teg rou bi nat esc hol zu fer ap ont
	gri sal tem cho wex ly dra mo pen urb kel sa ter via hu go fin lex`)

// word makes a pseudo-word of one to four syllables.
func (g *crmGen) word() string {
	n := 1 + g.r.IntN(2) + g.r.IntN(2)*g.r.IntN(2)
	var b strings.Builder
	for range n {
		b.WriteString(crmSyllables[int(math.Sqrt(float64(g.r.IntN(len(crmSyllables)*len(crmSyllables)))))])
	}
	return b.String()
}

// text makes n words of sentences.
func (g *crmGen) text(n int) string {
	var b strings.Builder
	for i := range n {
		w := g.word()
		if i == 0 || g.r.IntN(11) == 0 {
			if i > 0 {
				b.WriteString(". ")
			}
			w = strings.ToUpper(w[:1]) + w[1:]
		} else {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	b.WriteByte('.')
	return b.String()
}

const crmAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// id returns a fresh random id of a collection: "deals/7k2m9x0q4t".
func (g *crmGen) id(coll string) string {
	for {
		b := []byte(coll + "/")
		for range 10 {
			b = append(b, crmAlphabet[g.r.IntN(len(crmAlphabet))])
		}
		if k := string(b); !g.ids[k] {
			g.ids[k] = true
			return k
		}
	}
}

func (g *crmGen) time() string {
	g.now += int64(g.r.IntN(600))
	y, mo, d, h, mi, s := civil(g.now)
	return fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, mo, d, h, mi, s, g.r.IntN(1000))
}

// civil converts Unix seconds to a UTC date and time.
func civil(t int64) (y, mo, d, h, mi, s int) {
	days, sec := t/86400, int(t%86400)
	h, mi, s = sec/3600, sec/60%60, sec%60
	// Howard Hinnant's days-to-civil.
	z := days + 719468
	era := z / 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	mo = int(mp + 3)
	if mo > 12 {
		mo -= 12
	}
	y = int(yoe + era*400)
	if mo <= 2 {
		y++
	}
	return
}

var (
	crmStages     = []string{"prospecting", "qualification", "proposal", "negotiation", "closedWon", "closedLost"}
	crmIndustries = []string{"agriculture", "construction", "education", "energy", "finance", "healthcare", "logistics", "retail", "software"}
	crmKinds      = []string{"call", "email", "meeting", "visit", "demo"}
)

func (g *crmGen) account(key string) map[string]any {
	return map[string]any{
		"name": g.text(1 + g.r.IntN(3)), "industry": crmIndustries[g.r.IntN(len(crmIndustries))],
		"employees": 5 + g.r.IntN(5000), "website": "https://" + g.word() + ".example",
		"address":   map[string]any{"street": fmt.Sprintf("%d %s", 1+g.r.IntN(999), g.text(2)), "city": g.text(1), "postcode": fmt.Sprintf("%05d", g.r.IntN(100000)), "country": []string{"DE", "FR", "NL", "SE", "US"}[g.r.IntN(5)]},
		"createdAt": g.time(), "ownerId": g.ref("users"), "tier": []string{"gold", "silver", "bronze"}[g.r.IntN(3)],
	}
}

func (g *crmGen) contact(key string) map[string]any {
	first, last := g.word(), g.word()
	emails := []any{}
	for range 1 + g.r.IntN(3) {
		emails = append(emails, map[string]any{"address": first + "." + last + "@" + g.word() + ".example", "primary": len(emails) == 0})
	}
	return map[string]any{
		"firstName": first, "lastName": last, "emails": emails,
		"phone":     fmt.Sprintf("+%d %03d %07d", 1+g.r.IntN(98), g.r.IntN(1000), g.r.IntN(10000000)),
		"accountId": g.ref("accounts"), "title": g.text(2), "createdAt": g.time(), "optIn": g.r.IntN(2) == 0,
		"bio": g.text(20 + g.r.IntN(120)),
	}
}

func (g *crmGen) deal(key string) map[string]any {
	items := []any{}
	total := 0.0
	for range 1 + g.r.IntN(6) {
		price := float64(g.r.IntN(500000)) / 100
		qty := 1 + g.r.IntN(20)
		total += price * float64(qty)
		items = append(items, map[string]any{"sku": strings.ToUpper(g.word()) + fmt.Sprint(g.r.IntN(1000)), "unitPrice": price, "quantity": qty, "description": g.text(4 + g.r.IntN(20))})
	}
	return map[string]any{
		"title": g.text(3 + g.r.IntN(5)), "stage": crmStages[g.r.IntN(len(crmStages))], "lineItems": items,
		"amount": math.Round(total*100) / 100, "currency": "EUR", "probability": g.r.IntN(101),
		"accountId": g.ref("accounts"), "contactIds": []any{g.ref("contacts"), g.ref("contacts")},
		"closeDate": g.time()[:10], "createdAt": g.time(), "ownerId": g.ref("users"),
	}
}

func (g *crmGen) note(key string) map[string]any {
	paras := []any{}
	for range 1 + g.r.IntN(4) {
		paras = append(paras, g.text(40+g.r.IntN(300)))
	}
	return map[string]any{"body": paras, "subjectId": g.ref("deals"), "authorId": g.ref("users"), "createdAt": g.time(), "pinned": g.r.IntN(9) == 0}
}

func (g *crmGen) activity(key string) map[string]any {
	return map[string]any{
		"kind": crmKinds[g.r.IntN(len(crmKinds))], "summary": g.text(5 + g.r.IntN(30)), "durationMinutes": 5 * (1 + g.r.IntN(24)),
		"dealId": g.ref("deals"), "participants": []any{g.ref("contacts"), g.ref("users")}, "at": g.time(), "outcome": g.text(3 + g.r.IntN(12)),
	}
}

// ref names a record of another collection (which need not exist: the
// CRM's references are as loose as exports from real ones).
func (g *crmGen) ref(coll string) string {
	b := []byte(coll + "/")
	for range 10 {
		b = append(b, crmAlphabet[g.r.IntN(len(crmAlphabet))])
	}
	return string(b)
}

// make builds a new record of a collection.
func (g *crmGen) make(coll string) Record {
	key := g.id(coll)
	var v map[string]any
	switch coll {
	case "accounts":
		v = g.account(key)
	case "contacts":
		v = g.contact(key)
	case "deals":
		v = g.deal(key)
	case "notes":
		v = g.note(key)
	default:
		v = g.activity(key)
	}
	return Record{Key: key, Value: crmCanonical(v)}
}

// crmCanonical encodes a value as the snapshot layer stores it: compact, keys
// sorted, no HTML escaping.
func crmCanonical(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic("gen: encode CRM value: " + err.Error())
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

var crmMix = []struct {
	coll  string
	share int
}{{"accounts", 8}, {"contacts", 25}, {"deals", 20}, {"notes", 17}, {"activities", 30}}

func (g *crmGen) collection() string {
	p := g.r.IntN(100)
	for _, m := range crmMix {
		if p < m.share {
			return m.coll
		}
		p -= m.share
	}
	return "activities"
}

// CRMDataset returns a CRM data set of about opts.Size bytes of NDJSON,
// sorted by key. The same Options always give the same records.
func CRMDataset(opts Options) []Record {
	g := newCRMGen(opts.Seed, 1)
	var recs []Record
	var total int64
	for total < opts.Size {
		r := g.make(g.collection())
		total += LineSize(r)
		recs = append(recs, r)
	}
	SortRecords(recs)
	return recs
}

// CRMScenarios lists the edits the bench measures on CRM data: the same
// kinds as Scenarios (the attachment left out: the CRM has none), plus a
// schema migration.
func CRMScenarios(seed int64) []Scenario {
	return []Scenario{
		{"edit-one-field", func(r []Record) []Record { return crmEdit(r, 1, seed) }},
		{"edit-100-scattered", func(r []Record) []Record { return crmEdit(r, 100, seed) }},
		{"insert-500", func(r []Record) []Record { return crmInsert(r, 500, seed) }},
		{"delete-1000", func(r []Record) []Record { return DeleteRandom(r, 1000, seed) }},
		{"rename-field-10pct", func(r []Record) []Record { return crmRename(r, 0.10, seed) }},
		{"change-10pct", func(r []Record) []Record {
			return crmEdit(r, int(math.Round(0.10*float64(len(r)))), seed)
		}},
	}
}

// crmEditField is the field an edit changes, per collection.
var crmEditField = map[string]string{"accounts": "tier", "contacts": "title", "deals": "stage", "notes": "pinned", "activities": "outcome"}

// crmRenames is the migration: the field each collection renames.
var crmRenames = map[string][2]string{
	"accounts": {"industry", "sector"}, "contacts": {"phone", "phoneNumber"}, "deals": {"stage", "pipelineStage"},
	"notes": {"body", "paragraphs"}, "activities": {"kind", "activityType"},
}

// crmEdit changes one field in n random records.
func crmEdit(recs []Record, n int, seed int64) []Record {
	g := newCRMGen(seed, 2)
	out := slices.Clone(recs)
	for _, i := range crmSample(g, len(recs), n) {
		coll, _, _ := strings.Cut(out[i].Key, "/")
		out[i].Value = g.editValue(out[i].Value, crmEditField[coll])
	}
	return out
}

func (g *crmGen) editValue(val []byte, field string) []byte {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(val))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m == nil {
		return crmCanonical(map[string]any{"edited": g.text(3)})
	}
	switch old := m[field].(type) {
	case bool:
		m[field] = !old
	case string:
		if slices.Contains(crmStages, old) {
			for m[field] == old {
				m[field] = crmStages[g.r.IntN(len(crmStages))]
			}
		} else {
			m[field] = old + " " + g.word()
		}
	default:
		m[field] = g.text(2)
	}
	return crmCanonical(m)
}

// crmRename renames its collection's field in a fraction f of the records.
func crmRename(recs []Record, f float64, seed int64) []Record {
	g := newCRMGen(seed, 3)
	out := slices.Clone(recs)
	for _, i := range crmSample(g, len(recs), int(math.Round(f*float64(len(recs))))) {
		coll, _, _ := strings.Cut(out[i].Key, "/")
		rn := crmRenames[coll]
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(out[i].Value))
		dec.UseNumber()
		if dec.Decode(&m) != nil || m == nil || m[rn[0]] == nil {
			continue
		}
		m[rn[1]] = m[rn[0]]
		delete(m, rn[0])
		out[i].Value = crmCanonical(m)
	}
	return out
}

// crmInsert adds n new records with fresh random ids.
func crmInsert(recs []Record, n int, seed int64) []Record {
	g := newCRMGen(seed, 4)
	for _, r := range recs {
		g.ids[r.Key] = true
	}
	g.now += 2 * 365 * 86400
	added := make([]Record, 0, n)
	for range n {
		added = append(added, g.make(g.collection()))
	}
	SortRecords(added)
	return merge(recs, added)
}

func crmSample(g *crmGen, n, k int) []int {
	gg := &gen{r: g.r}
	return gg.sample(n, k)
}
