package generate

import (
	"math"
	"math/rand/v2"
	"sort"
)

// sample picks a token: the most likely (temperature 0), else one drawn
// from the softmax at the temperature, restricted to the top_k most likely
// and to the smallest set whose probability reaches top_p.
func sample(logits []float32, p Params, rng *rand.Rand) int64 {
	if p.Temperature <= 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return int64(best)
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	if p.TopK > 0 && p.TopK < len(idx) {
		idx = idx[:p.TopK]
	}
	probs := make([]float64, len(idx))
	hi := float64(logits[idx[0]])
	var sum float64
	for i, j := range idx {
		probs[i] = math.Exp((float64(logits[j]) - hi) / p.Temperature)
		sum += probs[i]
	}
	if p.TopP > 0 && p.TopP < 1 {
		var acc float64
		for i := range probs {
			acc += probs[i] / sum
			if acc >= p.TopP {
				idx, probs = idx[:i+1], probs[:i+1]
				break
			}
		}
		sum = 0
		for _, q := range probs {
			sum += q
		}
	}
	r := rng.Float64() * sum
	for i, q := range probs {
		if r -= q; r <= 0 {
			return int64(idx[i])
		}
	}
	return int64(idx[len(idx)-1])
}
