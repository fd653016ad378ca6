package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// preTokenizer is one of tokenizer.json's pre-tokenizers: it splits
// normalized pieces into the words the model encodes one by one.
type preTokenizer interface {
	preTokenize(in []nstr) []nstr
}

type preSeq []preTokenizer

func (q preSeq) preTokenize(in []nstr) []nstr {
	for _, p := range q {
		in = p.preTokenize(in)
	}
	return in
}

// behavior is a SplitDelimiterBehavior.
type behavior uint8

const (
	isolated behavior = iota
	removed
	mergedWithPrevious
	mergedWithNext
	contiguous
)

var behaviors = map[string]behavior{
	"Isolated": isolated, "Removed": removed, "MergedWithPrevious": mergedWithPrevious,
	"MergedWithNext": mergedWithNext, "Contiguous": contiguous,
}

// split is the Split pre-tokenizer: a literal or one of the known regexes.
type split struct {
	literal  string
	scan     scanner
	behavior behavior
	invert   bool
}

func (p split) preTokenize(in []nstr) []nstr {
	out := make([]nstr, 0, len(in)*4)
	var spans [][2]int
	for i := range in {
		n := &in[i]
		spans = spans[:0]
		if p.scan != nil {
			spans = p.scan(n.s, spans)
		} else if p.literal != "" {
			for off := 0; ; {
				k := strings.Index(n.s[off:], p.literal)
				if k < 0 {
					break
				}
				spans = append(spans, [2]int{off + k, off + k + len(p.literal)})
				off += k + len(p.literal)
			}
		}
		out = splitBy(out, n, spans, p.behavior, p.invert)
	}
	return out
}

// splitBy appends n's pieces, given the spans of the pattern's matches (in
// order, not overlapping), as the library's NormalizedString::split does;
// empty pieces are dropped.
func splitBy(out []nstr, n *nstr, spans [][2]int, b behavior, invert bool) []nstr {
	type part struct {
		i, j  int
		match bool
	}
	parts := make([]part, 0, 2*len(spans)+1)
	last := 0
	for _, sp := range spans {
		if sp[0] > last {
			parts = append(parts, part{last, sp[0], invert})
		}
		if sp[1] > sp[0] {
			parts = append(parts, part{sp[0], sp[1], !invert})
		}
		last = sp[1]
	}
	if last < len(n.s) {
		parts = append(parts, part{last, len(n.s), invert})
	}
	keep := make([]part, 0, len(parts))
	switch b {
	case isolated:
		keep = parts
	case removed:
		for _, p := range parts {
			if !p.match {
				keep = append(keep, p)
			}
		}
	case contiguous:
		prev := false
		for k, p := range parts {
			if k > 0 && p.match == prev {
				keep[len(keep)-1].j = p.j
			} else {
				keep = append(keep, p)
			}
			prev = p.match
		}
	case mergedWithPrevious:
		prev := false
		for _, p := range parts {
			if p.match && !prev && len(keep) > 0 {
				keep[len(keep)-1].j = p.j
			} else {
				keep = append(keep, p)
			}
			prev = p.match
		}
	case mergedWithNext:
		prev := false
		for k := len(parts) - 1; k >= 0; k-- {
			p := parts[k]
			if p.match && !prev && len(keep) > 0 {
				keep[len(keep)-1].i = p.i
			} else {
				keep = append(keep, p)
			}
			prev = p.match
		}
		for a, z := 0, len(keep)-1; a < z; a, z = a+1, z-1 {
			keep[a], keep[z] = keep[z], keep[a]
		}
	}
	for _, p := range keep {
		if p.j > p.i {
			out = append(out, n.slice(p.i, p.j))
		}
	}
	return out
}

// byteLevel is the ByteLevel pre-tokenizer. The model works on raw bytes
// (Load maps the vocabulary back through GPT-2's byte-to-character table),
// so all that is left here is the optional prefix space and GPT-2's regex.
type byteLevel struct{ addPrefixSpace, useRegex bool }

func (p byteLevel) preTokenize(in []nstr) []nstr {
	if p.addPrefixSpace {
		for i := range in {
			if !strings.HasPrefix(in[i].s, " ") {
				in[i] = prepend{" "}.normalize(in[i])
			}
		}
	}
	if !p.useRegex {
		return in
	}
	return split{scan: scanGPT2}.preTokenize(in)
}

// metaspace is the Metaspace pre-tokenizer.
type metaspace struct {
	rep     string
	prepend string // always, first or never
	split   bool
}

func (p metaspace) preTokenize(in []nstr) []nstr {
	out := make([]nstr, 0, len(in)*4)
	var spans [][2]int
	for _, n := range in {
		n = replace{" ", p.rep}.normalize(n)
		if !strings.HasPrefix(n.s, p.rep) && (p.prepend == "always" || p.prepend == "first" && n.first) {
			n = prepend{p.rep}.normalize(n)
		}
		if !p.split {
			if n.s != "" {
				out = append(out, n)
			}
			continue
		}
		spans = spans[:0]
		for off := 0; ; {
			k := strings.Index(n.s[off:], p.rep)
			if k < 0 {
				break
			}
			spans = append(spans, [2]int{off + k, off + k + len(p.rep)})
			off += k + len(p.rep)
		}
		out = splitBy(out, &n, spans, mergedWithNext, false)
	}
	return out
}

// whitespaceSplit is WhitespaceSplit: words between whitespace.
type whitespaceSplit struct{}

func (whitespaceSplit) preTokenize(in []nstr) []nstr {
	var out []nstr
	for i := range in {
		n := &in[i]
		var spans [][2]int
		for j := 0; j < len(n.s); {
			r, w := utf8.DecodeRuneInString(n.s[j:])
			if unicode.IsSpace(r) {
				spans = append(spans, [2]int{j, j + w})
			}
			j += w
		}
		out = splitBy(out, n, spans, removed, false)
	}
	return out
}

// whitespace is the Whitespace pre-tokenizer: \w+|[^\w\s]+.
type whitespace struct{}

// isWord is \w as Unicode defines it (UTS #18), which Oniguruma and Rust's
// regex both follow: Alphabetic, marks, decimal digits, connector
// punctuation and the zero-width joiners.
func isWord(r rune) bool {
	if r < utf8.RuneSelf {
		return r|0x20 >= 'a' && r|0x20 <= 'z' || r >= '0' && r <= '9' || r == '_'
	}
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.In(r, unicode.Nd, unicode.Nl, unicode.Pc, unicode.Other_Alphabetic, unicode.Join_Control)
}

func (whitespace) preTokenize(in []nstr) []nstr {
	var out []nstr
	for i := range in {
		n := &in[i]
		var spans [][2]int
		for j := 0; j < len(n.s); {
			r, w := at(n.s, j)
			switch {
			case isWord(r):
				e := run(n.s, j, isWord)
				spans = append(spans, [2]int{j, e})
				j = e
			case !isS(r):
				e := run(n.s, j, func(r rune) bool { return !isWord(r) && !isS(r) })
				spans = append(spans, [2]int{j, e})
				j = e
			default:
				j += w
			}
		}
		out = splitBy(out, n, spans, removed, true)
	}
	return out
}
