package gen

import (
	"encoding/base64"
	"encoding/binary"
	"io"
	"math/rand/v2"
)

// Each builder returns the key and value in g's reused buffers; values are
// written field by field in sorted key order, so they are canonical JSON.

func (g *gen) user(id int) (key, val []byte) {
	g.key = appendID(g.key[:0], "users", 'u', id)
	first, last := pick(g, firstNames[:]), pick(g, lastNames[:])
	b := append(g.val[:0], `{"active":`...)
	b = appendBool(b, g.r.IntN(20) != 0)
	b = append(b, `,"bio":"`...)
	b = g.appendText(b, g.textLen(4, 20, 60))
	b = append(b, `","created_at":`...)
	b = appendTime(b, baseTime-int64(g.r.IntN(3*365*86400)))
	b = append(b, `,"department":`...)
	b = appendStr(b, pick(g, departments[:]))
	b = append(b, `,"email":"`...)
	b = appendASCIILower(b, first)
	b = append(b, '.')
	b = appendASCIILower(b, last)
	b = append(b, '.')
	b = appendInt(b, id)
	b = append(b, `@example.com","groups":[`...)
	for i, n := 0, 1+g.r.IntN(4); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendRef(b, "groups", 'g', 1+g.r.IntN(g.nGroups))
	}
	b = append(b, `],"locale":`...)
	b = appendStr(b, pick(g, locales[:]))
	b = append(b, `,"name":"`...)
	b = append(b, first...)
	b = append(b, ' ')
	b = append(b, last...)
	b = append(b, `","role":`...)
	b = appendStr(b, pick(g, roles[:]))
	b = append(b, `,"status_text":"`...)
	b = g.appendText(b, g.r.IntN(8))
	b = append(b, `","timezone":`...)
	b = appendStr(b, pick(g, timezones[:]))
	b = append(b, '}')
	g.val = b
	return g.key, g.val
}

// appendASCIILower keeps the ASCII letters of s, lower-cased, for e-mail
// addresses.
func appendASCIILower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z':
			b = append(b, c+'a'-'A')
		case 'a' <= c && c <= 'z':
			b = append(b, c)
		}
	}
	return b
}

func (g *gen) group(id int) (key, val []byte) {
	g.key = appendID(g.key[:0], "groups", 'g', id)
	b := append(g.val[:0], `{"created_at":`...)
	b = appendTime(b, baseTime-int64(g.r.IntN(2*365*86400)))
	b = append(b, `,"description":"`...)
	b = g.appendText(b, g.textLen(5, 25, 80))
	b = append(b, `","members":`...)
	b = g.appendUserList(b, 3+g.r.IntN(40))
	b = append(b, `,"name":"`...)
	b = appendTitle(b, g.word())
	b = append(b, ' ')
	b = appendTitle(b, g.word())
	b = append(b, `","owner":`...)
	b = g.userRef(b)
	b = append(b, `,"visibility":`...)
	b = appendStr(b, pick(g, visibility[:]))
	b = append(b, '}')
	g.val = b
	return g.key, g.val
}

func appendTitle(b []byte, w string) []byte {
	if c := w[0]; 'a' <= c && c <= 'z' {
		return append(append(b, c-('a'-'A')), w[1:]...)
	}
	return append(b, w...)
}

func (g *gen) channel(id int) (key, val []byte) {
	g.key = appendID(g.key[:0], "channels", 'c', id)
	b := append(g.val[:0], `{"archived":`...)
	b = appendBool(b, g.r.IntN(10) == 0)
	b = append(b, `,"created_at":`...)
	b = appendTime(b, baseTime-int64(g.r.IntN(365*86400)))
	b = append(b, `,"group":`...)
	b = appendRef(b, "groups", 'g', 1+g.r.IntN(g.nGroups))
	b = append(b, `,"members":`...)
	b = g.appendUserList(b, 2+g.r.IntN(30))
	b = append(b, `,"name":"`...)
	b = append(b, g.word()...)
	b = append(b, '-')
	b = append(b, g.word()...)
	b = append(b, `","topic":"`...)
	b = g.appendText(b, g.textLen(3, 15, 40))
	b = append(b, `"}`...)
	g.val = b
	return g.key, g.val
}

func (g *gen) message(id int) (key, val []byte) {
	g.key = appendID(g.key[:0], "messages", 'm', id)
	b := append(g.val[:0], `{"author":`...)
	b = g.userRef(b)
	b = append(b, `,"channel":`...)
	b = appendRef(b, "channels", 'c', 1+g.r.IntN(g.nChannels))
	b = append(b, `,"created_at":`...)
	b = appendTime(b, g.tick(600))
	if g.r.IntN(5) == 0 {
		b = append(b, `,"mentions":`...)
		b = g.appendUserList(b, 1+g.r.IntN(3))
	}
	b = append(b, `,"reactions":[`...)
	for i, n := 0, max(0, g.r.IntN(6)-2); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		users := 1 + g.r.IntN(4)
		b = append(b, `{"count":`...)
		b = appendInt(b, users)
		b = append(b, `,"emoji":`...)
		b = appendStr(b, emojis[(g.r.IntN(len(emojis))+i)%len(emojis)])
		b = append(b, `,"users":`...)
		b = g.appendUserList(b, users)
		b = append(b, '}')
	}
	b = append(b, `],"text":"`...)
	b = g.appendText(b, g.textLen(2, 30, 250))
	b = append(b, '"')
	if id > 1 && g.r.IntN(4) == 0 {
		b = append(b, `,"thread":`...)
		b = appendRef(b, "messages", 'm', max(1, id-1-g.r.IntN(min(id-1, 200))))
	}
	b = append(b, '}')
	g.val = b
	return g.key, g.val
}

func (g *gen) task(id int) (key, val []byte) {
	g.key = appendID(g.key[:0], "tasks", 't', id)
	created := g.tick(900)
	b := append(g.val[:0], `{"assignee":`...)
	b = g.userRef(b)
	b = append(b, `,"checklist":[`...)
	for i, n := 0, g.r.IntN(9); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"done":`...)
		b = appendBool(b, g.r.IntN(2) == 0)
		b = append(b, `,"text":"`...)
		b = g.appendText(b, 2+g.r.IntN(8))
		b = append(b, `"}`...)
	}
	b = append(b, `],"created_at":`...)
	b = appendTime(b, created)
	b = append(b, `,"custom":`...)
	b = g.appendCustom(b, created)
	b = append(b, `,"description":"`...)
	b = g.appendText(b, g.textLen(0, 40, 200))
	b = append(b, `","due":`...)
	b = appendDate(b, created+int64(g.r.IntN(30*86400)))
	b = append(b, `,"priority":`...)
	b = appendStr(b, pick(g, priorities[:]))
	b = append(b, `,"project":`...)
	b = appendStr(b, pick(g, projects[:]))
	b = append(b, `,"status":`...)
	b = appendStr(b, pick(g, statuses[:]))
	b = append(b, `,"tags":[`...)
	for i, n, t := 0, g.r.IntN(4), g.r.IntN(len(tagWords)); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStr(b, tagWords[(t+i)%len(tagWords)])
	}
	b = append(b, `],"title":"`...)
	b = g.appendText(b, 3+g.r.IntN(8))
	b = append(b, `","updated_at":`...)
	b = appendTime(b, created+int64(g.r.IntN(7*86400)))
	b = append(b, `,"watchers":`...)
	b = g.appendUserList(b, g.r.IntN(5))
	b = append(b, '}')
	g.val = b
	return g.key, g.val
}

// appendCustom writes the org-defined custom fields of a task: a varying
// subset, some nested.
func (g *gen) appendCustom(b []byte, created int64) []byte {
	b = append(b, '{')
	sep := func() {
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
	}
	if g.r.IntN(3) == 0 {
		sep()
		b = append(b, `"approval_required":`...)
		b = appendBool(b, g.r.IntN(2) == 0)
	}
	if g.r.IntN(2) == 0 {
		sep()
		b = append(b, `"cost_center":"CC-`...)
		b = appendInt(b, 1000+g.r.IntN(60))
		b = append(b, '"')
	}
	if g.r.IntN(2) == 0 {
		sep()
		b = append(b, `"customer":"`...)
		b = appendTitle(b, g.word())
		b = append(b, ' ')
		b = appendTitle(b, g.word())
		b = append(b, ` Ltd"`...)
	}
	if g.r.IntN(2) == 0 {
		sep()
		b = append(b, `"estimate_hours":`...)
		b = appendFloat(b, float64(1+g.r.IntN(64))/4)
	}
	if g.r.IntN(2) == 0 {
		sep()
		b = append(b, `"location":{"building":"B`...)
		b = appendInt(b, 1+g.r.IntN(12))
		b = append(b, `","floor":`...)
		b = appendInt(b, g.r.IntN(9)-1)
		b = append(b, `,"room":"`...)
		b = appendInt(b, 100+g.r.IntN(400))
		b = append(b, `"}`...)
	}
	if g.r.IntN(3) == 0 {
		sep()
		b = append(b, `"risk_score":`...)
		b = appendInt(b, g.r.IntN(101))
	}
	if g.r.IntN(3) == 0 {
		sep()
		b = append(b, `"sla":{"breach_at":`...)
		b = appendTime(b, created+int64(3600*(4+g.r.IntN(72))))
		b = append(b, `,"level":`...)
		b = appendStr(b, pick(g, []string{"bronze", "silver", "gold"}))
		b = append(b, '}')
	}
	if g.r.IntN(2) == 0 {
		sep()
		b = append(b, `"work_order":"WO-`...)
		b = appendInt(b, 100000+g.r.IntN(900000))
		b = append(b, '"')
	}
	return append(b, '}')
}

func (g *gen) form(id int) (key, val []byte) {
	g.key = appendID(g.key[:0], "forms", 'f', id)
	b := append(g.val[:0], `{"answers":{`...)
	for i, n := 0, 3+g.r.IntN(14); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `"q`...)
		if i < 9 {
			b = append(b, '0')
		}
		b = appendInt(b, i+1)
		b = append(b, `":{"label":"`...)
		b = g.appendText(b, 3+g.r.IntN(7))
		b = append(b, `","type":`...)
		switch g.r.IntN(5) {
		case 0:
			b = append(b, `"text","value":"`...)
			b = g.appendText(b, g.textLen(1, 12, 60))
			b = append(b, '"')
		case 1:
			b = append(b, `"number","value":`...)
			b = appendFloat(b, float64(g.r.IntN(100000))/100)
		case 2:
			b = append(b, `"choice","value":`...)
			b = appendStr(b, pick(g, choices[:]))
		case 3:
			b = append(b, `"checkbox","value":`...)
			b = appendBool(b, g.r.IntN(3) != 0)
		default:
			b = append(b, `"multi","value":[`...)
			for j, m := 0, 1+g.r.IntN(3); j < m; j++ {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendStr(b, choices[(j+id)%len(choices)])
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `},"form":`...)
	b = appendStr(b, pick(g, formNames[:]))
	b = append(b, `,"location":{"lat":`...)
	b = appendFloat(b, float64(g.r.IntN(18000000)-9000000)/100000)
	b = append(b, `,"lng":`...)
	b = appendFloat(b, float64(g.r.IntN(36000000)-18000000)/100000)
	b = append(b, `},"photos":[`...)
	if g.nAttachment > 0 {
		for i, n := 0, g.r.IntN(3); i < n; i++ {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendRef(b, "attachments", 'a', 1+g.r.IntN(g.nAttachment))
		}
	}
	b = append(b, `],"status":`...)
	b = appendStr(b, pick(g, formStates[:]))
	b = append(b, `,"submitted_at":`...)
	b = appendTime(b, g.tick(1200))
	b = append(b, `,"submitted_by":`...)
	b = g.userRef(b)
	if g.nTasks > 0 && g.r.IntN(2) == 0 {
		b = append(b, `,"task":`...)
		b = appendRef(b, "tasks", 't', 1+g.r.IntN(g.nTasks))
	}
	b = append(b, `,"version":`...)
	b = appendInt(b, 1+g.r.IntN(5))
	b = append(b, '}')
	g.val = b
	return g.key, g.val
}

// attachment makes a photo record: metadata plus base64 of raw bytes that,
// like JPEG data, do not compress.
func (g *gen) attachment(id, raw int) (key, val []byte) {
	g.key = appendID(g.key[:0], "attachments", 'a', id)
	b := append(g.val[:0], `{"caption":"`...)
	b = g.appendText(b, g.r.IntN(12))
	b = append(b, `","content_type":"image/jpeg","created_at":`...)
	b = appendTime(b, g.tick(60))
	b = append(b, `,"data":"`...)
	b = g.appendPhoto(b, raw)
	b = append(b, `","filename":"IMG_`...)
	b = appendInt(b, 1000+g.r.IntN(9000))
	b = append(b, `.jpg","height":`...)
	b = appendInt(b, 480+8*g.r.IntN(300))
	b = append(b, `,"parent":`...)
	switch {
	case g.nForms > 0 && g.r.IntN(2) == 0:
		b = appendRef(b, "forms", 'f', 1+g.r.IntN(g.nForms))
	case g.nTasks > 0:
		b = appendRef(b, "tasks", 't', 1+g.r.IntN(g.nTasks))
	default:
		b = append(b, "null"...)
	}
	b = append(b, `,"size":`...)
	b = appendInt(b, raw)
	b = append(b, `,"uploaded_by":`...)
	b = g.userRef(b)
	b = append(b, `,"width":`...)
	b = appendInt(b, 640+8*g.r.IntN(400))
	b = append(b, '}')
	g.val = b
	return g.key, g.val
}

// appendPhoto appends base64 of raw pseudo-random bytes behind a JPEG
// header. Each photo has its own PRNG stream, so its bytes do not depend on
// how much text came before it.
func (g *gen) appendPhoto(b []byte, raw int) []byte {
	g.photos++
	r := rand.NewPCG(g.seed, 0x3c6ef372fe94f82b^g.photos)
	data := make([]byte, raw+8)
	for i := 0; i < raw; i += 8 {
		binary.LittleEndian.PutUint64(data[i:], r.Uint64())
	}
	data = data[:raw]
	copy(data, "\xff\xd8\xff\xe0\x00\x10JFIF\x00")
	return base64.StdEncoding.AppendEncode(b, data)
}

// Source yields records in order through Next, the shape of
// snapshot.RecordSource, so sorted generated data can be built directly.
type Source struct {
	recs []Record
	i    int
}

// NewSource returns a Source over recs (sorted by key for a build).
func NewSource(recs []Record) *Source { return &Source{recs: recs} }

// Next returns the next record, or io.EOF after the last.
func (s *Source) Next() (string, []byte, error) {
	if s.i >= len(s.recs) {
		return "", nil, io.EOF
	}
	s.i++
	return s.recs[s.i-1].Key, s.recs[s.i-1].Value, nil
}
