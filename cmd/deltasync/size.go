package main

import (
	"fmt"
	"strconv"
	"strings"
)

// sizeHelp explains what parseSize accepts; flag help texts quote it.
const sizeHelp = "K, M and G are powers of 1024 with or without B or iB: 64MB = 64MiB = 67108864 bytes, as in the server's size flags"

// parseSize parses a byte count: "512", "512KB", "64MB", "64MiB", "1g".
// The units are binary (1 MB = 1 MiB = 1,048,576 bytes), like the server's
// --max-*-bytes flags, so that one binary reads sizes one way.
func parseSize(s string) (int64, error) {
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
		return 0, fmt.Errorf("invalid size %q (want bytes, or a number with KB/MB/GB; %s)", s, sizeHelp)
	}
	return n * mult, nil
}

// sizeFlag is a flag.Value holding a size.
type sizeFlag int64

func (f *sizeFlag) String() string {
	if f == nil || *f == 0 {
		return ""
	}
	return humanBytes(int64(*f))
}

func (f *sizeFlag) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*f = sizeFlag(n)
	return nil
}

// humanBytes formats n with a binary unit: "8.0 MiB".
func humanBytes(n int64) string {
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

// humanCount formats n with thousands separators: "12,345".
func humanCount[T ~int | ~int64 | ~uint64](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
