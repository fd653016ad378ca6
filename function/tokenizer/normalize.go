package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// nstr is a piece of normalized text that remembers where each of its bytes
// came from in the original text, as the library's NormalizedString does, so
// that tokens report offsets into what the caller passed.
type nstr struct {
	s string
	// align[i] is the original [start, end) byte range of the character
	// that byte i of s came from. nil: s is the original text itself,
	// starting at byte base.
	align [][2]int32
	base  int
	// first: the piece starts at the original text's start (Metaspace's
	// prepend_scheme "first" asks).
	first bool
}

// orig is the original byte range of s[i:j] (i < j), widened to whole
// characters as the library's per-byte alignments are (a token of some of
// a character's bytes spans all of it).
func (n *nstr) orig(i, j int) (int, int) {
	if n.align == nil {
		for i > 0 && !utf8.RuneStart(n.s[i]) {
			i--
		}
		for j < len(n.s) && !utf8.RuneStart(n.s[j]) {
			j++
		}
		return n.base + i, n.base + j
	}
	return int(n.align[i][0]), int(n.align[j-1][1])
}

// slice is s[i:j] with its alignment.
func (n *nstr) slice(i, j int) nstr {
	out := nstr{s: n.s[i:j], base: n.base + i, first: n.first && i == 0}
	if n.align != nil {
		out.align = n.align[i:j]
	}
	return out
}

// aligned returns the alignment, made explicit if it was the identity.
func (n *nstr) aligned() [][2]int32 {
	if n.align != nil {
		return n.align
	}
	a := make([][2]int32, len(n.s))
	for i := 0; i < len(n.s); {
		_, w := utf8.DecodeRuneInString(n.s[i:])
		for k := range w {
			a[i+k] = [2]int32{int32(n.base + i), int32(n.base + i + w)}
		}
		i += w
	}
	return a
}

// change is one character of a transformation, as the library's
// NormalizedString::transform takes them: the new character and how many
// characters it adds (1: inserted after the previous one) or, negative,
// replaces beyond the one it stands for.
type change struct {
	r rune
	n int
}

// transform rebuilds n from a list of changes over all its characters,
// carrying alignments as the library does: a replacing character takes the
// alignment of the character it replaces, an inserted one that of the
// character before it.
func (n *nstr) transform(chs []change) nstr {
	src := n.aligned()
	var b strings.Builder
	b.Grow(len(n.s))
	align := make([][2]int32, 0, len(n.s))
	off := 0 // byte offset in n.s of the next original character
	for _, c := range chs {
		var a [2]int32
		if c.n > 0 {
			if off > 0 {
				a = src[off-1]
			} else if len(src) > 0 {
				a = [2]int32{src[0][0], src[0][0]}
			}
		} else {
			if off < len(src) {
				a = src[off]
			} else if len(src) > 0 {
				a = src[len(src)-1]
			}
			_, w := utf8.DecodeRuneInString(n.s[off:])
			off += w
			for k := 0; k < -c.n && off < len(n.s); k++ {
				_, w := utf8.DecodeRuneInString(n.s[off:])
				off += w
			}
		}
		w := utf8.RuneLen(c.r)
		if w < 0 {
			c.r, w = utf8.RuneError, 3
		}
		b.WriteRune(c.r)
		for range w {
			align = append(align, a)
		}
	}
	return nstr{s: b.String(), align: align, base: n.base, first: n.first}
}

// normalizer is one of tokenizer.json's normalizers.
type normalizer interface {
	normalize(n nstr) nstr
}

type normSeq []normalizer

func (q normSeq) normalize(n nstr) nstr {
	for _, x := range q {
		n = x.normalize(n)
	}
	return n
}

// unicodeNorm is NFC, NFD, NFKC or NFKD.
type unicodeNorm struct{ form norm.Form }

func (u unicodeNorm) normalize(n nstr) nstr {
	if u.form.IsNormalString(n.s) {
		return n
	}
	if out, ok := u.aligned(n); ok {
		return out
	}
	// Not reached for text the steps below model; should they ever differ
	// from the form's own output, that output wins, mapped segment by
	// segment onto the original characters in order.
	var chs []change
	for i := 0; i < len(n.s); {
		k := u.form.NextBoundaryInString(n.s[i:], true)
		if k <= 0 {
			k = len(n.s) - i
		}
		seg := n.s[i : i+k]
		i += k
		out := u.form.String(seg)
		old, nw := []rune(seg), []rune(out)
		for i, r := range nw {
			switch {
			case i >= len(old):
				chs = append(chs, change{r, 1})
			case i == len(nw)-1:
				chs = append(chs, change{r, -(len(old) - 1 - i)})
			default:
				chs = append(chs, change{r, 0})
			}
		}
	}
	return n.transform(chs)
}

// aligned normalizes as the library's unicode-normalization does, keeping
// its account of each output character against the input, which the
// library then applies in order (NormalizedString::transform): every
// character decomposed on its own (its first part replacing it, the others
// inserted after), combining marks put in canonical order (their accounts
// move with them), then for NFC and NFKC composed (a composite takes over
// what it absorbs, one character fewer).
func (u unicodeNorm) aligned(n nstr) (nstr, bool) {
	decomp, compose := norm.NFD, false
	switch u.form {
	case norm.NFKC:
		decomp, compose = norm.NFKD, true
	case norm.NFKD:
		decomp = norm.NFKD
	case norm.NFC:
		compose = true
	}
	cs := make([]change, 0, len(n.s)+8)
	for _, r := range n.s {
		for k, d := range []rune(decomp.String(string(r))) {
			cs = append(cs, change{d, min(k, 1)})
		}
	}
	ccc := func(r rune) uint8 { return norm.NFD.PropertiesString(string(r)).CCC() }
	for i := 0; i < len(cs); {
		if ccc(cs[i].r) == 0 {
			i++
			continue
		}
		j := i
		for j < len(cs) && ccc(cs[j].r) != 0 {
			j++
		}
		run := cs[i:j]
		sort.SliceStable(run, func(a, b int) bool { return ccc(run[a].r) < ccc(run[b].r) })
		i = j
	}
	if compose {
		out := cs[:0]
		starter := -1
		for _, c := range cs {
			cc := ccc(c.r)
			if starter >= 0 {
				last := len(out) - 1
				if last == starter || ccc(out[last].r) < cc {
					if comp := norm.NFC.String(string([]rune{out[starter].r, c.r})); utf8.RuneCountInString(comp) == 1 {
						out[starter].r, _ = utf8.DecodeRuneInString(comp)
						out[starter].n += c.n - 1
						continue
					}
				}
			}
			if cc == 0 {
				starter = len(out)
			}
			out = append(out, c)
		}
		cs = out
	}
	var b strings.Builder
	for _, c := range cs {
		b.WriteRune(c.r)
	}
	if b.String() != u.form.String(n.s) {
		return nstr{}, false
	}
	return n.transform(cs), true
}

// lowercase is the Lowercase normalizer (Rust's char::to_lowercase).
type lowercase struct{}

func (lowercase) normalize(n nstr) nstr {
	if !hasUpper(n.s) {
		return n
	}
	var chs []change
	for _, r := range n.s {
		if r == 'İ' {
			chs = append(chs, change{'i', 0}, change{'\u0307', 1})
			continue
		}
		chs = append(chs, change{unicode.ToLower(r), 0})
	}
	return n.transform(chs)
}

func hasUpper(s string) bool {
	for _, r := range s {
		if unicode.ToLower(r) != r {
			return true
		}
	}
	return false
}

// prepend is the Prepend normalizer: its text before a non-empty piece.
type prepend struct{ s string }

func (p prepend) normalize(n nstr) nstr {
	if n.s == "" {
		return n
	}
	var chs []change
	i := 0
	for _, r := range p.s {
		if i == 0 {
			chs = append(chs, change{r, 0})
		} else {
			chs = append(chs, change{r, 1})
		}
		i++
	}
	first, w := utf8.DecodeRuneInString(n.s)
	chs = append(chs, change{first, 1})
	rest := n.slice(w, len(n.s))
	head := n.slice(0, w)
	h := head.transform(chs)
	return concat(h, rest)
}

// concat joins two adjacent pieces of one text.
func concat(a, b nstr) nstr {
	if b.s == "" {
		return a
	}
	return nstr{s: a.s + b.s, align: append(append(make([][2]int32, 0, len(a.s)+len(b.s)), a.aligned()...), b.aligned()...), base: a.base, first: a.first}
}

// replace is the Replace normalizer with a literal pattern (the library
// also takes a regex; Load refuses that by name).
type replace struct{ pat, content string }

func (p replace) normalize(n nstr) nstr {
	if !strings.Contains(n.s, p.pat) {
		return n
	}
	src := n.aligned()
	var b strings.Builder
	b.Grow(len(n.s) + len(n.s)/2)
	align := make([][2]int32, 0, len(n.s)+len(n.s)/2)
	s := n.s
	for off := 0; ; {
		i := strings.Index(s[off:], p.pat)
		if i < 0 {
			b.WriteString(s[off:])
			align = append(align, src[off:]...)
			break
		}
		i += off
		b.WriteString(s[off:i])
		align = append(align, src[off:i]...)
		// The replacement's characters take, in order, the alignments of
		// the pattern's characters; any beyond them, the last one's.
		pr := p.pat
		j := i
		for _, r := range p.content {
			var a [2]int32
			if pr != "" {
				_, w := utf8.DecodeRuneInString(pr)
				a = src[j]
				j += w
				pr = pr[w:]
			} else {
				a = src[j-1]
			}
			b.WriteRune(r)
			for range utf8.RuneLen(r) {
				align = append(align, a)
			}
		}
		off = i + len(p.pat)
	}
	return nstr{s: b.String(), align: align, base: n.base, first: n.first}
}

// stripNorm is the Strip normalizer: whitespace off either end.
type stripNorm struct{ left, right bool }

func (p stripNorm) normalize(n nstr) nstr {
	i, j := 0, len(n.s)
	if p.left {
		for i < j {
			r, w := utf8.DecodeRuneInString(n.s[i:])
			if !unicode.IsSpace(r) {
				break
			}
			i += w
		}
	}
	if p.right {
		for j > i {
			r, w := utf8.DecodeLastRuneInString(n.s[i:j])
			if !unicode.IsSpace(r) {
				break
			}
			j -= w
		}
	}
	out := n.slice(i, j)
	out.first = n.first
	return out
}
