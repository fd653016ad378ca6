package grammar

import (
	"bytes"
	"fmt"
	"slices"
)

// Vocab is a tokenizer's vocabulary as bytes, read once: token id i's bytes
// are tokens[i]. Special tokens that are not text have nil (or empty) bytes
// and are never allowed, except the end-of-sequence ids. Added tokens that
// are text (such as "<tool_call>") are plain bytes. A Vocab is immutable and
// safe for concurrent use.
type Vocab struct {
	tokens [][]byte
	eos    []int32
	isEOS  []bool
	words  int
	nodes  []trieNode
	dups   map[int][]int32 // node → its tokens after the first (same bytes)
	depth  int             // longest token

	// Subtrees of plain string text: ph[i] is 1 + the height of node i's
	// subtree when every byte in it (node i's included) is printable ASCII
	// but '"' and '\\', else 0. pre lists the tokens in node order; node
	// i's subtree holds pre[preLo[i]:preLo[skip]].
	ph    []uint8
	pre   []int32
	preLo []int32
	// The same for UTF-8 text: th[i] is 1 + the height of node i's subtree
	// when every byte in it continues valid string text (no '"', '\\' or
	// control characters) from tu[i], the UTF-8 state (utf8Step) of the text
	// before node i, the root being at a character boundary.
	th, tu []uint8
}

// utf8Step is the UTF-8 state after byte b of string text in state u: 0
// at a character boundary, 1-3 continuation bytes to go, 4-7 the second
// byte of a lead E0, ED, F0, F4 to come; -1 where b cannot come.
func utf8Step(u uint8, b byte) int {
	switch u {
	case 0:
		switch {
		case plain(b):
			return 0
		case b >= 0xC2 && b <= 0xDF:
			return 1
		case b == 0xE0:
			return 4
		case b == 0xED:
			return 5
		case b >= 0xE1 && b <= 0xEF:
			return 2
		case b == 0xF0:
			return 6
		case b >= 0xF1 && b <= 0xF3:
			return 3
		case b == 0xF4:
			return 7
		}
	case 1, 2, 3:
		if b >= 0x80 && b <= 0xBF {
			return int(u) - 1
		}
	case 4:
		if b >= 0xA0 && b <= 0xBF {
			return 1
		}
	case 5:
		if b >= 0x80 && b <= 0x9F {
			return 1
		}
	case 6:
		if b >= 0x90 && b <= 0xBF {
			return 2
		}
	case 7:
		if b >= 0x80 && b <= 0x8F {
			return 2
		}
	}
	return -1
}

// plain reports whether b is string text that needs no escape and is a
// whole character.
func plain(b byte) bool { return b >= 0x20 && b < 0x80 && b != '"' && b != '\\' }

// trieNode is a node of the vocabulary's byte trie, stored in preorder.
type trieNode struct {
	skip  int32  // the next node outside this node's subtree
	tok   int32  // the token that ends here, or -1
	depth uint16 // bytes from the root; the root itself is not stored
	b     byte
	dup   bool // more tokens end here (dups)
}

// NewVocab builds the vocabulary's trie. tokens[i] is token i's bytes; eos
// lists the end-of-sequence ids.
func NewVocab(tokens [][]byte, eos []int) (*Vocab, error) {
	v := &Vocab{
		tokens: tokens,
		isEOS:  make([]bool, len(tokens)),
		words:  (len(tokens) + 63) / 64,
		dups:   map[int][]int32{},
	}
	for _, e := range eos {
		if e < 0 || e >= len(tokens) {
			return nil, fmt.Errorf("grammar: end-of-sequence id %d outside the vocabulary of %d", e, len(tokens))
		}
		v.eos = append(v.eos, int32(e))
		v.isEOS[e] = true
	}
	var order []int32
	for i, t := range tokens {
		if len(t) > 0 && !v.isEOS[i] {
			if len(t) > 0xFFFF {
				return nil, fmt.Errorf("grammar: token %d is %d bytes long", i, len(t))
			}
			order = append(order, int32(i))
		}
	}
	slices.SortFunc(order, func(a, b int32) int {
		if c := bytes.Compare(tokens[a], tokens[b]); c != 0 {
			return c
		}
		return int(a - b)
	})
	var prev []byte
	var open []int32 // nodes on the path to the last one
	for _, id := range order {
		t := tokens[id]
		lcp := 0
		for lcp < len(t) && lcp < len(prev) && t[lcp] == prev[lcp] {
			lcp++
		}
		if lcp == len(t) && len(prev) == len(t) && len(v.nodes) > 0 {
			// Same bytes as the previous token: same node.
			last := len(v.nodes) - 1
			v.nodes[last].dup = true
			v.dups[last] = append(v.dups[last], id)
			continue
		}
		for len(open) > lcp {
			v.nodes[open[len(open)-1]].skip = int32(len(v.nodes))
			open = open[:len(open)-1]
		}
		for d := lcp; d < len(t); d++ {
			open = append(open, int32(len(v.nodes)))
			v.nodes = append(v.nodes, trieNode{depth: uint16(d + 1), b: t[d], tok: -1})
		}
		v.nodes[len(v.nodes)-1].tok = id
		v.depth = max(v.depth, len(t))
		prev = t
	}
	for _, o := range open {
		v.nodes[o].skip = int32(len(v.nodes))
	}
	v.plainSubtrees()
	return v, nil
}

func (v *Vocab) plainSubtrees() {
	n := len(v.nodes)
	parent := make([]int32, n)
	var path []int32
	v.preLo = make([]int32, n+1)
	for i := range v.nodes {
		nd := &v.nodes[i]
		path = path[:nd.depth-1]
		parent[i] = -1
		if nd.depth > 1 {
			parent[i] = path[nd.depth-2]
		}
		path = append(path, int32(i))
		v.preLo[i] = int32(len(v.pre))
		if nd.tok >= 0 {
			v.pre = append(v.pre, nd.tok)
			v.pre = append(v.pre, v.dups[i]...)
		}
	}
	v.preLo[n] = int32(len(v.pre))
	height := make([]int, n)
	ok := make([]bool, n)
	tok := make([]bool, n)
	v.tu = make([]uint8, n)
	after := make([]int, n) // UTF-8 state after node i, -1 invalid
	for i := range v.nodes {
		ok[i] = plain(v.nodes[i].b)
		u := 0
		if p := parent[i]; p >= 0 {
			u = after[p]
		}
		if u < 0 {
			after[i] = -1
			v.tu[i] = 255
			continue
		}
		v.tu[i] = uint8(u)
		after[i] = utf8Step(uint8(u), v.nodes[i].b)
		tok[i] = after[i] >= 0
	}
	for j := n - 1; j >= 0; j-- {
		if p := parent[j]; p >= 0 {
			ok[p] = ok[p] && ok[j]
			tok[p] = tok[p] && tok[j]
			height[p] = max(height[p], height[j]+1)
		}
	}
	v.ph = make([]uint8, n)
	v.th = make([]uint8, n)
	for i := range v.ph {
		if height[i] < 255 {
			if ok[i] {
				v.ph[i] = uint8(height[i] + 1)
			}
			if tok[i] {
				v.th[i] = uint8(height[i] + 1)
			}
		}
	}
}

// Size is the number of token ids.
func (v *Vocab) Size() int { return len(v.tokens) }

// MaskWords is the length of a mask: one bit per token id, id i in word
// i/64, bit i%64.
func (v *Vocab) MaskWords() int { return v.words }
