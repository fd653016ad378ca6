package tokenizer

import (
	"math"
	"unicode/utf8"
)

// unigram is the Unigram model: the best path through the lattice of
// vocabulary pieces (Viterbi), a character no piece covers scoring the
// lowest piece score less 10, unknown characters fused into one token, as
// the library's optimized encoder does.
type unigram struct {
	scores       []float64
	vocab        map[string]int32
	trie         map[uint64]int32 // (node<<8 | byte) → child node
	terminal     []int32          // node → token id, or -1
	unk          int32            // -1: none
	unkScore     float64
	byteFallback bool
	fallback     [256]int32
}

const unkPenalty = 10

func newUnigram(pieces []string, scores []float64, unk int32, byteFallback bool) *unigram {
	u := &unigram{scores: scores, vocab: make(map[string]int32, len(pieces)), trie: make(map[uint64]int32, len(pieces)*4),
		terminal: []int32{-1}, unk: unk, byteFallback: byteFallback}
	minScore := math.Inf(1)
	for id, p := range pieces {
		u.vocab[p] = int32(id)
		minScore = math.Min(minScore, scores[id])
		node := int32(0)
		for i := 0; i < len(p); i++ {
			k := uint64(node)<<8 | uint64(p[i])
			next, ok := u.trie[k]
			if !ok {
				next = int32(len(u.terminal))
				u.terminal = append(u.terminal, -1)
				u.trie[k] = next
			}
			node = next
		}
		// A piece listed twice is the later id, as the library's map has it.
		u.terminal[node] = int32(id)
	}
	u.unkScore = minScore - unkPenalty
	for b := range 256 {
		u.fallback[b] = -1
		if id, ok := u.vocab[byteToken(byte(b))]; ok {
			u.fallback[b] = id
		}
	}
	return u
}

func (u *unigram) encode(s string, out []wtok) []wtok {
	if s == "" {
		return out
	}
	type node struct {
		score float64
		start int32
		id    int32
		set   bool
	}
	best := make([]node, len(s)+1)
	best[0].set = true
	for i := 0; i < len(s); {
		_, mb := utf8.DecodeRuneInString(s[i:])
		base := best[i].score
		single := false
		n := int32(0)
		for j := i; j < len(s); j++ {
			next, ok := u.trie[uint64(n)<<8|uint64(s[j])]
			if !ok {
				break
			}
			n = next
			if id := u.terminal[n]; id >= 0 {
				e := j + 1
				if c := base + u.scores[id]; !best[e].set || c > best[e].score {
					best[e] = node{c, int32(i), id, true}
				}
				if e-i == mb {
					single = true
				}
			}
		}
		if !single && u.unk >= 0 {
			e := i + mb
			if c := base + u.unkScore; !best[e].set || c > best[e].score {
				best[e] = node{c, int32(i), u.unk, true}
			}
		}
		i += mb
	}
	// Walk back from the end; unknown pieces next to each other are one.
	var rev []wtok
	for e := len(s); e > 0; {
		b := best[e]
		if !b.set {
			// Not reachable without an unknown token: the library fails;
			// the character is dropped.
			_, w := utf8.DecodeLastRuneInString(s[:e])
			e -= w
			continue
		}
		if b.id == u.unk && len(rev) > 0 && rev[len(rev)-1].id == u.unk && rev[len(rev)-1].start == int32(e) {
			rev[len(rev)-1].start = b.start
		} else {
			rev = append(rev, wtok{b.id, b.start, int32(e)})
		}
		e = int(b.start)
	}
	for k := len(rev) - 1; k >= 0; k-- {
		t := rev[k]
		if t.id == u.unk {
			// A fused run is looked up whole, then as bytes.
			piece := s[t.start:t.end]
			if id, ok := u.vocab[piece]; ok {
				t.id = id
			} else if u.byteFallback {
				ok := true
				for i := 0; i < len(piece); i++ {
					ok = ok && u.fallback[piece[i]] >= 0
				}
				if ok {
					for i := 0; i < len(piece); i++ {
						out = append(out, wtok{u.fallback[piece[i]], t.start, t.end})
					}
					continue
				}
			}
		}
		out = append(out, t)
	}
	return out
}
