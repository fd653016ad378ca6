// Package tokenizer encodes text as Hugging Face's tokenizers library does,
// from a model's tokenizer.json: the BERT family's pipeline (BertNormalizer,
// BertPreTokenizer, WordPiece, TemplateProcessing or BertProcessing), with
// special tokens in the text, sentence pairs, truncation (longest_first,
// only_first, only_second; right or left), type ids and character offsets.
// Ids, type ids and offsets are held to the Rust library's on a committed
// corpus (testdata/). Padding is the batcher's job: Pad pads a batch.
package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
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
	vocab    map[string]int64
	byID     map[int64]string // id → token
	unk      int64
	prefix   string
	maxChars int

	clean, chinese, stripAccents, lowercase bool

	added []addedToken // matched in the raw text, longest first

	single, pair []piece
	nSingle      int // special tokens the single template adds
	nPair        int

	// Truncation from the file (nil: none).
	Truncation *Truncation
	// PadID is the file's padding id, else [PAD]'s, else 0.
	PadID int64
}

type addedToken struct {
	content string
	id      int64
}

// piece is one element of a post-processing template: special token ids,
// or sequence 0 or 1, with its type id.
type piece struct {
	special []int64
	seq     int
	typeID  int64
}

type fileJSON struct {
	AddedTokens []struct {
		ID         int64  `json:"id"`
		Content    string `json:"content"`
		Special    bool   `json:"special"`
		Normalized bool   `json:"normalized"`
	} `json:"added_tokens"`
	Normalizer *struct {
		Type               string `json:"type"`
		CleanText          bool   `json:"clean_text"`
		HandleChineseChars bool   `json:"handle_chinese_chars"`
		StripAccents       *bool  `json:"strip_accents"`
		Lowercase          bool   `json:"lowercase"`
	} `json:"normalizer"`
	PreTokenizer *struct {
		Type string `json:"type"`
	} `json:"pre_tokenizer"`
	PostProcessor *struct {
		Type          string                       `json:"type"`
		Single        []map[string]json.RawMessage `json:"single"`
		Pair          []map[string]json.RawMessage `json:"pair"`
		SpecialTokens map[string]struct {
			IDs []int64 `json:"ids"`
		} `json:"special_tokens"`
		Sep []json.RawMessage `json:"sep"`
		Cls []json.RawMessage `json:"cls"`
	} `json:"post_processor"`
	Truncation *struct {
		MaxLength int    `json:"max_length"`
		Strategy  string `json:"strategy"`
		Direction string `json:"direction"`
	} `json:"truncation"`
	Padding *struct {
		PadID int64 `json:"pad_id"`
	} `json:"padding"`
	Model struct {
		Type                    string           `json:"type"`
		UnkToken                string           `json:"unk_token"`
		ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
		MaxInputCharsPerWord    int              `json:"max_input_chars_per_word"`
		Vocab                   json.RawMessage  `json:"vocab"`
		Merges                  *json.RawMessage `json:"merges"`
	} `json:"model"`
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

// Parse reads the contents of a tokenizer.json. Models other than
// WordPiece, and normalizers or pre-tokenizers other than BERT's, are
// refused with an error naming them.
func Parse(b []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	m := f.Model
	// Files written by older versions of the library omit the model's type;
	// WordPiece is the one with a continuing-subword prefix and no merges.
	if m.Type == "" && m.ContinuingSubwordPrefix != nil && m.Merges == nil {
		m.Type = "WordPiece"
	}
	if m.Type != "WordPiece" {
		return nil, fmt.Errorf("tokenizer model %q is not supported (WordPiece is)", m.Type)
	}
	t := &Tokenizer{prefix: "##", maxChars: 100}
	if m.ContinuingSubwordPrefix != nil {
		t.prefix = *m.ContinuingSubwordPrefix
	}
	if m.MaxInputCharsPerWord > 0 {
		t.maxChars = m.MaxInputCharsPerWord
	}
	if err := json.Unmarshal(m.Vocab, &t.vocab); err != nil {
		return nil, fmt.Errorf("WordPiece vocab: %w", err)
	}
	t.byID = make(map[int64]string, len(t.vocab))
	for k, v := range t.vocab {
		t.byID[v] = k
	}
	unk, ok := t.vocab[m.UnkToken]
	if !ok {
		return nil, fmt.Errorf("unk_token %q is not in the vocabulary", m.UnkToken)
	}
	t.unk = unk

	switch n := f.Normalizer; {
	case n == nil:
	case n.Type == "BertNormalizer":
		t.clean, t.chinese, t.lowercase = n.CleanText, n.HandleChineseChars, n.Lowercase
		t.stripAccents = n.Lowercase // the library's default: strip when lowercasing
		if n.StripAccents != nil {
			t.stripAccents = *n.StripAccents
		}
	default:
		return nil, fmt.Errorf("normalizer %q is not supported (BertNormalizer is)", n.Type)
	}
	if p := f.PreTokenizer; p != nil && p.Type != "BertPreTokenizer" {
		return nil, fmt.Errorf("pre_tokenizer %q is not supported (BertPreTokenizer is)", p.Type)
	}

	for _, a := range f.AddedTokens {
		if a.Normalized && !a.Special {
			return nil, fmt.Errorf("added token %q: normalized added tokens are not supported", a.Content)
		}
		t.added = append(t.added, addedToken{a.Content, a.ID})
		t.byID[a.ID] = a.Content
		if _, ok := t.vocab[a.Content]; !ok {
			t.vocab[a.Content] = a.ID
		}
	}
	sort.SliceStable(t.added, func(i, j int) bool { return len(t.added[i].content) > len(t.added[j].content) })

	if err := t.parsePost(&f); err != nil {
		return nil, err
	}
	if tr := f.Truncation; tr != nil {
		t.Truncation = &Truncation{MaxLength: tr.MaxLength, Strategy: snake(tr.Strategy), Left: tr.Direction == "Left"}
	}
	if pad, ok := t.vocab["[PAD]"]; ok {
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

func (t *Tokenizer) parsePost(f *fileJSON) error {
	p := f.PostProcessor
	if p == nil {
		t.single = []piece{{seq: 0}}
		t.pair = []piece{{seq: 0}, {seq: 1}}
		return nil
	}
	switch p.Type {
	case "TemplateProcessing":
		var err error
		if t.single, err = template(p.Single, p.SpecialTokens); err != nil {
			return err
		}
		if t.pair, err = template(p.Pair, p.SpecialTokens); err != nil {
			return err
		}
	case "BertProcessing":
		var sep, cls int64
		if len(p.Sep) != 2 || len(p.Cls) != 2 || json.Unmarshal(p.Sep[1], &sep) != nil || json.Unmarshal(p.Cls[1], &cls) != nil {
			return fmt.Errorf("BertProcessing: want sep and cls as [token, id]")
		}
		t.single = []piece{{special: []int64{cls}}, {seq: 0}, {special: []int64{sep}}}
		t.pair = []piece{{special: []int64{cls}}, {seq: 0}, {special: []int64{sep}}, {seq: 1, typeID: 1}, {special: []int64{sep}, typeID: 1}}
	default:
		return fmt.Errorf("post_processor %q is not supported (TemplateProcessing and BertProcessing are)", p.Type)
	}
	for _, pc := range t.single {
		t.nSingle += len(pc.special)
	}
	for _, pc := range t.pair {
		t.nPair += len(pc.special)
	}
	return nil
}

func template(items []map[string]json.RawMessage, specials map[string]struct {
	IDs []int64 `json:"ids"`
}) ([]piece, error) {
	var out []piece
	for _, it := range items {
		var v struct {
			ID     string `json:"id"`
			TypeID int64  `json:"type_id"`
		}
		if raw, ok := it["SpecialToken"]; ok {
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, err
			}
			s, ok := specials[v.ID]
			if !ok {
				return nil, fmt.Errorf("template names special token %q, which special_tokens lacks", v.ID)
			}
			out = append(out, piece{special: s.IDs, typeID: v.TypeID})
		} else if raw, ok := it["Sequence"]; ok {
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, err
			}
			seq := 0
			if v.ID == "B" {
				seq = 1
			}
			out = append(out, piece{seq: seq, typeID: v.TypeID})
		} else {
			return nil, fmt.Errorf("template item %v: want SpecialToken or Sequence", it)
		}
	}
	return out, nil
}

// Token returns the token string of an id ("" if unknown).
func (t *Tokenizer) Token(id int64) string { return t.byID[id] }

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

// Decode turns ids back into text as the WordPiece decoder does: word
// pieces (the continuing-subword prefix) joined to the word before, other
// tokens separated by a space, special tokens left out.
func (t *Tokenizer) Decode(ids []int64) string {
	var b []byte
	for _, id := range ids {
		b = t.AppendDecoded(b, id)
	}
	return string(b)
}

// AppendDecoded appends one token to text decoded so far, as Decode would:
// a generator decodes its reply a token at a time without decoding it all
// again.
func (t *Tokenizer) AppendDecoded(text []byte, id int64) []byte {
	tok, ok := t.byID[id]
	if !ok || t.isAdded(id) {
		return text
	}
	if rest, ok := strings.CutPrefix(tok, t.prefix); ok && len(text) > 0 {
		return append(text, rest...)
	}
	if len(text) > 0 && !(len(tok) == 1 && strings.ContainsAny(tok, ".,!?;:'")) {
		text = append(text, ' ')
	}
	return append(text, tok...)
}

func (t *Tokenizer) isAdded(id int64) bool {
	for _, a := range t.added {
		if a.id == id {
			return true
		}
	}
	return false
}

// Special returns the id of an added token, such as "[SEP]".
func (t *Tokenizer) Special(content string) (int64, bool) {
	for _, a := range t.added {
		if a.content == content {
			return a.id, true
		}
	}
	return 0, false
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
	var e Encoding
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
var ErrTooShort = fmt.Errorf("truncation: the sequence to truncate is shorter than what must be removed")

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

// token is one token of one text, before post-processing.
type token struct {
	id         int64
	start, end int // characters of the text
}

// tokens splits text on the added (special) tokens it contains, then
// normalizes, pre-tokenizes and WordPiece-encodes each stretch between
// them.
func (t *Tokenizer) tokens(text string) []token {
	runes := []rune(text)
	var out []token
	from := 0
	emit := func(end int) {
		if end > from {
			out = t.encodeStretch(runes[from:end], from, out)
		}
	}
	for i := 0; i < len(runes); {
		a, ok := t.addedAt(runes, i)
		if !ok {
			i++
			continue
		}
		emit(i)
		n := len([]rune(a.content))
		out = append(out, token{a.id, i, i + n})
		i += n
		from = i
	}
	emit(len(runes))
	return out
}

// addedAt returns the longest added token starting at runes[i].
func (t *Tokenizer) addedAt(runes []rune, i int) (addedToken, bool) {
	for _, a := range t.added {
		if hasPrefix(runes[i:], a.content) {
			return a, true
		}
	}
	return addedToken{}, false
}

func hasPrefix(runes []rune, s string) bool {
	j := 0
	for _, r := range s {
		if j >= len(runes) || runes[j] != r {
			return false
		}
		j++
	}
	return j > 0
}

// nchar is a normalized character and the index of the original character
// it came from.
type nchar struct {
	r    rune
	orig int
}

func (t *Tokenizer) encodeStretch(runes []rune, base int, out []token) []token {
	chars := t.normalize(runes, base)
	// BertPreTokenizer: whitespace separates words and is dropped; each
	// punctuation character is a word of its own.
	word := chars[:0:0]
	flush := func() {
		if len(word) > 0 {
			out = t.wordPiece(word, out)
			word = word[:0]
		}
	}
	for _, c := range chars {
		switch {
		case unicode.IsSpace(c.r):
			flush()
		case isPunct(c.r):
			flush()
			out = t.wordPiece([]nchar{c}, out)
		default:
			word = append(word, c)
		}
	}
	flush()
	return out
}

// normalize applies BertNormalizer, keeping each character's origin.
func (t *Tokenizer) normalize(runes []rune, base int) []nchar {
	out := make([]nchar, 0, len(runes))
	var buf [8]rune
	for i, r := range runes {
		o := base + i
		if t.clean {
			if r == 0 || r == 0xFFFD || isControl(r) {
				continue
			}
			if isWhitespace(r) {
				r = ' '
			}
		}
		if t.chinese && isChinese(r) {
			out = append(out, nchar{' ', o}, nchar{r, o}, nchar{' ', o})
			continue
		}
		rs := append(buf[:0], r)
		if t.stripAccents {
			rs = rs[:0]
			for _, d := range norm.NFD.String(string(r)) {
				if !unicode.Is(unicode.Mn, d) {
					rs = append(rs, d)
				}
			}
		}
		for _, d := range rs {
			if t.lowercase {
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

// wordPiece encodes one word greedily, longest match first; a word with a
// piece not in the vocabulary, or longer than max_input_chars_per_word, is
// one unknown token.
func (t *Tokenizer) wordPiece(word []nchar, out []token) []token {
	span := func(i, j int) (int, int) { return word[i].orig, word[j-1].orig + 1 }
	if len(word) > t.maxChars {
		s, e := span(0, len(word))
		return append(out, token{t.unk, s, e})
	}
	mark := len(out)
	var sb strings.Builder
	for start := 0; start < len(word); {
		end := len(word)
		found := false
		for ; start < end; end-- {
			sb.Reset()
			if start > 0 {
				sb.WriteString(t.prefix)
			}
			for _, c := range word[start:end] {
				sb.WriteRune(c.r)
			}
			if id, ok := t.vocab[sb.String()]; ok {
				s, e := span(start, end)
				out = append(out, token{id, s, e})
				found = true
				break
			}
		}
		if !found {
			s, e := span(0, len(word))
			return append(out[:mark], token{t.unk, s, e})
		}
		start = end
	}
	return out
}

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

// Pad pads a batch of encodings to the longest (or to length, if longer)
// and returns row-major ids, type ids and attention mask.
func Pad(encs []Encoding, length int, padID int64) (ids, typeIDs, mask []int64, width int) {
	width = length
	for _, e := range encs {
		width = max(width, e.Len())
	}
	n := len(encs) * width
	ids, typeIDs, mask = make([]int64, n), make([]int64, n), make([]int64, n)
	for i, e := range encs {
		row := i * width
		copy(ids[row:], e.IDs)
		copy(typeIDs[row:], e.TypeIDs)
		for j := range width {
			if j < e.Len() {
				mask[row+j] = 1
			} else {
				ids[row+j] = padID
			}
		}
	}
	return ids, typeIDs, mask, width
}
