package batch

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Shard selects the users one of N cooperating jobs builds: those whose
// xxhash64 of "org/user" mod N is I. The zero Shard selects every user.
type Shard struct {
	I, N int
}

// ParseShard parses "i/n" with 0 <= i < n. The empty string is the zero
// Shard (all users).
func ParseShard(s string) (Shard, error) {
	if s == "" {
		return Shard{}, nil
	}
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		return Shard{}, fmt.Errorf("shard %q: want i/n, e.g. 0/4", s)
	}
	if n < 1 || i < 0 || i >= n {
		return Shard{}, fmt.Errorf("shard %q: want i/n with 0 <= i < n", s)
	}
	return Shard{I: i, N: n}, nil
}

// Validate checks 0 <= I < N, or the zero Shard.
func (s Shard) Validate() error {
	if s == (Shard{}) {
		return nil
	}
	if s.N < 1 || s.I < 0 || s.I >= s.N {
		return fmt.Errorf("shard %d/%d: want 0 <= i < n", s.I, s.N)
	}
	return nil
}

// Has reports whether the user belongs to this shard.
func (s Shard) Has(org, user string) bool {
	if s.N <= 1 {
		return true
	}
	return xxhash.Sum64String(org+"/"+user)%uint64(s.N) == uint64(s.I)
}

// String formats the shard as "i/n" ("" for all users).
func (s Shard) String() string {
	if s == (Shard{}) {
		return ""
	}
	return fmt.Sprintf("%d/%d", s.I, s.N)
}
