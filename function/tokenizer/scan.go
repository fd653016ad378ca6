package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// The Split regexes that byte-level files carry use lookahead (\s+(?!\S)),
// which Go's regexp lacks; each known pattern has a hand-written scanner
// that finds the same matches Oniguruma does (leftmost-first alternation,
// greedy repetition with backtracking), with Unicode classes: \s is
// U+0009–U+000D, U+0085 and the Z categories' spaces, \p{L} and \p{N} as
// Go's unicode tables have them.

// The patterns, exactly as tokenizer.json files spell them.
const (
	// GPT-2's, which the ByteLevel pre-tokenizer applies with use_regex.
	patGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// Qwen2/3's (digits one by one) and Llama 3's (runs of up to three).
	patQwen   = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	patLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// GPT-4o's o200k.
	patO200k = `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// scanner appends the [start, end) byte spans of the pattern's matches in s.
type scanner func(s string, dst [][2]int) [][2]int

// knownScanners maps each pattern to its scanner.
var knownScanners = map[string]scanner{
	patGPT2:   scanGPT2,
	patQwen:   func(s string, dst [][2]int) [][2]int { return scanLlama(s, dst, 1) },
	patLlama3: func(s string, dst [][2]int) [][2]int { return scanLlama(s, dst, 3) },
	patO200k:  scanO200k,
}

func at(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

func isL(r rune) bool {
	if r < utf8.RuneSelf {
		return r|0x20 >= 'a' && r|0x20 <= 'z'
	}
	return unicode.IsLetter(r)
}

func isN(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= '0' && r <= '9'
	}
	return unicode.IsNumber(r)
}

// isS is Oniguruma's Unicode \s.
func isS(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || r >= '\t' && r <= '\r'
	}
	return unicode.IsSpace(r)
}

// isX is [^\s\p{L}\p{N}].
func isX(r rune) bool { return r >= 0 && !isS(r) && !isL(r) && !isN(r) }

// isP is [^\r\n\p{L}\p{N}].
func isP(r rune) bool { return r >= 0 && r != '\r' && r != '\n' && !isL(r) && !isN(r) }

func isNL(r rune) bool { return r == '\r' || r == '\n' }

// isU is [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], isW [\p{Ll}\p{Lm}\p{Lo}\p{M}].
func isU(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= 'A' && r <= 'Z'
	}
	return unicode.In(r, unicode.Lu, unicode.Lt, unicode.Lm, unicode.Lo, unicode.M)
}

func isW(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= 'a' && r <= 'z'
	}
	return unicode.In(r, unicode.Ll, unicode.Lm, unicode.Lo, unicode.M)
}

// run is the end of the longest run from i of characters in class.
func run(s string, i int, class func(rune) bool) int {
	for i < len(s) {
		r, w := at(s, i)
		if !class(r) {
			break
		}
		i += w
	}
	return i
}

// runN is run with at most n characters.
func runN(s string, i int, class func(rune) bool, n int) int {
	for ; n > 0 && i < len(s); n-- {
		r, w := at(s, i)
		if !class(r) {
			break
		}
		i += w
	}
	return i
}

// contraction is the length of 's|'t|'re|'ve|'m|'ll|'d at i, or 0; fold:
// case-insensitively, as (?i:…) with Unicode case folding (ſ is s).
func contraction(s string, i int, fold bool) int {
	if i+1 >= len(s) || s[i] != '\'' {
		return 0
	}
	lower := func(c byte) byte {
		if fold && c >= 'A' && c <= 'Z' {
			return c | 0x20
		}
		return c
	}
	c := lower(s[i+1])
	switch c {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v', 'l':
		if i+2 < len(s) {
			want := byte('e')
			if c == 'l' {
				want = 'l'
			}
			if lower(s[i+2]) == want {
				return 3
			}
		}
	case 0xC5: // ſ, U+017F
		if fold && i+2 < len(s) && s[i+2] == 0xBF {
			return 3
		}
	}
	return 0
}

// spaces matches \s*[\r\n]+|\s+(?!\S)|\s+ at i (s[i] is whitespace); nl:
// whether the first alternative is in the pattern.
func spaces(s string, i int, nl bool) int {
	j, lastStart, lastNL := i, i, -1
	for j < len(s) {
		r, w := at(s, j)
		if !isS(r) {
			break
		}
		if isNL(r) {
			lastNL = j + w
		}
		lastStart = j
		j += w
	}
	switch {
	case nl && lastNL > 0:
		return lastNL
	case j == len(s):
		return j
	case lastStart > i:
		return lastStart // leave the last space to the word after it
	}
	return j
}

func scanGPT2(s string, dst [][2]int) [][2]int {
	for i := 0; i < len(s); {
		e := gpt2At(s, i)
		dst = append(dst, [2]int{i, e})
		i = e
	}
	return dst
}

func gpt2At(s string, i int) int {
	if n := contraction(s, i, false); n > 0 {
		return i + n
	}
	r0, w0 := at(s, i)
	k := i
	if r0 == ' ' {
		k = i + 1
	}
	rk, _ := at(s, k)
	switch {
	case isL(rk):
		return run(s, k, isL)
	case isN(rk):
		return run(s, k, isN)
	case isX(rk):
		return run(s, k, isX)
	}
	if isS(r0) {
		return spaces(s, i, false)
	}
	return i + w0
}

func scanLlama(s string, dst [][2]int, digits int) [][2]int {
	for i := 0; i < len(s); {
		e := llamaAt(s, i, digits)
		dst = append(dst, [2]int{i, e})
		i = e
	}
	return dst
}

func llamaAt(s string, i, digits int) int {
	if n := contraction(s, i, true); n > 0 {
		return i + n
	}
	r0, w0 := at(s, i)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isL(r0) {
		return run(s, i, isL)
	}
	if isP(r0) {
		if r1, _ := at(s, i+w0); isL(r1) {
			return run(s, i+w0, isL)
		}
	}
	// \p{N}{1,digits}
	if isN(r0) {
		return runN(s, i, isN, digits)
	}
	// ?[^\s\p{L}\p{N}]+[\r\n]*
	k := i
	if r0 == ' ' {
		k = i + 1
	}
	if rk, _ := at(s, k); isX(rk) {
		return run(s, run(s, k, isX), isNL)
	}
	if isS(r0) {
		return spaces(s, i, true)
	}
	return i + w0
}

func scanO200k(s string, dst [][2]int) [][2]int {
	for i := 0; i < len(s); {
		e := o200kAt(s, i)
		dst = append(dst, [2]int{i, e})
		i = e
	}
	return dst
}

func o200kAt(s string, i int) int {
	r0, w0 := at(s, i)
	starts := [2]int{i, -1}
	if isP(r0) {
		starts = [2]int{i + w0, i}
	}
	// [^\r\n\p{L}\p{N}]?U*W+contraction?
	for _, st := range starts {
		if st < 0 {
			continue
		}
		u := run(s, st, isU)
		if r, _ := at(s, u); isW(r) {
			e := run(s, u, isW)
			return e + contraction(s, e, true)
		}
		// U* gives back characters until one of them can be the W+.
		for k := u; k > st; {
			r, w := utf8.DecodeLastRuneInString(s[st:k])
			k -= w
			if isW(r) {
				e := k + w
				return e + contraction(s, e, true)
			}
		}
	}
	// [^\r\n\p{L}\p{N}]?U+W*contraction?
	for _, st := range starts {
		if st < 0 {
			continue
		}
		if u := run(s, st, isU); u > st {
			e := run(s, u, isW)
			return e + contraction(s, e, true)
		}
	}
	if isN(r0) {
		return runN(s, i, isN, 3)
	}
	k := i
	if r0 == ' ' {
		k = i + 1
	}
	if rk, _ := at(s, k); isX(rk) {
		return run(s, run(s, k, isX), func(r rune) bool { return isNL(r) || r == '/' })
	}
	if isS(r0) {
		return spaces(s, i, true)
	}
	return i + w0
}
