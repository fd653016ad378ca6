package tokenizer

import "unicode/utf8"

// addedToken is one of the file's added_tokens.
type addedToken struct {
	content                    string
	id                         int64
	special                    bool
	lstrip, rstrip, singleWord bool
	normalized                 bool
}

// addedSet finds added tokens in text, leftmost-longest, as the library's
// Aho-Corasick automaton does: a byte trie walked from each position whose
// byte can start a token (Gemma 3 has thousands of added tokens).
type addedSet struct {
	tokens []addedToken
	first  [256]bool
	next   map[uint64]int32 // (node<<8 | byte) → child
	term   []int32          // node → index in tokens, or -1
}

func newAddedSet(tokens []addedToken, content func(addedToken) string) *addedSet {
	a := &addedSet{next: make(map[uint64]int32), term: []int32{-1}}
	for _, t := range tokens {
		c := content(t)
		if c == "" {
			continue
		}
		a.first[c[0]] = true
		n := int32(0)
		for i := 0; i < len(c); i++ {
			k := uint64(n)<<8 | uint64(c[i])
			nx, ok := a.next[k]
			if !ok {
				nx = int32(len(a.term))
				a.term = append(a.term, -1)
				a.next[k] = nx
			}
			n = nx
		}
		if a.term[n] < 0 {
			a.term[n] = int32(len(a.tokens))
			a.tokens = append(a.tokens, t)
		}
	}
	if len(a.tokens) == 0 {
		return nil
	}
	return a
}

// longestAt is the longest token starting at s[i] and its end.
func (a *addedSet) longestAt(s string, i int) (int, int) {
	best, end := -1, 0
	n := int32(0)
	for j := i; j < len(s); j++ {
		nx, ok := a.next[uint64(n)<<8|uint64(s[j])]
		if !ok {
			break
		}
		n = nx
		if t := a.term[n]; t >= 0 {
			best, end = int(t), j+1
		}
	}
	return best, end
}

// addedSpan is a stretch of text: an added token's (tok >= 0) or plain.
type addedSpan struct {
	tok        int
	start, end int
}

// find splits s into added tokens and the text between them, applying
// single_word, lstrip and rstrip as the library's find_matches does.
func (a *addedSet) find(s string, dst []addedSpan) []addedSpan {
	from := 0 // end of the last span emitted
	for i := 0; i < len(s); {
		if !a.first[s[i]] {
			i++
			continue
		}
		t, e := a.longestAt(s, i)
		if t < 0 {
			i++
			continue
		}
		tok := &a.tokens[t]
		start, stop := i, e
		i = e
		if tok.singleWord {
			if start > 0 && endsWithWord(s[:start]) || stop < len(s) && startsWithWord(s[stop:]) {
				continue
			}
		}
		if tok.lstrip {
			ns := start
			for ns > 0 {
				r, w := utf8.DecodeLastRuneInString(s[:ns])
				if !isS(r) {
					break
				}
				ns -= w
			}
			start = max(ns, from)
		}
		if tok.rstrip {
			for stop < len(s) {
				r, w := utf8.DecodeRuneInString(s[stop:])
				if !isS(r) {
					break
				}
				stop += w
			}
		}
		if from < start {
			dst = append(dst, addedSpan{-1, from, start})
		}
		dst = append(dst, addedSpan{t, start, stop})
		from = stop
		if i < stop {
			i = stop
		}
	}
	if from < len(s) {
		dst = append(dst, addedSpan{-1, from, len(s)})
	}
	return dst
}

func endsWithWord(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return isWord(r)
}

func startsWithWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWord(r)
}
