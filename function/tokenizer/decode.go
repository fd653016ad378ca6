package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	json "github.com/goccy/go-json"
)

// decoder is the file's decoder: a chain of steps over the tokens' strings,
// as the library's decode_chain runs them.
type decoder struct {
	steps []decStep
	wp    *wordPiece // the WordPiece decoder (or no decoder on a WordPiece model)
}

type decKind uint8

const (
	decByteLevel decKind = iota
	decReplace
	decByteFallback
	decFuse
	decStrip
	decMetaspace
)

type decStep struct {
	kind         decKind
	from, to     string // Replace; Metaspace's replacement in from
	content      rune   // Strip
	start, stop  int
	prependNever bool // Metaspace
}

func (t *Tokenizer) parseDecoder(raw json.RawMessage) error {
	c, err := parseComponent(raw, "decoder")
	if err != nil {
		return err
	}
	if c == nil {
		return nil // tokens joined by spaces
	}
	if c.Type == "WordPiece" {
		if t.wp == nil {
			return fmt.Errorf("decoder WordPiece on a model other than WordPiece is not supported")
		}
		t.wp.decPrefix, t.wp.cleanup = "##", true
		if c.Prefix != nil {
			t.wp.decPrefix = strings.Clone(*c.Prefix)
		}
		if c.Cleanup != nil {
			t.wp.cleanup = *c.Cleanup
		}
		t.dec.wp = t.wp
		return nil
	}
	if t.wp != nil {
		return fmt.Errorf("decoder %q on a WordPiece model is not supported", c.Type)
	}
	return t.parseDecStep(c)
}

func (t *Tokenizer) parseDecStep(c *component) error {
	switch c.Type {
	case "Sequence":
		for _, r := range c.Decoders {
			d, err := parseComponent(r, "decoder")
			if err != nil {
				return err
			}
			if d == nil {
				continue
			}
			if err := t.parseDecStep(d); err != nil {
				return err
			}
		}
		return nil
	case "ByteLevel":
		t.dec.steps = append(t.dec.steps, decStep{kind: decByteLevel})
	case "ByteFallback":
		t.dec.steps = append(t.dec.steps, decStep{kind: decByteFallback})
	case "Fuse":
		t.dec.steps = append(t.dec.steps, decStep{kind: decFuse})
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil || *c.Pattern.String == "" {
			return fmt.Errorf("decoder Replace with a regex pattern is not supported (a String pattern is)")
		}
		var content string
		if err := json.Unmarshal(c.Content, &content); err != nil {
			return fmt.Errorf("decoder Replace: content: %w", err)
		}
		t.dec.steps = append(t.dec.steps, decStep{kind: decReplace, from: strings.Clone(*c.Pattern.String), to: strings.Clone(content)})
	case "Strip":
		var content string
		if err := json.Unmarshal(c.Content, &content); err != nil || utf8.RuneCountInString(content) != 1 {
			return fmt.Errorf("decoder Strip: want one character as content")
		}
		r, _ := utf8.DecodeRuneInString(content)
		t.dec.steps = append(t.dec.steps, decStep{kind: decStrip, content: r, start: c.Start, stop: c.Stop})
	case "Metaspace":
		rep := strings.Clone(c.Replacement)
		if rep == "" {
			rep = "▁"
		}
		never := c.PrependScheme == "never" || c.PrependScheme == "" && c.AddPrefixSpace != nil && !*c.AddPrefixSpace
		t.dec.steps = append(t.dec.steps, decStep{kind: decMetaspace, from: rep, prependNever: never})
	default:
		return fmt.Errorf("decoder %q is not supported", c.Type)
	}
	return nil
}

// Decode turns ids back into text, special tokens left out, as the
// library's decode(ids, skip_special_tokens=true) does.
func (t *Tokenizer) Decode(ids []int64) string { return t.DecodeWith(ids, true) }

// DecodeWith turns ids back into text as the library's decode does; with
// skipSpecial the added tokens marked special are left out. Ids outside the
// vocabulary are left out.
func (t *Tokenizer) DecodeWith(ids []int64, skipSpecial bool) string {
	return string(t.decode(nil, ids, skipSpecial, false))
}

// AppendDecoded appends one token to text decoded so far (special tokens
// left out), so that a generator need not decode it all again: for
// WordPiece as Decode would; otherwise the bytes the token stands for
// (TokenBytes), the file's leading-space strip applied to the first. The
// text may end inside a UTF-8 character that a later token completes: a
// stream that shows text as it grows should use a StreamDecoder.
func (t *Tokenizer) AppendDecoded(text []byte, id int64) []byte {
	if id < 0 || id >= int64(len(t.pieces)) || t.IsSpecial(id) || (t.wp != nil && t.isAdded[id] != 0) {
		return text
	}
	if t.dec.wp != nil {
		return t.dec.wp.appendDecoded(text, t.pieces[id], len(text) == 0)
	}
	b := t.tokenBytes(id)
	if len(text) == 0 {
		b = t.stripStart(b)
	}
	return append(text, b...)
}

// stripStart applies the decoder's start-of-text rules to the first
// token's bytes: Strip's start after a Fuse, Metaspace's first token.
func (t *Tokenizer) stripStart(b []byte) []byte {
	for _, s := range t.dec.steps {
		switch {
		case s.kind == decStrip:
			for n := 0; n < s.start && len(b) > 0; n++ {
				r, w := utf8.DecodeRune(b)
				if r != s.content {
					break
				}
				b = b[w:]
			}
		case s.kind == decMetaspace && !s.prependNever && len(b) > 0 && b[0] == ' ':
			b = b[1:]
		}
	}
	return b
}

// decode appends the decoding of ids to dst; cont: the ids continue text
// already decoded (a stream's later pieces), so rules for the start of the
// text do not apply.
func (t *Tokenizer) decode(dst []byte, ids []int64, skipSpecial, cont bool) []byte {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= int64(len(t.pieces)) || skipSpecial && t.isAdded[id] == 2 {
			continue
		}
		if t.wp != nil && skipSpecial && t.isAdded[id] != 0 {
			continue // the BERT files' added tokens are all special in effect
		}
		toks = append(toks, t.pieces[id])
	}
	if t.dec.wp != nil {
		for i, tok := range toks {
			dst = t.dec.wp.appendDecoded(dst, tok, i == 0 && !cont)
		}
		return dst
	}
	if len(t.dec.steps) == 0 {
		if len(toks) > 0 && cont {
			dst = append(dst, ' ')
		}
		return append(dst, strings.Join(toks, " ")...)
	}
	fused := false
	for _, s := range t.dec.steps {
		switch s.kind {
		case decByteLevel:
			var b []byte
			for _, tok := range toks {
				b = append(b, byteLevelDecodeToken(tok)...)
			}
			toks = []string{lossy(b)}
			fused = true
		case decReplace:
			for i, tok := range toks {
				toks[i] = strings.ReplaceAll(tok, s.from, s.to)
			}
		case decByteFallback:
			toks = byteFallback(toks)
		case decFuse:
			toks = []string{strings.Join(toks, "")}
			fused = true
		case decStrip:
			for i, tok := range toks {
				toks[i] = stripChars(tok, s.content, s.start, s.stop, !(cont && fused && i == 0))
			}
		case decMetaspace:
			for i, tok := range toks {
				if i == 0 && !cont && !s.prependNever {
					toks[i] = strings.ReplaceAll(tok, s.from, "")
				} else {
					toks[i] = strings.ReplaceAll(tok, s.from, " ")
				}
			}
		}
	}
	for _, tok := range toks {
		dst = append(dst, tok...)
	}
	return dst
}

func stripChars(tok string, c rune, start, stop int, atStart bool) string {
	rs := []rune(tok)
	i, j := 0, len(rs)
	for n := 0; atStart && n < start && i < j && rs[i] == c; n++ {
		i++
	}
	for n := 0; n < stop && j > i && rs[j-1] == c; n++ {
		j--
	}
	return string(rs[i:j])
}

// byteFallback is the ByteFallback decoder: runs of <0xHH> tokens become
// their bytes if those are valid UTF-8, else one U+FFFD per byte.
func byteFallback(toks []string) []string {
	out := make([]string, 0, len(toks))
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			for range run {
				out = append(out, "\uFFFD")
			}
		}
		run = run[:0]
	}
	for _, tok := range toks {
		if b, ok := parseByteToken(tok); ok {
			run = append(run, b)
			continue
		}
		flush()
		out = append(out, tok)
	}
	flush()
	return out
}

// parseByteToken reads <0xHH>.
func parseByteToken(tok string) (byte, bool) {
	if len(tok) != 6 || !strings.HasPrefix(tok, "<0x") || tok[5] != '>' {
		return 0, false
	}
	h, ok1 := hexVal(tok[3])
	l, ok2 := hexVal(tok[4])
	return h<<4 | l, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// lossy is Rust's String::from_utf8_lossy: each maximal prefix of a valid
// sequence that breaks off becomes one U+FFFD (Go's conversion would give
// one per byte).
func lossy(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		r, w := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || w > 1 {
			sb.Write(b[i : i+w])
			i += w
			continue
		}
		sb.WriteRune(utf8.RuneError)
		i += maximalSubpart(b[i:])
	}
	return sb.String()
}

// maximalSubpart is the length of the invalid sequence at the start of b
// that one replacement character stands for: a lead byte and the
// continuation bytes it allows, up to where they stop fitting.
func maximalSubpart(b []byte) int {
	c := b[0]
	var n int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		n = 2
	case c == 0xE0:
		n, lo = 3, 0xA0
	case c >= 0xE1 && c <= 0xEC || c == 0xEE || c == 0xEF:
		n = 3
	case c == 0xED:
		n, hi = 3, 0x9F
	case c == 0xF0:
		n, lo = 4, 0x90
	case c >= 0xF1 && c <= 0xF3:
		n = 4
	case c == 0xF4:
		n, hi = 4, 0x8F
	default:
		return 1
	}
	i := 1
	for ; i < n && i < len(b); i++ {
		if b[i] < lo || b[i] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
	}
	return i
}

// TokenBytes is what id stands for in decoded output, as bytes, so that a
// grammar can check a token by the text it would add: for byte-level files
// the bytes behind GPT-2's byte-to-character mapping; for SentencePiece-
// style files the token with ▁ as a space and <0xHH> as that byte; added
// tokens as the decoder renders their content; WordPiece tokens without
// the continuing-subword prefix (the decoder's separating spaces are not
// part of any token). Rules that apply only at the start of a text (a
// leading space stripped) are not applied. nil for an unknown id.
func (t *Tokenizer) TokenBytes(id int64) []byte {
	if id < 0 || id >= int64(len(t.pieces)) {
		return nil
	}
	return t.tokenBytes(id)
}

func (t *Tokenizer) tokenBytes(id int64) []byte {
	if t.raw != nil {
		return []byte(t.raw[id])
	}
	tok := t.pieces[id]
	if t.dec.wp != nil {
		return []byte(strings.TrimPrefix(tok, t.dec.wp.decPrefix))
	}
	for _, s := range t.dec.steps {
		switch s.kind {
		case decByteLevel:
			return byteLevelDecodeToken(tok)
		case decByteFallback:
			if b, ok := parseByteToken(tok); ok {
				return []byte{b}
			}
		case decReplace:
			tok = strings.ReplaceAll(tok, s.from, s.to)
		case decMetaspace:
			tok = strings.ReplaceAll(tok, s.from, " ")
		}
	}
	return []byte(tok)
}

// EOS is the id of the end-of-sequence token, found among the added tokens
// by its usual spellings (</s>, <|endoftext|>, <eos>, <|end_of_text|>,
// <|im_end|>, [SEP], in that order); false if there is none. A model's
// generation_config.json, which may list several, is the better source.
func (t *Tokenizer) EOS() (int64, bool) {
	return t.firstAdded("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>", "<|im_end|>", "[SEP]")
}

// BOS is the id of the beginning-of-sequence token (<s>, <bos>,
// <|begin_of_text|>, [CLS]), as EOS finds it.
func (t *Tokenizer) BOS() (int64, bool) {
	return t.firstAdded("<s>", "<bos>", "<|begin_of_text|>", "[CLS]")
}

func (t *Tokenizer) firstAdded(names ...string) (int64, bool) {
	for _, n := range names {
		if id, ok := t.Special(n); ok {
			return id, true
		}
	}
	return 0, false
}

func (t *Tokenizer) hasDecoder(k decKind) bool {
	for _, s := range t.dec.steps {
		if s.kind == k {
			return true
		}
	}
	return false
}
