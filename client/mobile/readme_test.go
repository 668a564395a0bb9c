package mobile

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's Kotlin and Swift snippets (issue 12 item 7) must use names
// the generated bindings have: a renamed façade method, field or constant
// fails here, not in an app developer's build.

// readmeSnippets returns the code blocks of lang in the README's mobile
// section.
func readmeSnippets(t *testing.T, lang string) []string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "## Mobile apps")
	if start < 0 {
		t.Fatal(`README has no "## Mobile apps" section`)
	}
	section := text[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```"+lang+"\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	if len(blocks) == 0 {
		t.Fatalf("README's mobile section has no %s snippet", lang)
	}
	return blocks
}

// stripStrings blanks string literals (their insides are not code), but
// keeps Kotlin "${…}" and Swift "\(…)" interpolations, which are.
// Raw strings (Kotlin """…""", Swift #"…"#) hold no interpolation here.
func stripStrings(code string) string {
	code = regexp.MustCompile(`(?s)#".*?"#|""".*?"""`).ReplaceAllString(code, `""`)
	var out strings.Builder
	for i := 0; i < len(code); i++ {
		if code[i] != '"' {
			out.WriteByte(code[i])
			continue
		}
		out.WriteByte('"')
		for i++; i < len(code) && code[i] != '"' && code[i] != '\n'; i++ {
			open, end := "", byte(0)
			switch {
			case strings.HasPrefix(code[i:], `\(`):
				open, end = `\(`, ')'
			case strings.HasPrefix(code[i:], "${"):
				open, end = "${", '}'
			case code[i] == '\\':
				i++ // an escaped character
				continue
			default:
				continue
			}
			// Keep the interpolation, balanced, as code (its own strings
			// stripped in turn).
			depth, from := 1, i+len(open)
			for i = from; i < len(code) && depth > 0; i++ {
				switch code[i] {
				case open[len(open)-1]:
					depth++
				case end:
					depth--
				}
			}
			out.WriteString(" " + stripStrings(code[from:i-1]) + " ")
			i--
		}
		out.WriteByte('"')
	}
	return out.String()
}

// kotlinReceivers maps the snippet's variables to their binding classes.
var kotlinReceivers = map[string]string{
	"Mobile": "Mobile", "config": "Config", "client": "Client",
	"s": "Status", "c": "Change", "page": "Records",
}

func TestReadmeKotlinUsesBoundNames(t *testing.T) {
	g := bindings(t)
	dir := filepath.Join(g.java, "java", "io", "deltasync", "mobile")
	class := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name+".java"))
		if err != nil {
			t.Errorf("the README's Kotlin names class %s, which the bindings lack", name)
		}
		return string(b)
	}
	checked := 0
	for _, code := range readmeSnippets(t, "kotlin") {
		code = stripStrings(code)
		for _, m := range regexp.MustCompile(`import io\.deltasync\.mobile\.(\w+)`).FindAllStringSubmatch(code, -1) {
			class(m[1])
			checked++
		}
		use := regexp.MustCompile(`\b(\w+)\.([A-Za-z_]\w*)\b(\s*\(|\s*\{|\s*=[^=])?`)
		for _, m := range use.FindAllStringSubmatch(code, -1) {
			cls, ok := kotlinReceivers[m[1]]
			if !ok {
				continue // the app's own objects
			}
			src, name, how := class(cls), m[2], strings.TrimSpace(m[3])
			var want string
			switch {
			case how == "(" || how == "{": // a call (Kotlin: a trailing lambda too)
				want = `public [^(]*\b` + name + `\(`
			case strings.HasPrefix(how, "="):
				want = `public [^(]*\bset` + upperFirst(name) + `\(`
			default: // a property (getter) or a constant
				want = `public [^(]*\b(get` + upperFirst(name) + `\(\)|is` + upperFirst(name) + `\(\)|` + name + ` =)`
			}
			if !regexp.MustCompile(want).MatchString(src) {
				t.Errorf("README Kotlin: %s.%s%s — %s.java has no such member", m[1], name, how, cls)
			}
			checked++
		}
	}
	t.Logf("%d Kotlin names checked", checked)
}

func upperFirst(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

// swiftReceivers maps the snippet's variables to their Objective-C classes.
var swiftReceivers = map[string]string{
	"config": "DSMobileConfig", "client": "DSMobileClient",
	"s": "DSMobileStatus", "c": "DSMobileChange", "page": "DSMobileRecords",
}

// objcBlock returns the @interface or @protocol block of name in header.
func objcBlock(header, kind, name string) (string, bool) {
	i := strings.Index(header, "\n"+kind+" "+name+" ")
	if i < 0 {
		return "", false
	}
	block := header[i:]
	return block[:strings.Index(block, "\n@end")], true
}

// callArgs returns the text inside the parentheses that open at code[i].
func callArgs(code string, i int) string {
	depth := 0
	for j := i; j < len(code); j++ {
		switch code[j] {
		case '(':
			depth++
		case ')':
			if depth--; depth == 0 {
				return code[i+1 : j]
			}
		}
	}
	return code[i+1:]
}

func TestReadmeSwiftUsesBoundNames(t *testing.T) {
	g := bindings(t)
	b, err := os.ReadFile(filepath.Join(g.objc, "src", "gobind", objcPrefix+"Mobile.objc.h"))
	if err != nil {
		t.Fatal(err)
	}
	header := string(b)
	checked := 0
	for _, code := range readmeSnippets(t, "swift") {
		code = stripStrings(code)
		checked += checkSwiftGlobals(t, header, code)
		checked += checkSwiftMembers(t, header, code)
		// Protocol methods the app implements.
		for _, m := range regexp.MustCompile(`func (\w+)\(`).FindAllStringSubmatch(code, -1) {
			if !regexp.MustCompile(`(?m)^- \([^)]*\)` + m[1] + `[:;]`).MatchString(protocolsOf(header)) {
				t.Errorf("README Swift: func %s — no protocol of the bindings has it", m[1])
			}
			checked++
		}
	}
	t.Logf("%d Swift names checked", checked)
}

// checkSwiftGlobals checks the DSMobile* names: functions, classes,
// protocols (Swift adds "Protocol" where a class has the same name) and
// constants.
func checkSwiftGlobals(t *testing.T, header, code string) int {
	n := 0
	for _, m := range regexp.MustCompile(`\b(DSMobile\w+)(\s*\()?`).FindAllStringSubmatch(code, -1) {
		name, call := m[1], m[2] != ""
		var ok bool
		switch {
		case call:
			ok = regexp.MustCompile(`FOUNDATION_EXPORT [^;]*\b` + name + `\(`).MatchString(header)
		case strings.HasSuffix(name, "Protocol"):
			base := strings.TrimSuffix(name, "Protocol")
			_, isProto := objcBlock(header, "@protocol", base)
			_, isClass := objcBlock(header, "@interface", base)
			ok = isProto && isClass
		default:
			_, ok = objcBlock(header, "@interface", name)
			ok = ok || regexp.MustCompile(`FOUNDATION_EXPORT [^;]*\bconst `+name+`;`).MatchString(header)
		}
		if !ok {
			t.Errorf("README Swift: %s — the Objective-C header has no such name", name)
		}
		n++
	}
	return n
}

// checkSwiftMembers checks members used on the snippet's variables:
// methods by selector and argument labels, properties by name.
func checkSwiftMembers(t *testing.T, header, code string) int {
	n := 0
	use := regexp.MustCompile(`\b(\w+)\.([A-Za-z_]\w*)\b(\()?`)
	for _, loc := range use.FindAllStringSubmatchIndex(code, -1) {
		recv, name := code[loc[2]:loc[3]], code[loc[4]:loc[5]]
		cls, ok := swiftReceivers[recv]
		if !ok {
			continue
		}
		block, found := objcBlock(header, "@interface", cls)
		if !found {
			t.Errorf("README Swift: %s is not in the header", cls)
			continue
		}
		if loc[6] < 0 { // a property
			if !regexp.MustCompile(`@property \([^)]*\) [^;]*\b` + name + `;`).MatchString(block) {
				t.Errorf("README Swift: %s.%s — %s has no such property", recv, name, cls)
			}
			n++
			continue
		}
		sel := regexp.MustCompile(`(?m)^- \([^)]*\)` + name + `\b[^;]*;`).FindString(block)
		if sel == "" {
			t.Errorf("README Swift: %s.%s(…) — %s has no such method", recv, name, cls)
			continue
		}
		for _, l := range regexp.MustCompile(`(?:^|,)\s*(\w+):`).FindAllStringSubmatch(callArgs(code, loc[6]), -1) {
			if !strings.Contains(sel, " "+l[1]+":(") {
				t.Errorf("README Swift: %s.%s(…%s:…) — the selector is %s", recv, name, l[1], sel)
			}
		}
		n++
	}
	return n
}

// protocolsOf returns the header's @protocol blocks.
func protocolsOf(header string) string {
	var out strings.Builder
	for _, m := range regexp.MustCompile(`(?s)\n@protocol \w+ <NSObject>.*?\n@end`).FindAllString(header, -1) {
		out.WriteString(m)
	}
	return out.String()
}

func TestStripStrings(t *testing.T) {
	for in, want := range map[string]string{
		`a("x.y(z)", b.c)`:                   `a("", b.c)`,
		`"v ${s.localVersion} ${"q"}" + t.u`: `" s.localVersion  "" " + t.u`,
		`"v \(s.state) \"q\"" + t.u`:         `" s.state " + t.u`,
		`x(#"{"a":1}"#, y.z)`:                `x("", y.z)`,
	} {
		if got := stripStrings(in); got != want {
			t.Errorf("stripStrings(%s) = %s, want %s", in, got, want)
		}
	}
}
