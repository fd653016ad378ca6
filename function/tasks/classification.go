package tasks

import "math"

// Classification is a text classification turn's output.
type Classification struct {
	Label  string             `json:"label"`
	Score  float32            `json:"score"`
	Scores map[string]float32 `json:"scores"`
}

// classify turns logits into label probabilities: softmax, or a sigmoid
// per label for multi-label models, as Hugging Face's pipeline does.
func (m *Model) classify(logits []float32) Classification {
	p := make([]float32, len(logits))
	if m.MultiLabel {
		for i, x := range logits {
			p[i] = float32(1 / (1 + math.Exp(-float64(x))))
		}
	} else {
		copy(p, softmax(logits))
	}
	c := Classification{Scores: make(map[string]float32, len(p))}
	best := 0
	for i, v := range p {
		if v > p[best] {
			best = i
		}
		c.Scores[m.LabelName(i)] = v
	}
	if len(p) > 0 {
		c.Label, c.Score = m.LabelName(best), p[best]
	}
	return c
}

// softmax is numerically stable (the maximum subtracted first).
func softmax(x []float32) []float32 {
	out := make([]float32, len(x))
	if len(x) == 0 {
		return out
	}
	hi := x[0]
	for _, v := range x {
		hi = max(hi, v)
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - hi))
		out[i] = float32(e)
		sum += e
	}
	for i := range out {
		out[i] = float32(float64(out[i]) / sum)
	}
	return out
}
