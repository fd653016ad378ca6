// Package tokenizer encodes and decodes text as Hugging Face's tokenizers
// library does, from a model's tokenizer.json: WordPiece (the BERT family's
// pipeline), byte-level BPE (GPT-2, Llama 3, Qwen, o200k), BPE with byte
// fallback (Llama 2, Mistral, Gemma) and Unigram, with their normalizers,
// pre-tokenizers, post-processors, decoders and added tokens; sentence
// pairs, truncation (longest_first, only_first, only_second; right or left),
// type ids and character offsets; whole and streaming decoding. Ids,
// offsets and decoded text are held to the Rust library's on a committed
// corpus (testdata/). Padding is the batcher's job: Pad pads a batch.
//
// Files live in load.go (reading tokenizer.json), normalize.go,
// pretokenize.go and scan.go (the Split regexes), the models (wordpiece.go,
// bpe.go, unigram.go), added.go, post.go, decode.go and stream.go.
package tokenizer

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Encoding is one encoded input: special tokens added, not padded.
type Encoding struct {
	IDs     []int64
	TypeIDs []int64
	// Offsets are [start, end) in characters (Unicode code points) of the
	// text the token came from ([0, 0] for special tokens), as Hugging
	// Face's library reports them.
	Offsets [][2]int
	// Sequence is 0 or 1 for tokens of the first or second text, -1 for
	// special tokens.
	Sequence []int8
}

// Len is the number of tokens.
func (e Encoding) Len() int { return len(e.IDs) }

// Truncation says how inputs longer than MaxLength tokens (special tokens
// included) are cut.
type Truncation struct {
	MaxLength int
	Strategy  string // longest_first, only_first or only_second
	Left      bool   // cut from the start instead of the end
}

// Tokenizer is a loaded tokenizer.json. It is safe for concurrent use.
type Tokenizer struct {
	pieces    []string // id → token as the file spells it
	raw       []string // byte-level files: id → the bytes it stands for
	byteLevel bool
	isAdded   []uint8 // id → 0, 1 (added) or 2 (added and special)

	added     []addedToken
	rawAdded  *addedSet // added tokens matched on the raw text
	normAdded *addedSet // those matched on the normalized text

	wp    *wordPiece // the BERT pipeline, or nil
	norm  normalizer // nil: none
	pre   preTokenizer
	model model

	single, pair []piece
	nSingle      int // special tokens the single template adds
	nPair        int
	trimOffsets  bool // ByteLevel post-processing trims spaces off offsets
	prefixSpace  bool // … and the pre-tokenizer added one

	dec decoder

	// Truncation from the file (nil: none).
	Truncation *Truncation
	// PadID is the file's padding id, else [PAD]'s or <pad>'s, else 0.
	PadID int64
}

// token is one token of one text, before post-processing.
type token struct {
	id         int64
	start, end int // characters of the text
}

// VocabSize is the number of token ids: the model's vocabulary and the
// added tokens (ids run from 0 to VocabSize()-1; a gap, if the file has
// one, decodes to nothing).
func (t *Tokenizer) VocabSize() int { return len(t.pieces) }

// BytesConcatenate reports whether decoding is the concatenation of the
// tokens' bytes (TokenBytes), as it is for byte-level BPE, SentencePiece
// BPE and Unigram (but for a leading-space strip at the start): what a
// grammar over token bytes needs. WordPiece's decoder joins words with
// spaces it decides itself, so it is not.
func (t *Tokenizer) BytesConcatenate() bool { return t.wp == nil }

// Token returns the token string of an id as the file spells it ("" if
// unknown): for byte-level files in GPT-2's byte-to-character mapping.
func (t *Tokenizer) Token(id int64) string {
	if id < 0 || id >= int64(len(t.pieces)) {
		return ""
	}
	return t.pieces[id]
}

// IDs encodes text with no special tokens and no truncation (a prompt to
// continue).
func (t *Tokenizer) IDs(text string) []int64 {
	toks := t.tokens(text)
	out := make([]int64, len(toks))
	for i, tok := range toks {
		out[i] = tok.id
	}
	return out
}

// Special returns the id of an added token, such as "[SEP]" or
// "<|im_end|>".
func (t *Tokenizer) Special(content string) (int64, bool) {
	for _, a := range t.added {
		if a.content == content {
			return a.id, true
		}
	}
	return 0, false
}

// IsSpecial says whether id is an added token marked special (the tokens
// Decode leaves out when asked to skip them).
func (t *Tokenizer) IsSpecial(id int64) bool {
	return id >= 0 && id < int64(len(t.isAdded)) && t.isAdded[id] == 2
}

// MaxLength is the file's truncation length, or 0.
func (t *Tokenizer) MaxLength() int {
	if t.Truncation == nil {
		return 0
	}
	return t.Truncation.MaxLength
}

// Added is the number of special tokens a single (false) or pair (true)
// input gets.
func (t *Tokenizer) Added(pair bool) int {
	if pair {
		return t.nPair
	}
	return t.nSingle
}

// Encode encodes one text with the file's truncation.
func (t *Tokenizer) Encode(text string) Encoding {
	e, _ := t.EncodeWith(text, nil, t.Truncation)
	return e
}

// EncodePair encodes a pair of texts with the file's truncation.
func (t *Tokenizer) EncodePair(a, b string) (Encoding, error) {
	return t.EncodeWith(a, &b, t.Truncation)
}

// EncodeWith encodes text (and pair when not nil), truncated as tr says
// (nil: not at all). It fails only when tr cannot be met (only_first or
// only_second with too little in that text to remove).
func (t *Tokenizer) EncodeWith(text string, pair *string, tr *Truncation) (Encoding, error) {
	seqs := [][]token{t.tokens(text)}
	if pair != nil {
		seqs = append(seqs, t.tokens(*pair))
	}
	if tr != nil && tr.MaxLength > 0 {
		if err := truncate(seqs, tr, t.Added(pair != nil)); err != nil {
			return Encoding{}, err
		}
	}
	tmpl := t.single
	if pair != nil {
		tmpl = t.pair
	}
	n := t.Added(pair != nil)
	for _, s := range seqs {
		n += len(s)
	}
	e := Encoding{IDs: make([]int64, 0, n), TypeIDs: make([]int64, 0, n), Offsets: make([][2]int, 0, n), Sequence: make([]int8, 0, n)}
	for _, pc := range tmpl {
		if pc.special != nil {
			for _, id := range pc.special {
				e.IDs, e.TypeIDs = append(e.IDs, id), append(e.TypeIDs, pc.typeID)
				e.Offsets, e.Sequence = append(e.Offsets, [2]int{}), append(e.Sequence, -1)
			}
			continue
		}
		if pc.seq >= len(seqs) {
			continue
		}
		for _, tok := range seqs[pc.seq] {
			e.IDs, e.TypeIDs = append(e.IDs, tok.id), append(e.TypeIDs, pc.typeID)
			e.Offsets, e.Sequence = append(e.Offsets, [2]int{tok.start, tok.end}), append(e.Sequence, int8(pc.seq))
		}
	}
	return e, nil
}

// ErrTooShort is returned when only_first or only_second truncation cannot
// remove enough from its sequence.
var ErrTooShort = errors.New("truncation: the sequence to truncate is shorter than what must be removed")

// truncate cuts seqs as the library does, to tr.MaxLength less the special
// tokens that post-processing adds.
func truncate(seqs [][]token, tr *Truncation, added int) error {
	maxLen := tr.MaxLength - added
	if maxLen < 0 {
		maxLen = 0
	}
	total := 0
	for _, s := range seqs {
		total += len(s)
	}
	if total <= maxLen {
		return nil
	}
	cut := func(i, n int) {
		if n >= len(seqs[i]) {
			return
		}
		if tr.Left {
			seqs[i] = seqs[i][len(seqs[i])-n:]
		} else {
			seqs[i] = seqs[i][:n]
		}
	}
	switch tr.Strategy {
	case "only_first", "only_second":
		i := 0
		if tr.Strategy == "only_second" {
			if len(seqs) < 2 {
				return fmt.Errorf("truncation only_second: no second sequence")
			}
			i = 1
		}
		remove := total - maxLen
		if len(seqs[i]) <= remove {
			return ErrTooShort
		}
		cut(i, len(seqs[i])-remove)
	default: // longest_first
		if len(seqs) == 1 {
			cut(0, maxLen)
			return nil
		}
		n1, n2 := len(seqs[0]), len(seqs[1])
		swap := n1 > n2
		if swap {
			n1, n2 = n2, n1
		}
		if n1 > maxLen {
			n2 = n1
		} else {
			n2 = max(n1, maxLen-n1)
		}
		if n1+n2 > maxLen {
			n1 = maxLen / 2
			n2 = n1 + maxLen%2
		}
		if swap {
			n1, n2 = n2, n1
		}
		cut(0, n1)
		cut(1, n2)
	}
	return nil
}

// btok is a token with byte offsets into the original text.
type btok struct {
	id         int64
	start, end int
}

// tokens splits text on the added tokens it contains, then normalizes,
// pre-tokenizes and encodes each stretch between them.
func (t *Tokenizer) tokens(text string) []token {
	if !utf8.ValidString(text) {
		// The library takes text as a Rust or JavaScript string, which
		// cannot hold invalid UTF-8: its callers convert bytes lossily,
		// each invalid sequence one U+FFFD, and so does this (the offsets
		// of byte-level pieces that split an invalid byte would otherwise
		// fall out of order).
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	if t.wp != nil {
		return t.wordPieceTokens(text)
	}
	var spans []addedSpan
	if t.rawAdded != nil {
		spans = t.rawAdded.find(text, make([]addedSpan, 0, 8))
	} else if text != "" {
		spans = []addedSpan{{-1, 0, len(text)}}
	}
	out := make([]btok, 0, len(text)/3+4)
	var wt []wtok
	var pieces []nstr
	for _, sp := range spans {
		if sp.tok >= 0 {
			out = append(out, btok{t.rawAdded.tokens[sp.tok].id, sp.start, sp.end})
			continue
		}
		n := nstr{s: text[sp.start:sp.end], base: sp.start, first: sp.start == 0}
		if t.norm != nil {
			n = t.norm.normalize(n)
		}
		pieces = pieces[:0]
		if t.normAdded != nil {
			for _, ns := range t.normAdded.find(n.s, nil) {
				if ns.tok >= 0 {
					s, e := n.orig(ns.start, ns.end)
					out = t.encodePieces(out, pieces, &wt)
					pieces = pieces[:0]
					out = append(out, btok{t.normAdded.tokens[ns.tok].id, s, e})
					continue
				}
				pieces = append(pieces, n.slice(ns.start, ns.end))
			}
		} else if n.s != "" {
			pieces = append(pieces, n)
		}
		out = t.encodePieces(out, pieces, &wt)
	}
	toks := charOffsets(text, out)
	if t.trimOffsets {
		t.trim(toks)
	}
	return toks
}

// encodePieces pre-tokenizes normalized pieces and encodes their words.
func (t *Tokenizer) encodePieces(out []btok, pieces []nstr, wt *[]wtok) []btok {
	if len(pieces) == 0 {
		return out
	}
	words := pieces
	if t.pre != nil {
		words = t.pre.preTokenize(append([]nstr(nil), pieces...))
	}
	for i := range words {
		w := &words[i]
		*wt = t.model.encode(w.s, (*wt)[:0])
		for _, x := range *wt {
			s, e := w.orig(int(x.start), int(x.end))
			out = append(out, btok{int64(x.id), s, e})
		}
	}
	return out
}

// charOffsets turns byte offsets into character offsets.
func charOffsets(text string, in []btok) []token {
	out := make([]token, len(in))
	ascii := true
	for i := 0; i < len(text); i++ {
		if text[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		for i, b := range in {
			out[i] = token{b.id, b.start, b.end}
		}
		return out
	}
	// idx[i] is the character that byte i belongs to.
	idx := make([]int32, len(text)+1)
	c := int32(0)
	for i := 0; i < len(text); {
		_, w := utf8.DecodeRuneInString(text[i:])
		for k := range w {
			idx[i+k] = c
		}
		i += w
		c++
	}
	idx[len(text)] = c
	// As the library converts: an offset inside a character is that
	// character's index (a start, or an end that trimming moved there), an
	// end at the text's end one past its last character, and a token that
	// starts at the end keeps its byte offsets.
	for i, b := range in {
		if b.start >= len(text) {
			out[i] = token{b.id, b.start, b.end}
			continue
		}
		s, e := idx[b.start], idx[b.start]+1
		switch {
		case b.end < len(text):
			e = idx[b.end]
		case b.end > 0:
			e = idx[b.end-1] + 1
		}
		out[i] = token{b.id, int(s), int(e)}
	}
	return out
}

// wordPieceTokens is tokens for the BERT pipeline, which works on
// characters.
func (t *Tokenizer) wordPieceTokens(text string) []token {
	runes := []rune(text)
	var out []token
	var spans []addedSpan
	if t.rawAdded != nil {
		spans = t.rawAdded.find(text, nil)
	} else if text != "" {
		spans = []addedSpan{{-1, 0, len(text)}}
	}
	// Byte offsets to characters, in step with the spans.
	ci, bi := 0, 0
	toChar := func(b int) int {
		for bi < b {
			_, w := utf8.DecodeRuneInString(text[bi:])
			bi += w
			ci++
		}
		return ci
	}
	for _, sp := range spans {
		s := toChar(sp.start)
		e := toChar(sp.end)
		if sp.tok >= 0 {
			out = append(out, token{t.rawAdded.tokens[sp.tok].id, s, e})
			continue
		}
		out = t.wp.encodeStretch(runes[s:e], s, out)
	}
	return out
}
