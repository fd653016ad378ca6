package generate

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

// sample picks a token: the most likely (temperature 0), else one drawn
// from the softmax at the temperature, restricted to the top_k most likely
// and to the smallest set, most likely first, whose probability reaches
// top_p. Nothing sorts the whole vocabulary: top_k is a heap of k, and
// top_p grows a partial selection until its mass reaches p (a nucleus is
// a few hundred tokens of 151k).
func sample(logits []float32, p Params, rng *rand.Rand) int64 {
	if p.Temperature <= 0 {
		return int64(argmax(logits))
	}
	topP := p.TopP > 0 && p.TopP < 1
	if p.TopK <= 0 && !topP {
		// The whole vocabulary, in index order: one pass for the sum, one
		// for the draw.
		hi := logits[argmax(logits)]
		var sum float64
		for _, v := range logits {
			sum += math.Exp((float64(v) - float64(hi)) / p.Temperature)
		}
		r := rng.Float64() * sum
		for i, v := range logits {
			if r -= math.Exp((float64(v) - float64(hi)) / p.Temperature); r <= 0 {
				return int64(i)
			}
		}
		return int64(len(logits) - 1)
	}
	k := len(logits)
	if p.TopK > 0 {
		k = min(k, p.TopK)
	}
	var idx []int
	var probs []float64
	if !topP {
		idx = topK(logits, k)
		probs = weights(logits, idx, p.Temperature)
	} else {
		// The nucleus: the top n candidates, n doubled until their mass
		// (of the whole softmax) reaches top_p or top_k caps them.
		hi := float64(logits[argmax(logits)])
		var total float64
		for _, v := range logits {
			total += math.Exp((float64(v) - hi) / p.Temperature)
		}
		for n := min(k, 64); ; n = min(k, 2*n) {
			if n > len(logits)/16 {
				// A flat distribution's nucleus is a large share of the
				// vocabulary: past this, one sort costs less than more
				// selections.
				n = k
			}
			idx = topK(logits, n)
			probs = weights(logits, idx, p.Temperature)
			var acc float64
			cut := -1
			for i, q := range probs {
				acc += q / total
				if acc >= p.TopP {
					cut = i + 1
					break
				}
			}
			if cut > 0 {
				idx, probs = idx[:cut], probs[:cut]
				break
			}
			if n == k {
				break
			}
		}
	}
	var sum float64
	for _, q := range probs {
		sum += q
	}
	r := rng.Float64() * sum
	for i, q := range probs {
		if r -= q; r <= 0 {
			return int64(idx[i])
		}
	}
	return int64(idx[len(idx)-1])
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

// weights are exp((logit - max) / temperature) of the candidates idx, the
// most likely first.
func weights(logits []float32, idx []int, temperature float64) []float64 {
	hi := float64(logits[idx[0]])
	w := make([]float64, len(idx))
	for i, j := range idx {
		w[i] = math.Exp((float64(logits[j]) - hi) / temperature)
	}
	return w
}

// topK returns the indexes of the k largest logits, largest first (ties:
// the lower index first): one pass keeping a min-heap of k.
func topK(logits []float32, k int) []int {
	if k > len(logits)/16 {
		// A large share of the vocabulary: one sort beats a heap of it.
		all := make([]int, len(logits))
		for i := range all {
			all[i] = i
		}
		slices.SortStableFunc(all, func(a, b int) int { return cmp.Compare(logits[b], logits[a]) })
		return all[:k]
	}
	less := func(a, b int) bool { // a ranks below b
		return logits[a] < logits[b] || logits[a] == logits[b] && a > b
	}
	h := make([]int, 0, k)
	down := func(i int) {
		for {
			l, r, m := 2*i+1, 2*i+2, i
			if l < len(h) && less(h[l], h[m]) {
				m = l
			}
			if r < len(h) && less(h[r], h[m]) {
				m = r
			}
			if m == i {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for i := range logits {
		if len(h) < k {
			h = append(h, i)
			for j := len(h) - 1; j > 0 && less(h[j], h[(j-1)/2]); j = (j - 1) / 2 {
				h[j], h[(j-1)/2] = h[(j-1)/2], h[j]
			}
			continue
		}
		if less(h[0], i) {
			h[0] = i
			down(0)
		}
	}
	slices.SortFunc(h, func(a, b int) int {
		if c := cmp.Compare(logits[b], logits[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	return h
}
