package tokenizer

import (
	"fmt"

	json "github.com/goccy/go-json"
)

// piece is one element of a post-processing template: special token ids,
// or sequence 0 or 1, with its type id.
type piece struct {
	special []int64
	seq     int
	typeID  int64
}

// parsePost reads the post-processor: TemplateProcessing, BertProcessing,
// ByteLevel (offsets trimmed of spaces), or a Sequence of them.
func (t *Tokenizer) parsePost(raw json.RawMessage) error {
	t.single = []piece{{seq: 0}}
	t.pair = []piece{{seq: 0}, {seq: 1, typeID: 1}}
	if err := t.parsePostStep(raw, true); err != nil {
		return err
	}
	t.nSingle, t.nPair = 0, 0
	for _, pc := range t.single {
		t.nSingle += len(pc.special)
	}
	for _, pc := range t.pair {
		t.nPair += len(pc.special)
	}
	return nil
}

func (t *Tokenizer) parsePostStep(raw json.RawMessage, top bool) error {
	p, err := parseComponent(raw, "post_processor")
	if err != nil || p == nil {
		return err
	}
	switch p.Type {
	case "Sequence":
		if !top {
			return fmt.Errorf("post_processor Sequence inside a Sequence is not supported")
		}
		for _, r := range p.Processors {
			if err := t.parsePostStep(r, false); err != nil {
				return err
			}
		}
	case "TemplateProcessing":
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
	case "ByteLevel":
		if p.TrimOffsets {
			if !t.byteLevel {
				return fmt.Errorf("post_processor ByteLevel with trim_offsets needs a byte-level model")
			}
			t.trimOffsets = true
			t.prefixSpace = p.AddPrefixSpace == nil || *p.AddPrefixSpace
		}
	default:
		return fmt.Errorf("post_processor %q is not supported (TemplateProcessing, BertProcessing, ByteLevel and Sequence are)", p.Type)
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

// trim is the ByteLevel post-processor's trim_offsets: a token's leading
// and trailing spaces are left out of its offsets (a single leading space
// of the first token is kept when the pre-tokenizer added it). It works on
// character offsets, as the library's does (its encodings have them by
// then), a space being one character.
func (t *Tokenizer) trim(toks []token) {
	for i := range toks {
		b := &toks[i]
		raw := t.raw[b.id]
		lead, trail := 0, 0
		for lead < len(raw) && raw[lead] == ' ' {
			lead++
		}
		// Counted apart, as the library does: a token of spaces only has
		// them at both ends.
		for trail < len(raw) && raw[len(raw)-1-trail] == ' ' {
			trail++
		}
		if lead > 0 {
			if (i == 0 || b.start == 0) && t.prefixSpace && lead == 1 {
				lead = 0
			}
			b.start = min(b.start+lead, b.end)
		}
		if trail > 0 && b.end >= trail {
			b.end = max(b.end-trail, b.start)
		}
	}
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
