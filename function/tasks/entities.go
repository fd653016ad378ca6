package tasks

import (
	"strings"

	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/tokenizer"
)

// Entity is one entity of a token classification turn. Start and End are
// character offsets into the turn's text; Word is that stretch of it.
type Entity struct {
	Entity string  `json:"entity"`
	Score  float32 `json:"score"`
	Start  int     `json:"start"`
	End    int     `json:"end"`
	Word   string  `json:"word"`
	Index  int     `json:"index,omitempty"` // the token's position, for aggregation none
}

// preEntity is one token of the turn's text with its label scores.
type preEntity struct {
	scores     []float32
	start, end int
	index      int
	subword    bool
}

// entities follows Hugging Face's TokenClassificationPipeline: the text's
// tokens (no special tokens, none of the context) with softmax scores,
// aggregated as m.Aggregation says, entities labelled O dropped.
func (m *Model) entities(text string, e tokenizer.Encoding, logits model.Tensor) []Entity {
	runes := []rune(text)
	labels := int(logits.Shape[2])
	last := int8(0)
	for _, s := range e.Sequence {
		last = max(last, s)
	}
	var pre []preEntity
	for i := range e.Len() {
		if i >= int(logits.Shape[1]) || e.Sequence[i] != last {
			continue
		}
		start, end := e.Offsets[i][0], e.Offsets[i][1]
		// The pipeline's test for a word piece: the token's text differs in
		// length from the text it covers ("##ing" against "ing").
		tok := m.Tok.Token(e.IDs[i])
		pre = append(pre, preEntity{
			scores: softmax(logits.F32[i*labels : (i+1)*labels]), start: start, end: end, index: i,
			subword: start > 0 && len([]rune(tok)) != end-start,
		})
	}
	word := func(s, e int) string {
		if s < 0 || e > len(runes) || s > e {
			return ""
		}
		return string(runes[s:e])
	}
	var ents []Entity
	switch m.Aggregation {
	case "none", "simple":
		for _, p := range pre {
			best := argmax(p.scores)
			ents = append(ents, Entity{Entity: m.LabelName(best), Score: p.scores[best], Start: p.start, End: p.end, Word: word(p.start, p.end), Index: p.index})
		}
	default:
		var group []preEntity
		flush := func() {
			if len(group) > 0 {
				ents = append(ents, m.aggregateWord(group, word))
				group = group[:0]
			}
		}
		for _, p := range pre {
			if !p.subword {
				flush()
			}
			group = append(group, p)
		}
		flush()
	}
	if m.Aggregation != "none" {
		ents = groupEntities(ents, word)
		for i := range ents {
			ents[i].Index = 0
		}
	}
	out := ents[:0]
	for _, en := range ents {
		if en.Entity != "O" {
			out = append(out, en)
		}
	}
	return out
}

// aggregateWord labels a word from its tokens: the first token's scores,
// the scores of the token with the highest score, or the average.
func (m *Model) aggregateWord(toks []preEntity, word func(int, int) string) Entity {
	var scores []float32
	switch m.Aggregation {
	case "first":
		scores = toks[0].scores
	case "max":
		best, bestScore := 0, float32(-1)
		for i, t := range toks {
			if s := t.scores[argmax(t.scores)]; s > bestScore {
				best, bestScore = i, s
			}
		}
		scores = toks[best].scores
	default: // average
		scores = make([]float32, len(toks[0].scores))
		for _, t := range toks {
			for j, s := range t.scores {
				scores[j] += s / float32(len(toks))
			}
		}
	}
	best := argmax(scores)
	start, end := toks[0].start, toks[len(toks)-1].end
	return Entity{Entity: m.LabelName(best), Score: scores[best], Start: start, End: end, Word: word(start, end)}
}

// tag splits B-X and I-X; a label in neither form continues (I).
func tag(label string) (bi byte, t string) {
	if strings.HasPrefix(label, "B-") {
		return 'B', label[2:]
	}
	if strings.HasPrefix(label, "I-") {
		return 'I', label[2:]
	}
	return 'I', label
}

// groupEntities joins adjacent entities of one tag (a B- starts a new
// one), scoring each group by its members' mean.
func groupEntities(ents []Entity, word func(int, int) string) []Entity {
	var out, group []Entity
	flush := func() {
		if len(group) == 0 {
			return
		}
		_, t := tag(group[0].Entity)
		var sum float32
		for _, g := range group {
			sum += g.Score
		}
		start, end := group[0].Start, group[len(group)-1].End
		out = append(out, Entity{Entity: t, Score: sum / float32(len(group)), Start: start, End: end, Word: word(start, end)})
		group = group[:0]
	}
	for _, en := range ents {
		if len(group) > 0 {
			bi, t := tag(en.Entity)
			_, lastT := tag(group[len(group)-1].Entity)
			if t != lastT || bi == 'B' {
				flush()
			}
		}
		group = append(group, en)
	}
	flush()
	return out
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}
