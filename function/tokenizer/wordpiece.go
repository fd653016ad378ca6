package tokenizer

import (
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// wordPiece is the BERT family's pipeline: BertNormalizer, BertPreTokenizer
// and the WordPiece model, which work on characters rather than bytes.
type wordPiece struct {
	vocab    map[string]int32
	unk      int64
	prefix   string
	maxChars int

	clean, chinese, stripAccents, lowercase bool

	// The WordPiece decoder's prefix and cleanup.
	decPrefix string
	cleanup   bool
}

func (t *Tokenizer) loadWordPiece(f *fileJSON) error {
	m := &f.Model
	w := &wordPiece{prefix: "##", maxChars: 100}
	if m.ContinuingSubwordPrefix != nil {
		w.prefix = strings.Clone(*m.ContinuingSubwordPrefix)
	}
	if m.MaxInputCharsPerWord > 0 {
		w.maxChars = m.MaxInputCharsPerWord
	}
	vocab, pieces, _, err := readVocab(m.Vocab, nil)
	if err != nil {
		return fmt.Errorf("WordPiece %w", err)
	}
	w.vocab, t.pieces = vocab, pieces
	unkTok := ""
	if m.UnkToken != nil {
		unkTok = *m.UnkToken
	}
	unk, ok := w.vocab[unkTok]
	if !ok {
		return fmt.Errorf("unk_token %q is not in the vocabulary", unkTok)
	}
	w.unk = int64(unk)

	n, err := parseComponent(f.Normalizer, "normalizer")
	if err != nil {
		return err
	}
	switch {
	case n == nil:
	case n.Type == "BertNormalizer":
		w.clean, w.chinese, w.lowercase = n.CleanText, n.HandleChineseChars, n.Lowercase
		w.stripAccents = n.Lowercase // the library's default: strip when lowercasing
		if n.StripAccents != nil {
			w.stripAccents = *n.StripAccents
		}
	default:
		return fmt.Errorf("normalizer %q is not supported with WordPiece (BertNormalizer is)", n.Type)
	}
	p, err := parseComponent(f.PreTokenizer, "pre_tokenizer")
	if err != nil {
		return err
	}
	if p != nil && p.Type != "BertPreTokenizer" {
		return fmt.Errorf("pre_tokenizer %q is not supported with WordPiece (BertPreTokenizer is)", p.Type)
	}
	t.wp = w
	return nil
}

// nchar is a normalized character and the index of the original character
// it came from.
type nchar struct {
	r    rune
	orig int
}

// encodeStretch normalizes, pre-tokenizes and encodes text between added
// tokens; base is the stretch's first character in the whole text.
func (w *wordPiece) encodeStretch(runes []rune, base int, out []token) []token {
	chars := w.normalize(runes, base)
	// BertPreTokenizer: whitespace separates words and is dropped; each
	// punctuation character is a word of its own.
	word := chars[:0:0]
	flush := func() {
		if len(word) > 0 {
			out = w.encodeWord(word, out)
			word = word[:0]
		}
	}
	for _, c := range chars {
		switch {
		case unicode.IsSpace(c.r):
			flush()
		case isPunct(c.r):
			flush()
			out = w.encodeWord([]nchar{c}, out)
		default:
			word = append(word, c)
		}
	}
	flush()
	return out
}

// normalize applies BertNormalizer, keeping each character's origin.
func (w *wordPiece) normalize(runes []rune, base int) []nchar {
	out := make([]nchar, 0, len(runes))
	var buf [8]rune
	for i, r := range runes {
		o := base + i
		if w.clean {
			if r == 0 || r == 0xFFFD || isControl(r) {
				continue
			}
			if isWhitespace(r) {
				r = ' '
			}
		}
		if w.chinese && isChinese(r) {
			out = append(out, nchar{' ', o}, nchar{r, o}, nchar{' ', o})
			continue
		}
		rs := append(buf[:0], r)
		if w.stripAccents {
			rs = rs[:0]
			for _, d := range norm.NFD.String(string(r)) {
				if !unicode.Is(unicode.Mn, d) {
					rs = append(rs, d)
				}
			}
		}
		for _, d := range rs {
			if w.lowercase {
				out = append(out, lower(d, o)...)
			} else {
				out = append(out, nchar{d, o})
			}
		}
	}
	return out
}

// lower lowercases as Rust's char::to_lowercase, which maps İ to two
// characters.
func lower(r rune, o int) []nchar {
	if r == 'İ' {
		return []nchar{{'i', o}, {'\u0307', o}}
	}
	return []nchar{{unicode.ToLower(r), o}}
}

// encodeWord encodes one word greedily, longest match first; a word with a
// piece not in the vocabulary, or longer than max_input_chars_per_word, is
// one unknown token.
func (w *wordPiece) encodeWord(word []nchar, out []token) []token {
	span := func(i, j int) (int, int) { return word[i].orig, word[j-1].orig + 1 }
	if len(word) > w.maxChars {
		s, e := span(0, len(word))
		return append(out, token{w.unk, s, e})
	}
	mark := len(out)
	var sb strings.Builder
	for start := 0; start < len(word); {
		end := len(word)
		found := false
		for ; start < end; end-- {
			sb.Reset()
			if start > 0 {
				sb.WriteString(w.prefix)
			}
			for _, c := range word[start:end] {
				sb.WriteRune(c.r)
			}
			if id, ok := w.vocab[sb.String()]; ok {
				s, e := span(start, end)
				out = append(out, token{int64(id), s, e})
				found = true
				break
			}
		}
		if !found {
			s, e := span(0, len(word))
			return append(out[:mark], token{w.unk, s, e})
		}
		start = end
	}
	return out
}

// appendDecoded is the WordPiece decoder's step for one token: a token
// after the first joins the text without its continuing-subword prefix, or
// else after a space; with cleanup, the library's clean_up_tokenization is
// applied to the token so made (" ." → "." and the like).
func (w *wordPiece) appendDecoded(text []byte, tok string, first bool) []byte {
	if !first {
		if rest, ok := strings.CutPrefix(tok, w.decPrefix); ok {
			tok = rest
		} else {
			tok = " " + tok
		}
	}
	if w.cleanup {
		tok = cleanupReplacer.Replace(tok)
	}
	return append(text, tok...)
}

// cleanupReplacer is the library's clean_up_tokenization, whose
// replacements it applies one after another; on one token with at most
// one leading space they never overlap, so one pass does the same.
var cleanupReplacer = strings.NewReplacer(" .", ".", " ?", "?", " !", "!", " ,", ",", " ' ", "'", " n't", "n't",
	" 'm", "'m", " do not", " don't", " 's", "'s", " 've", "'ve", " 're", "'re")

func isWhitespace(r rune) bool { return r == '\t' || r == '\n' || r == '\r' || unicode.IsSpace(r) }

// isControl is the library's "other" class (Cc, Cf, Cs, Co and unassigned),
// less tab, newline and carriage return.
func isControl(r rune) bool {
	if r == '\t' || r == '\n' || r == '\r' {
		return false
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Cs, unicode.Co) ||
		!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.C)
}

func isPunct(r rune) bool {
	return (r < 128 && (r >= '!' && r <= '/' || r >= ':' && r <= '@' || r >= '[' && r <= '`' || r >= '{' && r <= '~')) ||
		unicode.IsPunct(r)
}

func isChinese(r rune) bool {
	return r >= 0x4E00 && r <= 0x9FFF || r >= 0x3400 && r <= 0x4DBF || r >= 0x20000 && r <= 0x2A6DF ||
		r >= 0x2A700 && r <= 0x2B73F || r >= 0x2B740 && r <= 0x2B81F || r >= 0x2B920 && r <= 0x2CEAF ||
		r >= 0xF900 && r <= 0xFAFF || r >= 0x2F800 && r <= 0x2FA1F
}
