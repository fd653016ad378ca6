package tokenizer

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"unicode"

	json "github.com/goccy/go-json"
	"golang.org/x/text/unicode/norm"
)

type fileJSON struct {
	AddedTokens []struct {
		ID         int64  `json:"id"`
		Content    string `json:"content"`
		Special    bool   `json:"special"`
		Normalized bool   `json:"normalized"`
		Lstrip     bool   `json:"lstrip"`
		Rstrip     bool   `json:"rstrip"`
		SingleWord bool   `json:"single_word"`
	} `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Truncation    *struct {
		MaxLength int    `json:"max_length"`
		Strategy  string `json:"strategy"`
		Direction string `json:"direction"`
	} `json:"truncation"`
	Padding *struct {
		PadID int64 `json:"pad_id"`
	} `json:"padding"`
	Model struct {
		Type                    string   `json:"type"`
		UnkToken                *string  `json:"unk_token"`
		UnkID                   *int32   `json:"unk_id"`
		ContinuingSubwordPrefix *string  `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string  `json:"end_of_word_suffix"`
		MaxInputCharsPerWord    int      `json:"max_input_chars_per_word"`
		Dropout                 *float64 `json:"dropout"`
		FuseUnk                 bool     `json:"fuse_unk"`
		ByteFallback            bool     `json:"byte_fallback"`
		IgnoreMerges            bool     `json:"ignore_merges"`
		Vocab                   rawJSON  `json:"vocab"`
		Merges                  rawJSON  `json:"merges"`
	} `json:"model"`
}

// rawJSON is a value kept as its JSON text without a copy (the vocabulary
// and merges are most of the file): the decoder hands out pieces of its own
// copy of the input, which nothing else holds.
type rawJSON []byte

func (r *rawJSON) UnmarshalJSON(b []byte) error {
	*r = b
	return nil
}

// component is the shape every normalizer, pre-tokenizer, post-processor
// and decoder of tokenizer.json shares; each reads the fields it needs.
type component struct {
	Type string `json:"type"`
	// Sequence
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`
	// BertNormalizer
	CleanText          bool  `json:"clean_text"`
	HandleChineseChars bool  `json:"handle_chinese_chars"`
	StripAccents       *bool `json:"strip_accents"`
	Lowercase          bool  `json:"lowercase"`
	// Prepend, Replace, Split, Strip
	Prepend string `json:"prepend"`
	Pattern *struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	} `json:"pattern"`
	Content  json.RawMessage `json:"content"`
	Behavior string          `json:"behavior"`
	Invert   bool            `json:"invert"`
	Left     *bool           `json:"left"`
	Right    *bool           `json:"right"`
	Start    int             `json:"start"`
	Stop     int             `json:"stop"`
	// ByteLevel
	AddPrefixSpace *bool `json:"add_prefix_space"`
	TrimOffsets    bool  `json:"trim_offsets"`
	UseRegex       *bool `json:"use_regex"`
	// Metaspace
	Replacement   string `json:"replacement"`
	PrependScheme string `json:"prepend_scheme"`
	Split         *bool  `json:"split"`
	// WordPiece decoder
	Prefix  *string `json:"prefix"`
	Cleanup *bool   `json:"cleanup"`
	// TemplateProcessing, BertProcessing
	Single        []map[string]json.RawMessage `json:"single"`
	Pair          []map[string]json.RawMessage `json:"pair"`
	SpecialTokens map[string]struct {
		IDs []int64 `json:"ids"`
	} `json:"special_tokens"`
	Sep []json.RawMessage `json:"sep"`
	Cls []json.RawMessage `json:"cls"`
}

func parseComponent(raw json.RawMessage, what string) (*component, error) {
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &c, nil
}

// Load reads a tokenizer.json.
func Load(path string) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Parse reads the contents of a tokenizer.json (b is not kept: strings
// taken from the decoder's view of it are cloned, lest a few bytes hold a
// 33 MB file in memory): models WordPiece, BPE
// (byte-level or with byte fallback) and Unigram, with the normalizers,
// pre-tokenizers, post-processors and decoders language models use. A
// component it does not implement is refused with an error naming it, never
// skipped.
func Parse(b []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	m := &f.Model
	// Files written by older versions of the library omit the model's type.
	if m.Type == "" {
		switch {
		case m.ContinuingSubwordPrefix != nil && len(m.Merges) == 0:
			m.Type = "WordPiece"
		case len(m.Merges) > 0:
			m.Type = "BPE"
		case len(m.Vocab) > 0 && m.Vocab[0] == '[':
			m.Type = "Unigram"
		}
	}
	t := &Tokenizer{}
	var err error
	switch m.Type {
	case "WordPiece":
		err = t.loadWordPiece(&f)
	case "BPE":
		err = t.loadBPE(&f)
	case "Unigram":
		err = t.loadUnigram(&f)
	default:
		return nil, fmt.Errorf("tokenizer model %q is not supported (WordPiece, BPE and Unigram are)", m.Type)
	}
	if err != nil {
		return nil, err
	}
	if err := t.loadAdded(&f); err != nil {
		return nil, err
	}
	if t.wp == nil {
		if t.norm, err = t.parseNormalizer(f.Normalizer); err != nil {
			return nil, err
		}
		if t.pre, err = t.parsePreTokenizer(f.PreTokenizer); err != nil {
			return nil, err
		}
	}
	t.buildAdded()
	if err := t.parsePost(f.PostProcessor); err != nil {
		return nil, err
	}
	if err := t.parseDecoder(f.Decoder); err != nil {
		return nil, err
	}
	if tr := f.Truncation; tr != nil {
		t.Truncation = &Truncation{MaxLength: tr.MaxLength, Strategy: snake(tr.Strategy), Left: tr.Direction == "Left"}
	}
	if pad, ok := t.vocabID("[PAD]"); ok {
		t.PadID = pad
	} else if pad, ok := t.vocabID("<pad>"); ok {
		t.PadID = pad
	}
	if f.Padding != nil {
		t.PadID = f.Padding.PadID
	}
	return t, nil
}

// snake turns the file's LongestFirst into longest_first.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (t *Tokenizer) loadBPE(f *fileJSON) error {
	m := &f.Model
	if m.Dropout != nil && *m.Dropout > 0 {
		return fmt.Errorf("BPE dropout is not supported")
	}
	if m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" {
		return fmt.Errorf("BPE continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	}
	if m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "" {
		return fmt.Errorf("BPE end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	}
	bl, err := usesByteLevel(f.PreTokenizer)
	if err != nil {
		return err
	}
	// Byte-level files' vocabularies are keyed here by the bytes each token
	// stands for, so that words are merged as bytes, not as GPT-2's
	// characters.
	var key func([]byte) string
	var scratch []byte
	if bl {
		key = func(tok []byte) string {
			scratch = appendByteLevel(scratch[:0], tok)
			return string(scratch)
		}
	}
	vocab, pieces, keys, err := readVocab(m.Vocab, key)
	if err != nil {
		return fmt.Errorf("BPE %w", err)
	}
	t.pieces = pieces
	if bl {
		t.byteLevel = true
		t.raw = keys
	}
	p := &bpe{byteFallback: m.ByteFallback, fuseUnk: m.FuseUnk, ignoreMerges: m.IgnoreMerges, unk: -1, perByte: bl,
		merges: make(map[uint64]uint64, countMerges(m.Merges))}
	if m.UnkToken != nil {
		id, ok := vocab[*m.UnkToken]
		if !ok {
			return fmt.Errorf("unk_token %q is not in the vocabulary", *m.UnkToken)
		}
		p.unk = id
	}
	var ka, kb, kc []byte
	rank := uint64(0)
	err = readMerges(m.Merges, func(a, b []byte) error {
		if bl {
			ka, kb = appendByteLevel(ka[:0], a), appendByteLevel(kb[:0], b)
		} else {
			ka, kb = append(ka[:0], a...), append(kb[:0], b...)
		}
		kc = append(append(kc[:0], ka...), kb...)
		x, ok1 := vocab[string(ka)]
		y, ok2 := vocab[string(kb)]
		z, ok3 := vocab[string(kc)]
		if !ok1 || !ok2 || !ok3 {
			return fmt.Errorf("BPE merge %q %q: a token is not in the vocabulary", a, b)
		}
		// A pair listed twice keeps its later rank, as the library's map.
		p.merges[pairKey(x, y)] = rank<<32 | uint64(uint32(z))
		rank++
		return nil
	})
	if err != nil {
		return err
	}
	p.vocab = vocab
	for b := range 256 {
		p.single[b], p.fallback[b] = -1, -1
		if id, ok := vocab[string([]byte{byte(b)})]; ok && (bl || b < 0x80) {
			p.single[b] = id
		}
		if id, ok := vocab[byteToken(byte(b))]; ok {
			p.fallback[b] = id
		}
	}
	t.model = p
	return nil
}

// countMerges estimates the number of merges from their quotes (two a
// merge written "a b", four written as a pair), so that the map is made
// once at its size.
func countMerges(raw []byte) int {
	q := bytes.Count(raw, []byte{'"'}) - bytes.Count(raw, []byte(`\"`))
	if i := skipSpace(raw, 0); i < len(raw) && raw[i] == '[' {
		if j := skipSpace(raw, i+1); j < len(raw) && raw[j] == '[' {
			return q / 4
		}
	}
	return q / 2
}

func byteToken(b byte) string { return fmt.Sprintf("<0x%02X>", b) }

// usesByteLevel says whether the pre-tokenizer has a ByteLevel step.
func usesByteLevel(raw json.RawMessage) (bool, error) {
	c, err := parseComponent(raw, "pre_tokenizer")
	if err != nil || c == nil {
		return false, err
	}
	if c.Type == "ByteLevel" {
		return true, nil
	}
	for _, r := range c.Pretokenizers {
		if ok, err := usesByteLevel(r); ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

func (t *Tokenizer) loadUnigram(f *fileJSON) error {
	m := &f.Model
	var vocab [][2]json.RawMessage
	if err := json.Unmarshal(m.Vocab, &vocab); err != nil {
		return fmt.Errorf("Unigram vocab: %w", err)
	}
	pieces := make([]string, len(vocab))
	scores := make([]float64, len(vocab))
	for i, v := range vocab {
		if err := json.Unmarshal(v[0], &pieces[i]); err != nil {
			return fmt.Errorf("Unigram vocab %d: %w", i, err)
		}
		if err := json.Unmarshal(v[1], &scores[i]); err != nil {
			return fmt.Errorf("Unigram vocab %d: %w", i, err)
		}
	}
	unk := int32(-1)
	if m.UnkID != nil {
		if *m.UnkID < 0 || int(*m.UnkID) >= len(pieces) {
			return fmt.Errorf("Unigram unk_id %d is not in the vocabulary", *m.UnkID)
		}
		unk = *m.UnkID
	}
	t.pieces = pieces
	t.model = newUnigram(pieces, scores, unk, m.ByteFallback)
	return nil
}

func (t *Tokenizer) loadAdded(f *fileJSON) error {
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.ID > 1<<28 {
			return fmt.Errorf("added token %q: id %d is out of range", a.Content, a.ID)
		}
		if t.wp != nil && a.Normalized && !a.Special {
			return fmt.Errorf("added token %q: normalized added tokens are not supported with WordPiece", a.Content)
		}
		t.added = append(t.added, addedToken{content: strings.Clone(a.Content), id: a.ID, special: a.Special, lstrip: a.Lstrip,
			rstrip: a.Rstrip, singleWord: a.SingleWord, normalized: a.Normalized && t.wp == nil})
		for int(a.ID) >= len(t.pieces) {
			t.pieces = append(t.pieces, "")
			if t.raw != nil {
				t.raw = append(t.raw, "")
			}
		}
		t.pieces[a.ID] = t.added[len(t.added)-1].content
		if t.raw != nil {
			t.raw[a.ID] = string(byteLevelDecodeToken(a.Content))
		}
	}
	t.isAdded = make([]uint8, len(t.pieces))
	special := map[string]bool{}
	for _, a := range t.added {
		t.isAdded[a.id] = 1
		if a.special {
			special[a.content] = true
		}
	}
	// The library skips a token as special by its text: a vocabulary id
	// that spells a special token is skipped too.
	if len(special) > 0 {
		for id, p := range t.pieces {
			if special[p] {
				t.isAdded[id] = 2
			}
		}
	}
	return nil
}

// buildAdded builds the matchers: tokens with normalized false on the raw
// text, the others on the normalized text (their content normalized too).
func (t *Tokenizer) buildAdded() {
	var raw, normed []addedToken
	for _, a := range t.added {
		if a.normalized {
			normed = append(normed, a)
		} else {
			raw = append(raw, a)
		}
	}
	// A normalized token decodes as its normalized content, as the
	// library's normalized_cache has it.
	for _, a := range normed {
		if t.norm != nil {
			c := t.norm.normalize(nstr{s: a.content}).s
			t.pieces[a.id] = c
			if t.raw != nil {
				t.raw[a.id] = string(byteLevelDecodeToken(c))
			}
		}
	}
	t.rawAdded = newAddedSet(raw, func(a addedToken) string { return a.content })
	t.normAdded = newAddedSet(normed, func(a addedToken) string {
		if t.norm == nil {
			return a.content
		}
		return t.norm.normalize(nstr{s: a.content}).s
	})
}

func (t *Tokenizer) parseNormalizer(raw json.RawMessage) (normalizer, error) {
	c, err := parseComponent(raw, "normalizer")
	if err != nil || c == nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var q normSeq
		for _, r := range c.Normalizers {
			n, err := t.parseNormalizer(r)
			if err != nil {
				return nil, err
			}
			if n != nil {
				q = append(q, n)
			}
		}
		return q, nil
	case "NFC":
		return unicodeNorm{norm.NFC}, nil
	case "NFD":
		return unicodeNorm{norm.NFD}, nil
	case "NFKC":
		return unicodeNorm{norm.NFKC}, nil
	case "NFKD":
		return unicodeNorm{norm.NFKD}, nil
	case "Lowercase":
		return lowercase{}, nil
	case "Prepend":
		return prepend{strings.Clone(c.Prepend)}, nil
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil {
			return nil, fmt.Errorf("normalizer Replace with a regex pattern is not supported (a String pattern is)")
		}
		var content string
		if err := json.Unmarshal(c.Content, &content); err != nil {
			return nil, fmt.Errorf("normalizer Replace: content: %w", err)
		}
		if *c.Pattern.String == "" {
			return nil, fmt.Errorf("normalizer Replace: empty pattern")
		}
		return replace{strings.Clone(*c.Pattern.String), strings.Clone(content)}, nil
	case "Strip":
		return stripNorm{left: c.Left == nil || *c.Left, right: c.Right == nil || *c.Right}, nil
	}
	return nil, fmt.Errorf("normalizer %q is not supported", c.Type)
}

func (t *Tokenizer) parsePreTokenizer(raw json.RawMessage) (preTokenizer, error) {
	c, err := parseComponent(raw, "pre_tokenizer")
	if err != nil || c == nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var q preSeq
		for _, r := range c.Pretokenizers {
			p, err := t.parsePreTokenizer(r)
			if err != nil {
				return nil, err
			}
			if p != nil {
				q = append(q, p)
			}
		}
		return q, nil
	case "Split":
		b, ok := behaviors[c.Behavior]
		if !ok {
			return nil, fmt.Errorf("pre_tokenizer Split: behavior %q is not supported", c.Behavior)
		}
		s := split{behavior: b, invert: c.Invert}
		switch {
		case c.Pattern != nil && c.Pattern.String != nil:
			s.literal = strings.Clone(*c.Pattern.String)
		case c.Pattern != nil && c.Pattern.Regex != nil:
			if s.scan = knownScanners[*c.Pattern.Regex]; s.scan == nil {
				return nil, fmt.Errorf("pre_tokenizer Split: regex %q is not supported (the GPT-2, Llama 3, Qwen and o200k patterns are)", *c.Pattern.Regex)
			}
		default:
			return nil, fmt.Errorf("pre_tokenizer Split: no pattern")
		}
		return s, nil
	case "ByteLevel":
		return byteLevel{addPrefixSpace: c.AddPrefixSpace == nil || *c.AddPrefixSpace, useRegex: c.UseRegex == nil || *c.UseRegex}, nil
	case "Metaspace":
		m := metaspace{rep: strings.Clone(c.Replacement), prepend: strings.ToLower(c.PrependScheme), split: c.Split == nil || *c.Split}
		if m.rep == "" {
			m.rep = "▁"
		}
		if m.prepend == "" {
			m.prepend = "always"
			if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
				m.prepend = "never"
			}
		}
		if m.prepend != "always" && m.prepend != "first" && m.prepend != "never" {
			return nil, fmt.Errorf("pre_tokenizer Metaspace: prepend_scheme %q is not supported", c.PrependScheme)
		}
		return m, nil
	case "WhitespaceSplit":
		return whitespaceSplit{}, nil
	case "Whitespace":
		return whitespace{}, nil
	}
	return nil, fmt.Errorf("pre_tokenizer %q is not supported", c.Type)
}

// vocabID is the id of a token of the vocabulary or an added token.
func (t *Tokenizer) vocabID(s string) (int64, bool) {
	for _, a := range t.added {
		if a.content == s {
			return a.id, true
		}
	}
	switch m := t.model.(type) {
	case *bpe:
		if t.byteLevel {
			for id, r := range t.pieces {
				if r == s {
					return int64(id), true
				}
			}
			return 0, false
		}
		id, ok := m.vocab[s]
		return int64(id), ok
	case *unigram:
		id, ok := m.vocab[s]
		return int64(id), ok
	}
	if t.wp != nil {
		id, ok := t.wp.vocab[s]
		return int64(id), ok
	}
	return 0, false
}
