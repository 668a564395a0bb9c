package gen

import (
	"fmt"
	"strings"
)

// WideObject is a canonical JSON object of n small members ("k0000000":0,
// ...): a big record whose cost tests measure per member touched.
func WideObject(n int) []byte {
	var sb strings.Builder
	sb.WriteByte('{')
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `"k%07d":%d`, i, i)
	}
	sb.WriteByte('}')
	return []byte(sb.String())
}
