package grammar

import (
	"fmt"
	"regexp/syntax"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// jsonChar adds the edges of one character of JSON string content from
// state from to state to: any valid UTF-8 character but '"', '\' and
// control characters, or an escape. Escapes of surrogates (\uD800-\uDFFF)
// are not produced: a validator counts a surrogate pair as one character,
// this automaton would count two, and a lone one is not text.
func (n *nfa) jsonChar(from, to int32, escapes bool) {
	n.edge(from, 0x20, 0x21, to)
	n.edge(from, 0x23, 0x5B, to)
	n.edge(from, 0x5D, 0x7F, to)
	n.utf8Multi(from, to)
	if !escapes {
		return
	}
	e := n.state()
	n.edge(from, '\\', '\\', e)
	for _, c := range []byte{'"', '\\', '/', 'b', 'f', 'n', 'r', 't'} {
		n.edge(e, c, c, to)
	}
	ua, ub, ubr, uc, ud := n.state(), n.state(), n.state(), n.state(), n.state()
	n.edge(e, 'u', 'u', ua)
	hex(n, ub, uc)
	n.edge(ubr, '0', '7', uc)
	hex(n, uc, ud)
	hex(n, ud, to)
	n.edge(ua, '0', '9', ub)
	n.edge(ua, 'a', 'c', ub)
	n.edge(ua, 'A', 'C', ub)
	n.edge(ua, 'e', 'f', ub)
	n.edge(ua, 'E', 'F', ub)
	n.edge(ua, 'd', 'd', ubr)
	n.edge(ua, 'D', 'D', ubr)
}

func hex(n *nfa, from, to int32) {
	n.edge(from, '0', '9', to)
	n.edge(from, 'a', 'f', to)
	n.edge(from, 'A', 'F', to)
}

// utf8Multi adds the edges of any valid multi-byte UTF-8 character.
func (n *nfa) utf8Multi(from, to int32) {
	c1, c2, c3 := n.state(), n.state(), n.state()
	n.edge(c1, 0x80, 0xBF, to)
	n.edge(c2, 0x80, 0xBF, c1)
	n.edge(c3, 0x80, 0xBF, c2)
	n.edge(from, 0xC2, 0xDF, c1)
	xe0, xed, xf0, xf4 := n.state(), n.state(), n.state(), n.state()
	n.edge(from, 0xE0, 0xE0, xe0)
	n.edge(xe0, 0xA0, 0xBF, c1)
	n.edge(from, 0xE1, 0xEC, c2)
	n.edge(from, 0xED, 0xED, xed)
	n.edge(xed, 0x80, 0x9F, c1)
	n.edge(from, 0xEE, 0xEF, c2)
	n.edge(from, 0xF0, 0xF0, xf0)
	n.edge(xf0, 0x90, 0xBF, c2)
	n.edge(from, 0xF1, 0xF3, c3)
	n.edge(from, 0xF4, 0xF4, xf4)
	n.edge(xf4, 0x80, 0x8F, c2)
}

// stringLen is a JSON string ('"' included) of minLen to maxLen characters
// (maxLen < 0: unbounded).
func (n *nfa) stringLen(minLen, maxLen int) frag {
	in := n.state()
	out := n.state()
	p := n.state()
	n.edge(in, '"', '"', p)
	for k := 0; ; k++ {
		if n.full {
			return frag{in, out}
		}
		if k >= minLen {
			n.edge(p, '"', '"', out)
			if maxLen < 0 {
				n.jsonChar(p, p, true)
				break
			}
			if k >= maxLen {
				break
			}
		}
		nx := n.state()
		n.jsonChar(p, nx, true)
		p = nx
	}
	return frag{in, out}
}

// runeRange adds the edges (and inner states) that read one character in
// [lo, hi] as JSON string content: '"', '\' and control characters as
// escapes, the rest as UTF-8.
func (n *nfa) runeRange(from, to int32, lo, hi rune) {
	if hi > unicode.MaxRune {
		hi = unicode.MaxRune
	}
	for lo <= hi {
		switch {
		case lo < 0x20:
			n.seqEdges(from, to, []byte{'\\', 'u', '0', '0', "0123456789abcdef"[lo>>4], "0123456789abcdef"[lo&15]})
			lo++
		case lo == '"' || lo == '\\':
			n.seqEdges(from, to, []byte{'\\', byte(lo)})
			lo++
		case lo >= 0xD800 && lo <= 0xDFFF:
			lo = 0xE000
		default:
			end := hi
			for _, stop := range []rune{'"' - 1, '\\' - 1, 0xD7FF} {
				if lo <= stop && stop < end {
					end = stop
				}
			}
			n.utf8Span(from, to, lo, end)
			lo = end + 1
		}
	}
}

func (n *nfa) seqEdges(from, to int32, bs []byte) {
	cur := from
	for i, b := range bs {
		nx := to
		if i < len(bs)-1 {
			nx = n.state()
		}
		n.edge(cur, b, b, nx)
		cur = nx
	}
}

// utf8Span adds the byte-range sequences that encode exactly the
// characters in [lo, hi] (no surrogates inside).
func (n *nfa) utf8Span(from, to int32, lo, hi rune) {
	if lo > hi {
		return
	}
	for _, m := range []rune{0x7F, 0x7FF, 0xFFFF} {
		if lo <= m && m < hi {
			n.utf8Span(from, to, lo, m)
			n.utf8Span(from, to, m+1, hi)
			return
		}
	}
	if hi <= 0x7F {
		n.edge(from, byte(lo), byte(hi), to)
		return
	}
	size := utf8.RuneLen(lo)
	for i := 1; i < size; i++ {
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				n.utf8Span(from, to, lo, lo|m)
				n.utf8Span(from, to, (lo|m)+1, hi)
				return
			}
			if hi&m != m {
				n.utf8Span(from, to, lo, (hi&^m)-1)
				n.utf8Span(from, to, hi&^m, hi)
				return
			}
		}
	}
	var a, b [4]byte
	utf8.EncodeRune(a[:], lo)
	utf8.EncodeRune(b[:], hi)
	cur := from
	for i := 0; i < size; i++ {
		nx := to
		if i < size-1 {
			nx = n.state()
		}
		n.edge(cur, a[i], b[i], nx)
		cur = nx
	}
}

// regexpFrag compiles a regular expression (Go's RE2 syntax, the common
// subset of ECMA-262 that JSON Schema patterns use) into a fragment over
// JSON string content. JSON Schema patterns are not anchored: a pattern
// without ^ (or $) matches anywhere, so any text may precede (or follow).
func (c *compiler) regexpFrag(pattern, keyword, path string) (frag, error) {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return frag{}, &UnsupportedError{Keyword: keyword, Path: path, Reason: "pattern outside the supported regular-expression subset: " + err.Error()}
	}
	re = re.Simplify()
	var branches []*syntax.Regexp
	if re.Op == syntax.OpAlternate {
		branches = re.Sub
	} else {
		branches = []*syntax.Regexp{re}
	}
	n := c.n
	var fs []frag
	for _, b := range branches {
		subs := []*syntax.Regexp{b}
		if b.Op == syntax.OpConcat {
			subs = b.Sub
		}
		begin, end := false, false
		if len(subs) > 0 && subs[0].Op == syntax.OpBeginText {
			begin, subs = true, subs[1:]
		}
		if len(subs) > 0 && subs[len(subs)-1].Op == syntax.OpEndText {
			end, subs = true, subs[:len(subs)-1]
		}
		var parts []frag
		if !begin {
			parts = append(parts, n.anyText())
		}
		for _, s := range subs {
			f, err := c.reFrag(s, keyword, path)
			if err != nil {
				return frag{}, err
			}
			parts = append(parts, f)
		}
		if !end {
			parts = append(parts, n.anyText())
		}
		fs = append(fs, n.seq(parts...))
	}
	return n.alt(fs...), nil
}

// anyText is any JSON string content.
func (n *nfa) anyText() frag {
	s := n.state()
	n.jsonChar(s, s, true)
	return frag{s, s}
}

func (c *compiler) reFrag(re *syntax.Regexp, keyword, path string) (frag, error) {
	n := c.n
	if n.full {
		return n.none(), nil
	}
	switch re.Op {
	case syntax.OpNoMatch:
		return n.none(), nil
	case syntax.OpEmptyMatch:
		return n.empty(), nil
	case syntax.OpLiteral:
		in := n.state()
		cur := in
		for _, r := range re.Rune {
			nx := n.state()
			if re.Flags&syntax.FoldCase != 0 {
				for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
					n.runeRange(cur, nx, f, f)
				}
			}
			n.runeRange(cur, nx, r, r)
			cur = nx
		}
		return frag{in, cur}, nil
	case syntax.OpCharClass:
		in, out := n.state(), n.state()
		for i := 0; i+1 < len(re.Rune); i += 2 {
			n.runeRange(in, out, re.Rune[i], re.Rune[i+1])
		}
		return frag{in, out}, nil
	case syntax.OpAnyCharNotNL:
		in, out := n.state(), n.state()
		n.runeRange(in, out, 0, '\n'-1)
		n.runeRange(in, out, '\n'+1, unicode.MaxRune)
		return frag{in, out}, nil
	case syntax.OpAnyChar:
		in, out := n.state(), n.state()
		n.runeRange(in, out, 0, unicode.MaxRune)
		return frag{in, out}, nil
	case syntax.OpCapture:
		return c.reFrag(re.Sub[0], keyword, path)
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		f, err := c.reFrag(re.Sub[0], keyword, path)
		if err != nil {
			return frag{}, err
		}
		switch re.Op {
		case syntax.OpStar:
			return n.star(f), nil
		case syntax.OpQuest:
			return n.opt(f), nil
		}
		n.eps(f.out, f.in)
		return f, nil
	case syntax.OpConcat, syntax.OpAlternate:
		var fs []frag
		for _, s := range re.Sub {
			f, err := c.reFrag(s, keyword, path)
			if err != nil {
				return frag{}, err
			}
			fs = append(fs, f)
		}
		if re.Op == syntax.OpConcat {
			return n.seq(fs...), nil
		}
		return n.alt(fs...), nil
	}
	return frag{}, &UnsupportedError{Keyword: keyword, Path: path, Reason: "regular-expression operator " + re.Op.String() + " (anchors only at the ends; no word boundaries)"}
}

// str is a string: minLength/maxLength, or a format, or a pattern.
func (c *compiler) str(s *object, path string) (frag, error) {
	minL, _, err := intValue(s, "minLength", path)
	if err != nil {
		return frag{}, err
	}
	maxL, hasMax, err := intValue(s, "maxLength", path)
	if err != nil {
		return frag{}, err
	}
	if !hasMax {
		maxL = -1
	}
	fv, hasFormat := s.get("format")
	pv, hasPattern := s.get("pattern")
	if hasFormat || hasPattern {
		for _, k := range []string{"minLength", "maxLength"} {
			if has(s, k) {
				return frag{}, &UnsupportedError{Keyword: k, Path: path, Reason: "alongside format or pattern"}
			}
		}
		if hasFormat && hasPattern {
			return frag{}, &UnsupportedError{Keyword: "pattern", Path: path, Reason: "alongside format"}
		}
		var re, kw string
		if hasFormat {
			name, ok := fv.(string)
			if !ok {
				return frag{}, &SchemaError{Path: ptr(path, "format"), Msg: "must be a string"}
			}
			if re, ok = formats[name]; !ok {
				return frag{}, &UnsupportedError{Keyword: "format", Path: path, Reason: fmt.Sprintf("format %q (supported: %s)", name, strings.Join(FormatNames(), ", "))}
			}
			kw = "format"
		} else {
			p, ok := pv.(string)
			if !ok {
				return frag{}, &SchemaError{Path: ptr(path, "pattern"), Msg: "must be a string"}
			}
			re, kw = p, "pattern"
		}
		f, err := c.regexpFrag(re, kw, path)
		if err != nil {
			return frag{}, err
		}
		return c.n.seq(c.n.lit(`"`), f, c.n.lit(`"`)), nil
	}
	if hasMax && maxL < minL {
		return c.n.none(), nil
	}
	if int64(max(minL, maxL))*14 > int64(c.opts.Limits.NFAStates) {
		return frag{}, &LimitError{Limit: "nfa states", Max: int64(c.opts.Limits.NFAStates), Path: path}
	}
	return c.n.stringLen(minL, maxL), nil
}

// formats are the enforced string formats, as regular expressions over
// the string's text. Each is a subset of what the format allows (dates
// with days by month, February to the 28th; email without quoted local
// parts or IP literals; uri: http and https URLs with a host name).
var formats = map[string]string{
	"date":      `^` + dateRE + `$`,
	"time":      `^` + timeRE + `$`,
	"date-time": `^` + dateRE + `T` + timeRE + `$`,
	"uuid":      `^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`,
	"email":     `^[A-Za-z0-9_+-]{1,30}(?:\.[A-Za-z0-9_+-]{1,15}){0,2}@` + label + `(?:\.` + label + `){1,3}$`,
	"hostname":  `^` + label + `(?:\.` + label + `){0,3}$`,
	"uri":       `^https?://` + label + `(?:\.` + label + `){0,3}(?::[0-9]{1,5})?(?:/` + uriChars + `)*(?:\?` + uriChars + `)?(?:#` + uriChars + `)?$`,
	"ipv4":      `^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$`,
}

const (
	dateRE = `[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))`
	timeRE = `(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])`
	label  = `[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?`
	// uriChars is a path, query or fragment without "/" ... "#" structure
	// of its own: unreserved and sub-delimiter characters, ":", "@" and
	// percent escapes.
	uriChars = `(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*`
)

// FormatNames lists the string formats Compile enforces.
func FormatNames() []string {
	var ns []string
	for k := range formats {
		ns = append(ns, k)
	}
	sort.Strings(ns)
	return ns
}
