package generate

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func randomLogits(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 3)
	}
	x[7], x[9] = 5, 5 // a tie
	return x
}

// topK equals a full sort's first k, ties by the lower index.
func TestTopKEqualsSort(t *testing.T) {
	x := randomLogits(5000, 1)
	all := make([]int, len(x))
	for i := range all {
		all[i] = i
	}
	sort.SliceStable(all, func(a, b int) bool { return x[all[a]] > x[all[b]] })
	for _, k := range []int{1, 2, 50, 64, 5000} {
		if got, want := topK(x, k), all[:k]; !slices.Equal(got, want) {
			t.Errorf("topK(%d) = %v…, want %v…", k, got[:min(5, k)], want[:min(5, k)])
		}
	}
}

// Sampling draws from the distribution it promises: the frequencies of
// many draws match the restricted softmax (a chi-square-free check: each
// candidate within 4 standard deviations), and nothing outside top_k or
// the nucleus is ever drawn.
func TestSampleDistribution(t *testing.T) {
	x := randomLogits(2000, 2)
	for _, p := range []Params{
		{Temperature: 1},
		{Temperature: 0.7, TopK: 20},
		{Temperature: 1.3, TopP: 0.9},
		{Temperature: 1, TopK: 100, TopP: 0.5},
	} {
		// The expected distribution, from a full sort.
		order := make([]int, len(x))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return x[order[a]] > x[order[b]] })
		if p.TopK > 0 {
			order = order[:p.TopK]
		}
		var total float64
		for _, v := range x {
			total += math.Exp(float64(v-x[order[0]]) / p.Temperature)
		}
		var keep []int
		var acc float64
		for _, j := range order {
			keep = append(keep, j)
			acc += math.Exp(float64(x[j]-x[order[0]])/p.Temperature) / total
			if p.TopP > 0 && acc >= p.TopP {
				break
			}
		}
		want := map[int]float64{}
		var sum float64
		for _, j := range keep {
			want[j] = math.Exp(float64(x[j]-x[order[0]]) / p.Temperature)
			sum += want[j]
		}
		const draws = 40000
		got := map[int]int{}
		rng := rand.New(rand.NewPCG(3, 4))
		for range draws {
			got[int(sample(x, p, rng))]++
		}
		for j := range got {
			if _, ok := want[j]; !ok {
				t.Fatalf("%+v: drew %d, outside the candidates", p, j)
			}
		}
		for j, w := range want {
			q := w / sum
			if sd := math.Sqrt(draws * q * (1 - q)); math.Abs(float64(got[j])-draws*q) > 4*sd+1 {
				t.Errorf("%+v: token %d drawn %d times, want %.0f ± %.0f", p, j, got[j], draws*q, 4*sd)
			}
		}
	}
}

// At a real vocabulary's size, sampling costs a pass or two over the
// logits, not a sort: compare against sorting the whole vocabulary.
func BenchmarkSample151k(b *testing.B) {
	// A language model's logits are peaked: a few tokens stand out of a
	// long tail (here the tail's logits fall with the log of their rank).
	x := randomLogits(151669, 5)
	perm := rand.New(rand.NewPCG(6, 7)).Perm(len(x))
	for r, i := range perm {
		x[i] = float32(12 - 2.5*math.Log1p(float64(r)))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bc := range []struct {
		name string
		p    Params
	}{
		{"top_k_50", Params{Temperature: 1, TopK: 50}},
		{"top_p_0.95", Params{Temperature: 1, TopP: 0.95}},
		{"temperature_only", Params{Temperature: 1}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sample(x, bc.p, rng)
			}
		})
	}
	b.Run("full_sort_reference", func(b *testing.B) {
		b.ReportAllocs()
		idx := make([]int, len(x))
		for b.Loop() {
			for i := range idx {
				idx[i] = i
			}
			sort.Slice(idx, func(a, c int) bool { return x[idx[a]] > x[idx[c]] })
		}
	})
}

// Penalties lower a generated token's logit by its count times the
// frequency penalty plus the presence penalty once it appeared; logprobs
// are the raw log-softmax, whatever the penalties did.
func TestPenaltiesAndLogprobs(t *testing.T) {
	s := &seq{p: Params{FrequencyPenalty: 0.5, PresencePenalty: 1, Logprobs: true, TopLogprobs: 2}, counts: map[int64]int{2: 3}}
	logits := []float32{1, 2, 4, 0}
	lse, top := logSoftmaxTop(logits, 2)
	by := s.penalize(logits)
	if got, want := logits, []float32{1, 2, 4 - 0.5*3 - 1, 0}; !slices.Equal(got, want) {
		t.Errorf("penalized logits %v, want %v", got, want)
	}
	if by(2) != 2.5 || by(1) != 0 {
		t.Errorf("penalty of token 2 %g, token 1 %g; want 2.5, 0", by(2), by(1))
	}
	wantLSE := math.Log(math.Exp(1) + math.Exp(2) + math.Exp(4) + 1)
	if math.Abs(lse-wantLSE) > 1e-9 || len(top) != 2 || top[0].ID != 2 || top[1].ID != 1 ||
		math.Abs(float64(top[0].Logprob)-(4-wantLSE)) > 1e-6 {
		t.Errorf("logsumexp %g top %v, want %g and tokens 2, 1", lse, top, wantLSE)
	}
}

// evenOnly is a constraint that allows even ids, and is done after three.
type evenOnly struct{ n int }

func (c *evenOnly) Allowed(id int) bool { return id%2 == 0 }
func (c *evenOnly) FillMask(dst []uint64) {
	for i := range dst {
		dst[i] = 0x5555555555555555
	}
}
func (c *evenOnly) Accept(id int) error {
	if id%2 != 0 {
		return errors.New("odd")
	}
	c.n++
	return nil
}
func (c *evenOnly) Done() bool { return c.n == 3 }

// A constrained sequence draws only what its constraint allows, masked
// only on rejection, and ends when the constraint is done.
func TestConstraintMasksOnRejection(t *testing.T) {
	e := &Engine{opt: Options{}}
	c := &evenOnly{}
	s := &seq{p: Params{Temperature: 1, Constraint: c}, rng: rand.New(rand.NewPCG(1, 2)), done: make(chan Result, 1)}
	for range 3 {
		logits := randomLogits(1000, uint64(len(s.out)))
		logits[501] = 50 // an odd id the model prefers
		e.emit(s, logits)
	}
	for _, id := range s.out {
		if id%2 != 0 {
			t.Errorf("constrained draw %d is odd", id)
		}
	}
	if !e.finished(s) || s.finish != FinishStop {
		t.Errorf("after three accepted tokens: finished %q, want stop", s.finish)
	}
}
