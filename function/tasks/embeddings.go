package tasks

import (
	"math"

	"github.com/sous-ai/sous/function/model"
)

// Embedding is a feature extraction turn's output.
type Embedding struct {
	Embedding []float32 `json:"embedding"`
	Dims      int       `json:"dims"`
}

// embed mean-pools last_hidden_state [1, S, H] over the row's tokens and
// L2-normalizes the result, as sentence-transformers models are used. The
// batch's padding is gone already: the engine trims each row's output to
// its own length, so every position left is under attention mask 1.
func embed(t model.Tensor) Embedding {
	s, h := int(t.Shape[1]), int(t.Shape[2])
	v := make([]float64, h)
	for i := range s {
		for j := range h {
			v[j] += float64(t.F32[i*h+j])
		}
	}
	var norm float64
	for j := range v {
		v[j] /= float64(max(s, 1))
		norm += v[j] * v[j]
	}
	norm = max(math.Sqrt(norm), 1e-12)
	out := make([]float32, h)
	for j := range v {
		out[j] = float32(v[j] / norm)
	}
	return Embedding{Embedding: out, Dims: h}
}
