package tokenizer

import (
	"sync"
	"unicode/utf8"
)

// wtok is a token of one word: its id and byte span in the word.
type wtok struct {
	id         int32
	start, end int32
}

// model encodes one pre-tokenized word.
type model interface {
	// encode appends the word's tokens.
	encode(word string, out []wtok) []wtok
}

// bpe is the BPE model. For byte-level files the vocabulary is keyed by raw
// bytes (the file's keys mapped back through GPT-2's byte-to-character
// table) and a word's first symbols are its bytes; otherwise by the text
// itself, and the first symbols are characters.
type bpe struct {
	vocab        map[string]int32
	merges       map[uint64]uint64 // (left<<32 | right) → rank<<32 | merged id
	perByte      bool
	single       [256]int32 // the id of each one-byte symbol, or -1
	fallback     [256]int32 // byte_fallback's <0xHH> ids, or -1
	byteFallback bool
	fuseUnk      bool
	ignoreMerges bool
	unk          int32 // -1: none
	cache        wordCache
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// symbol is one symbol of a word being merged, in a doubly linked list.
type symbol struct {
	id         int32
	start, end int32
	prev, next int32
}

func (m *bpe) encode(word string, out []wtok) []wtok {
	if word == "" {
		return out
	}
	if m.ignoreMerges {
		if id, ok := m.vocab[word]; ok {
			return append(out, wtok{id, 0, int32(len(word))})
		}
	}
	if toks, ok := m.cache.get(word); ok {
		return append(out, toks...)
	}
	mark := len(out)
	out = m.merge(word, out)
	m.cache.put(word, out[mark:])
	return out
}

// merge applies the merges to the word's symbols, lowest rank first and,
// among equal ranks, leftmost first, as the library's Word::merge_all does.
func (m *bpe) merge(word string, out []wtok) []wtok {
	var stack [64]symbol
	syms := stack[:0]
	add := func(id int32, s, e int) {
		syms = append(syms, symbol{id: id, start: int32(s), end: int32(e)})
	}
	unkStart, unkEnd := -1, -1
	flushUnk := func() {
		if unkStart >= 0 {
			add(m.unk, unkStart, unkEnd)
			unkStart = -1
		}
	}
	for i := 0; i < len(word); {
		w := 1
		var id int32 = -1
		if m.perByte || word[i] < utf8.RuneSelf {
			id = m.single[word[i]]
		} else {
			_, w = utf8.DecodeRuneInString(word[i:])
			if v, ok := m.vocab[word[i:i+w]]; ok {
				id = v
			}
		}
		if id >= 0 {
			flushUnk()
			add(id, i, i+w)
			i += w
			continue
		}
		if m.byteFallback {
			ok := true
			for k := i; k < i+w; k++ {
				if m.fallback[word[k]] < 0 {
					ok = false
				}
			}
			if ok {
				flushUnk()
				for k := i; k < i+w; k++ {
					add(m.fallback[word[k]], k, k+1)
				}
				i += w
				continue
			}
		}
		if m.unk >= 0 {
			if unkStart >= 0 && m.fuseUnk {
				unkEnd = i + w
			} else {
				flushUnk()
				unkStart, unkEnd = i, i+w
			}
		}
		i += w
	}
	flushUnk()
	n := len(syms)
	for k := range syms {
		syms[k].prev, syms[k].next = int32(k-1), int32(k+1)
	}
	if n > 1 {
		if n <= 24 {
			m.mergeSmall(syms)
		} else {
			m.mergeHeap(syms)
		}
	}
	for k := 0; k < n && k >= 0; k = int(syms[k].next) {
		s := syms[k]
		out = append(out, wtok{s.id, s.start, s.end})
		if s.next >= int32(n) {
			break
		}
	}
	return out
}

// mergeSmall scans all pairs for the best merge each round: for short words
// this beats keeping a heap.
func (m *bpe) mergeSmall(syms []symbol) {
	n := int32(len(syms))
	for {
		best, bestPos := uint64(1<<63), int32(-1)
		for k := int32(0); k >= 0 && syms[k].next < n; k = syms[k].next {
			if v, ok := m.merges[pairKey(syms[k].id, syms[syms[k].next].id)]; ok && v>>32 < best>>32 {
				best, bestPos = v, k
			}
		}
		if bestPos < 0 {
			return
		}
		m.join(syms, bestPos, int32(uint32(best)))
	}
}

// join merges symbol k with the one after it.
func (m *bpe) join(syms []symbol, k, id int32) {
	r := syms[k].next
	syms[k].id = id
	syms[k].end = syms[r].end
	syms[k].next = syms[r].next
	if nx := syms[r].next; nx < int32(len(syms)) {
		syms[nx].prev = k
	}
	syms[r].end = syms[r].start // removed
}

// mergeHeap is merge_all's priority queue: entries rank<<32|position, the
// smallest first; an entry whose pair no longer makes its token is stale.
func (m *bpe) mergeHeap(syms []symbol) {
	n := int32(len(syms))
	h := make(minHeap, 0, len(syms))
	for k := int32(0); k+1 < n; k++ {
		if v, ok := m.merges[pairKey(syms[k].id, syms[k+1].id)]; ok {
			h.push(v&^0xFFFFFFFF | uint64(k))
		}
	}
	for len(h) > 0 {
		top := h.pop()
		k := int32(uint32(top))
		rank := top >> 32
		s := syms[k]
		if s.end == s.start || s.next >= n {
			continue
		}
		v, ok := m.merges[pairKey(s.id, syms[s.next].id)]
		if !ok || v>>32 != rank {
			continue
		}
		m.join(syms, k, int32(uint32(v)))
		if p := syms[k].prev; p >= 0 {
			if v, ok := m.merges[pairKey(syms[p].id, syms[k].id)]; ok {
				h.push(v&^0xFFFFFFFF | uint64(p))
			}
		}
		if nx := syms[k].next; nx < n {
			if v, ok := m.merges[pairKey(syms[k].id, syms[nx].id)]; ok {
				h.push(v&^0xFFFFFFFF | uint64(k))
			}
		}
	}
}

type minHeap []uint64

func (h *minHeap) push(v uint64) {
	*h = append(*h, v)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p] <= a[i] {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

func (h *minHeap) pop() uint64 {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	for i := 0; ; {
		l, r, s := 2*i+1, 2*i+2, i
		if l < len(a) && a[l] < a[s] {
			s = l
		}
		if r < len(a) && a[r] < a[s] {
			s = r
		}
		if s == i {
			break
		}
		a[i], a[s] = a[s], a[i]
		i = s
	}
	*h = a
	return top
}

// wordCache remembers the tokens of words seen, as the library's BPE does
// (at most cacheWords words, each shorter than cacheWordLen bytes); it is
// safe for concurrent use.
type wordCache struct {
	shards [16]cacheShard
}

const (
	cacheWords   = 1 << 14
	cacheWordLen = 256
)

type cacheShard struct {
	mu sync.RWMutex // guards m
	m  map[string][]wtok
}

func shardOf(s string) int {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return int(h & 15)
}

func (c *wordCache) get(w string) ([]wtok, bool) {
	if len(w) >= cacheWordLen {
		return nil, false
	}
	sh := &c.shards[shardOf(w)]
	sh.mu.RLock()
	t, ok := sh.m[w]
	sh.mu.RUnlock()
	return t, ok
}

func (c *wordCache) put(w string, toks []wtok) {
	if len(w) >= cacheWordLen {
		return
	}
	sh := &c.shards[shardOf(w)]
	sh.mu.Lock()
	if sh.m == nil {
		sh.m = make(map[string][]wtok)
	}
	if len(sh.m) < cacheWords/16 {
		sh.m[string([]byte(w))] = append([]wtok(nil), toks...)
	}
	sh.mu.Unlock()
}
