package bytesize

import "testing"

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "512KB": 512 << 10, "64MB": 64 << 20, "64MiB": 64 << 20, "1g": 1 << 30, " 8 M ": 8 << 20} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5MB", "MB", "1TB", "9999999999G"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	for _, n := range []int64{1000, 1536 << 10, 64 << 20, 2 << 30} {
		f := Flag(n)
		var back Flag
		if err := back.Set(f.String()); err != nil || back != f {
			t.Errorf("Flag(%d).String() = %q does not parse back: %d, %v", n, f.String(), back, err)
		}
	}
	if got := Format(8 << 20); got != "8.0 MiB" {
		t.Errorf("Format = %q", got)
	}
}
