// Package bytesize parses and prints byte counts for command-line flags, so
// that every flag of the one binary reads sizes one way: K, M and G are
// powers of 1024, with or without B or iB (64MB = 64MiB = 67108864 bytes).
package bytesize

import (
	"fmt"
	"strconv"
	"strings"
)

// Help explains what Parse accepts; flag help texts quote it.
const Help = "K, M and G are powers of 1024 with or without B or iB: 64MB = 64MiB = 67108864 bytes"

// Parse parses a byte count: "512", "512KB", "64MB", "64MiB", "1g".
func Parse(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'k':
			mult = 1 << 10
		case 'm':
			mult = 1 << 20
		case 'g':
			mult = 1 << 30
		}
		if mult != 1 {
			t = strings.TrimSpace(t[:len(t)-1])
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (want bytes, or a number with KB/MB/GB; %s)", s, Help)
	}
	return n * mult, nil
}

// Format prints n with a binary unit: "8.0 MiB".
func Format(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Flag is a flag.Value holding a size.
type Flag int64

// String prints the size in the largest exact unit, in a form Parse reads
// back: "64MiB", "1536KiB", "1000".
func (f *Flag) String() string {
	if f == nil || *f == 0 {
		return ""
	}
	n := int64(*f)
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// Set implements flag.Value.
func (f *Flag) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	*f = Flag(n)
	return nil
}
