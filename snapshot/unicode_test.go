package snapshot_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/deltasync/deltasync/snapshot"
)

// notUnicode are JSON strings (as written on the wire) that encoding/json
// would decode to U+FFFD, so that distinct inputs collide: raw bytes that are
// not UTF-8 and \u escapes of lone surrogates.
var notUnicode = []struct{ name, str string }{
	{"invalid byte", "\"k/\xff\""},
	{"another invalid byte", "\"k/\xfe\""},
	{"truncated sequence", "\"k/\xe2\x82\""},
	{"overlong encoding", "\"k/\xc0\xaf\""},
	{"encoded surrogate", "\"k/\xed\xa0\x80\""},
	{"lone high surrogate", `"k/\ud800"`},
	{"lone low surrogate", `"k/\udc00"`},
	{"high surrogate then a letter", `"k/\ud800x"`},
	{"high surrogate then a non-surrogate escape", `"k/\ud800\u0041"`},
	{"two high surrogates", `"k/\ud800\ud800"`},
	{"reversed pair", `"k/\udc00\ud800"`},
	{"upper-case hex", `"k/\uD800"`},
}

// TestNDJSONKeysRefusedNotRewritten: a record whose key is not valid Unicode
// is refused, not stored under a U+FFFD key that another such key shares.
func TestNDJSONKeysRefusedNotRewritten(t *testing.T) {
	for _, tc := range notUnicode {
		t.Run(tc.name, func(t *testing.T) {
			line := `{"key":` + tc.str + `,"value":1}`
			k, _, err := snapshot.ParseNDJSONLine([]byte(line))
			if !errors.Is(err, snapshot.ErrInvalid) {
				t.Fatalf("ParseNDJSONLine(%q) = key %q, %v; want ErrInvalid", line, k, err)
			}
			_, err = snapshot.ReadNDJSON(strings.NewReader(`{"key":"a","value":1}`+"\n"+line+"\n"), snapshot.NDJSONOptions{})
			if !errors.Is(err, snapshot.ErrInvalid) || !strings.Contains(err.Error(), "line 2") {
				t.Fatalf("ReadNDJSON: %v, want ErrInvalid naming line 2", err)
			}
		})
	}
}

// TestValuesRefusedNotRewritten: the same holds for strings inside values
// (and object member names there): a value is stored as sent or refused.
func TestValuesRefusedNotRewritten(t *testing.T) {
	for _, tc := range notUnicode {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range []string{tc.str, `{"a":[` + tc.str + `]}`, `{` + tc.str + `:1}`} {
				if got, err := snapshot.CanonicalJSON([]byte(v)); !errors.Is(err, snapshot.ErrInvalid) {
					t.Errorf("CanonicalJSON(%q) = %q, %v; want ErrInvalid", v, got, err)
				}
				line := `{"key":"k","value":` + v + `}`
				if _, got, err := snapshot.ParseNDJSONLine([]byte(line)); !errors.Is(err, snapshot.ErrInvalid) {
					t.Errorf("ParseNDJSONLine(%q) = value %q, %v; want ErrInvalid", line, got, err)
				}
			}
		})
	}
}

// TestValidUnicodeStillAccepted: escapes of valid characters, surrogate
// pairs and non-ASCII UTF-8 keep working, in keys and values.
func TestValidUnicodeStillAccepted(t *testing.T) {
	for _, tc := range []struct{ in, key string }{
		{`"k/\ud83d\ude00"`, "k/\U0001F600"},
		{`"k/\uD83D\uDE00"`, "k/\U0001F600"},
		{"\"k/\xf0\x9f\x98\x80\"", "k/\U0001F600"},
		{`"k/\u00e9\\ud800"`, `k/é\ud800`}, // an escaped backslash, then plain text
		{`"k/\ufffd"`, "k/\ufffd"},
		{`"k/\u0041"`, "k/A"},
	} {
		line := `{"key":` + tc.in + `,"value":` + tc.in + `}`
		k, v, err := snapshot.ParseNDJSONLine([]byte(line))
		if err != nil || k != tc.key {
			t.Errorf("ParseNDJSONLine(%q) = %q, %v; want key %q", line, k, err, tc.key)
			continue
		}
		if want, _ := snapshot.CanonicalJSON([]byte(tc.in)); string(v) != string(want) {
			t.Errorf("value %s, want %s", v, want)
		}
	}
}

func TestValidateJSONText(t *testing.T) {
	for _, tc := range notUnicode {
		if err := snapshot.ValidateJSONText([]byte(`{"a":[1,` + tc.str + `]}`)); !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	for _, ok := range []string{`{}`, `"\\"`, `"\\\\ud800"`, `"\ud83d\ude00"`, `"é"`, `"\u2028"`, `"\"\ud800\udfff"`} {
		if err := snapshot.ValidateJSONText([]byte(ok)); err != nil {
			t.Errorf("ValidateJSONText(%q): %v", ok, err)
		}
	}
	err := snapshot.ValidateJSONText([]byte("{\"key\":\"ab\xff\"}"))
	if err == nil || !strings.Contains(err.Error(), "byte 10") {
		t.Errorf("error %v, want it to name byte 10", err)
	}
}
