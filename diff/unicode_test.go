package diff_test

import (
	"errors"
	"testing"

	"github.com/deltasync/deltasync/diff"
	"github.com/deltasync/deltasync/snapshot"
)

// TestPatchKeysRefusedNotRewritten: a patch whose key (or seen key, value
// or merge patch) is not Unicode as written is refused. Decoded as it is,
// "k/\xff" and "k/\xfe" would both become "k/\uFFFD": one record for two
// keys.
func TestPatchKeysRefusedNotRewritten(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"invalid UTF-8 key", "{\"id\":\"p\",\"base\":1,\"ops\":[{\"op\":\"put\",\"key\":\"k/\xff\",\"value\":1}]}"},
		{"another invalid UTF-8 key", "{\"id\":\"p\",\"base\":1,\"ops\":[{\"op\":\"delete\",\"key\":\"k/\xfe\"}]}"},
		{"lone surrogate key", `{"id":"p","base":1,"ops":[{"op":"put","key":"k/\ud800","value":1}]}`},
		{"lone low surrogate key", `{"id":"p","base":1,"ops":[{"op":"merge","key":"k/\udfff","patch":{"a":1}}]}`},
		{"invalid seen key", "{\"id\":\"p\",\"base\":1,\"ops\":[{\"op\":\"put\",\"key\":\"k/\xff\",\"value\":1}],\"seen\":{\"k/\xff\":\"-\"}}"},
		{"invalid UTF-8 value", "{\"id\":\"p\",\"base\":1,\"ops\":[{\"op\":\"put\",\"key\":\"k\",\"value\":\"a\xffb\"}]}"},
		{"lone surrogate in a value", `{"id":"p","base":1,"ops":[{"op":"put","key":"k","value":{"t":"\ud800"}}]}`},
		{"lone surrogate in a merge patch", `{"id":"p","base":1,"ops":[{"op":"merge","key":"k","patch":{"\udc00":1}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := diff.DecodePatch([]byte(tc.body), diff.Limits{})
			if !errors.Is(err, snapshot.ErrInvalid) {
				var keys []string
				if p != nil {
					for _, op := range p.Ops {
						keys = append(keys, op.Key)
					}
				}
				t.Fatalf("DecodePatch = keys %q, %v; want ErrInvalid", keys, err)
			}
		})
	}
	// A valid surrogate pair and non-ASCII UTF-8 are keys like any other.
	p, err := diff.DecodePatch([]byte(`{"id":"p","base":1,"ops":[{"op":"put","key":"k/\ud83d\ude00","value":"é"}]}`), diff.Limits{})
	if err != nil || p.Ops[0].Key != "k/\U0001F600" || string(p.Ops[0].Value) != `"é"` {
		t.Fatalf("valid pair: %+v, %v", p, err)
	}
}
