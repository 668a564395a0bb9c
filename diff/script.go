package diff

import (
	"sort"

	"github.com/deltasync/deltasync/snapshot"
)

// Region is one place where two chunk lists differ: the chunks Old[From:To]
// of version A were replaced by New[From:To] of version B. Either side may
// be empty (a pure insertion or removal of chunks).
type Region struct {
	OldFrom, OldTo int
	NewFrom, NewTo int
}

// Script is the edit script between the chunk lists of two versions: runs
// of chunks kept, separated by regions where chunks were inserted and
// removed.
type Script struct {
	A, B    *snapshot.Manifest
	Regions []Region
	// Base pairs every chunk of B that A lacks with the chunk of A it most
	// likely replaces (same position in its region, or overlapping key range),
	// or -1. The server compresses the new chunk with that old one as a
	// dictionary, which the client already holds.
	Base map[int]int
}

// Manifests computes the edit script from a to b. a may be nil (version 0).
// Chunks are matched by ID; since both lists are sorted by key, a chunk of b
// found in a re-synchronises the two walks.
func Manifests(a, b *snapshot.Manifest) *Script {
	var ac []snapshot.ChunkRef
	if a != nil {
		ac = a.Chunks
	}
	bc := b.Chunks
	s := &Script{A: a, B: b, Base: map[int]int{}}
	i, j := 0, 0
	for i < len(ac) || j < len(bc) {
		if i < len(ac) && j < len(bc) && ac[i].ID == bc[j].ID {
			i++
			j++
			continue
		}
		// Find the next chunk of b that a has at or after i. Both lists are
		// sorted by first key, so a binary search finds the candidates:
		// the walk costs O(n) ID comparisons plus O(change * log n).
		nj, ni := j, len(ac)
		for ; nj < len(bc); nj++ {
			if p := find(ac, i, &bc[nj]); p >= 0 {
				ni = p
				break
			}
		}
		s.Regions = append(s.Regions, Region{OldFrom: i, OldTo: ni, NewFrom: j, NewTo: nj})
		i, j = ni, nj
	}
	for _, r := range s.Regions {
		s.pair(ac, bc, r)
	}
	return s
}

// find returns the index of chunk c in ac[from:], or -1.
func find(ac []snapshot.ChunkRef, from int, c *snapshot.ChunkRef) int {
	k := from + sort.Search(len(ac)-from, func(k int) bool { return ac[from+k].FirstKey >= c.FirstKey })
	for ; k < len(ac) && ac[k].FirstKey == c.FirstKey; k++ {
		if ac[k].ID == c.ID {
			return k
		}
	}
	return -1
}

// pair chooses, for every chunk of b inserted in region r, the chunk of a it
// most likely replaces.
func (s *Script) pair(ac, bc []snapshot.ChunkRef, r Region) {
	for j := r.NewFrom; j < r.NewTo; j++ {
		if find(ac, 0, &bc[j]) >= 0 { // the holder of A has it elsewhere
			continue
		}
		best := -1
		if r.OldTo > r.OldFrom {
			// The removed chunk whose key range holds this chunk's first key.
			k := r.OldFrom + sort.Search(r.OldTo-r.OldFrom, func(k int) bool {
				return ac[r.OldFrom+k].FirstKey > bc[j].FirstKey
			}) - 1
			best = max(k, r.OldFrom)
		} else if len(ac) > 0 {
			// A pure insertion: its neighbour holds similar records.
			best = min(max(r.OldFrom-1, 0), len(ac)-1)
		}
		s.Base[j] = best
	}
}

// Needed lists the indexes (into B's chunks) of the chunks a holder of A
// lacks, in stream order, without repeats.
func (s *Script) Needed() []int {
	seen := map[snapshot.ChunkID]bool{}
	var out []int
	for _, r := range s.Regions {
		for j := r.NewFrom; j < r.NewTo; j++ {
			id := s.B.Chunks[j].ID
			if _, ok := s.Base[j]; ok && !seen[id] {
				seen[id] = true
				out = append(out, j)
			}
		}
	}
	return out
}
