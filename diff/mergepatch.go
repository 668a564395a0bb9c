package diff

import (
	"fmt"

	"github.com/deltasync/deltasync/snapshot"
)

// MergePatch applies an RFC 7386 JSON merge patch to target and returns the
// result. Both arguments are values as produced by snapshot.DecodeJSON
// (map[string]any, []any, json.Number, string, bool, nil); a nil target means
// "absent" and behaves like JSON null.
//
// Neither input is mutated: every object on the path the patch touches is
// copied. The result shares untouched subtrees with target and non-object
// values with patch, so treat all three as immutable afterwards (copying whole
// 16 MiB values on every edit would cost more than it protects).
func MergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	out := make(map[string]any, len(t)+len(p))
	if ok {
		for k, v := range t {
			out[k] = v
		}
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = MergePatch(out[k], v)
	}
	return out
}

// ApplyMergePatch applies the JSON merge patch in patch to the JSON document
// in target and returns the result as canonical JSON (snapshot.CanonicalJSON).
// A nil or empty target means the document is absent. Malformed JSON in either
// argument yields an error matching snapshot.ErrInvalid.
func ApplyMergePatch(target, patch []byte) ([]byte, error) {
	var t any
	if len(target) > 0 {
		var err error
		if t, err = snapshot.DecodeJSON(target); err != nil {
			return nil, fmt.Errorf("merge patch target: %w", err)
		}
	}
	p, err := snapshot.DecodeJSON(patch)
	if err != nil {
		return nil, fmt.Errorf("merge patch: %w", err)
	}
	return snapshot.MarshalCanonical(MergePatch(t, p))
}
