package diff

import (
	"reflect"
	"slices"
)

// doc is a JSON value as snapshot.DecodeJSON produces it, or an absent one
// (a missing record, a missing field). Absent differs from JSON null.
type doc struct {
	v  any
	ok bool
}

var absent = doc{}

func present(v any) doc { return doc{v: v, ok: true} }

func (d doc) equal(o doc) bool {
	return d.ok == o.ok && (!d.ok || reflect.DeepEqual(d.v, o.v))
}

func (d doc) object() (map[string]any, bool) {
	if !d.ok {
		return nil, false
	}
	m, ok := d.v.(map[string]any)
	return m, ok
}

func (d doc) field(k string) doc {
	m, _ := d.object()
	v, ok := m[k]
	return doc{v: v, ok: ok}
}

// merge3 merges the client's and the server's changes to one value made
// since base (ours is the client's, theirs the server's), field by field:
//
//   - a side that left the value as it was at base yields to the other;
//   - both sides making the same change is no conflict;
//   - if both changed an object and both still hold an object, its fields
//     are merged recursively (base's field if base was an object, absent
//     otherwise: two sides creating one record independently merge too);
//   - anything else (a scalar or array changed on both sides, an object
//     against a non-object, a delete against an update) is a conflict at
//     that path, resolved for the client if clientWins, else for the server.
//
// Arrays are values, not merged element by element: their elements carry no
// identity to match them by. Conflicting paths are JSON Pointers (RFC 6901);
// "" is the whole value. They are appended to conf in sorted order.
func merge3(base, ours, theirs doc, path string, clientWins bool, conf *[]string) doc {
	switch {
	case ours.equal(theirs):
		return ours
	case ours.equal(base):
		return theirs
	case theirs.equal(base):
		return ours
	}
	om, oObj := ours.object()
	tm, tObj := theirs.object()
	if !oObj || !tObj {
		*conf = append(*conf, path)
		if clientWins {
			return ours
		}
		return theirs
	}
	// A field removed on both sides is absent from both and stays removed.
	keys := make([]string, 0, len(om)+len(tm))
	for k := range om {
		keys = append(keys, k)
	}
	for k := range tm {
		if _, ok := om[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make(map[string]any, len(keys))
	for _, k := range keys {
		r := merge3(base.field(k), ours.field(k), theirs.field(k), path+"/"+escapePointer(k), clientWins, conf)
		if r.ok {
			out[k] = r.v
		}
	}
	return present(out)
}
