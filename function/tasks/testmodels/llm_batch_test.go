package testmodels

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/sous-ai/sous/function/model"
)

// run feeds the decoder one call: ids [B, S], mask [B, past+S], positions
// [B, S], pasts (nil: zero-length), num_logits_to_keep 0 (every
// position's logits). It returns the logits and the presents by name.
func runLLM(t *testing.T, e *model.Engine, rows int64, ids, mask, pos []int64, pasts map[string]model.Tensor) (model.Tensor, map[string]model.Tensor) {
	t.Helper()
	s := int64(len(ids)) / rows
	var feed []model.Tensor
	for _, in := range e.Inputs() {
		switch in.Name {
		case "input_ids":
			feed = append(feed, model.Tensor{Name: in.Name, DType: model.INT64, Shape: []int64{rows, s}, I64: ids})
		case "attention_mask":
			feed = append(feed, model.Tensor{Name: in.Name, DType: model.INT64, Shape: []int64{rows, int64(len(mask)) / rows}, I64: mask})
		case "position_ids":
			feed = append(feed, model.Tensor{Name: in.Name, DType: model.INT64, Shape: []int64{rows, s}, I64: pos})
		case "num_logits_to_keep":
			feed = append(feed, model.Tensor{Name: in.Name, DType: model.INT64, Shape: []int64{}, I64: []int64{0}})
		default:
			p, ok := pasts[in.Name]
			if !ok {
				p = model.NewTensor(in.Name, in.DType, []int64{rows, in.Shape[1], 0, in.Shape[3]})
			}
			feed = append(feed, p)
		}
	}
	outs, err := e.RunWhole(context.Background(), feed)
	if err != nil {
		t.Fatal(err)
	}
	presents := map[string]model.Tensor{}
	for _, o := range outs[1:] {
		presents["past_key_values"+o.Name[len("present"):]] = o
	}
	return outs[0], presents
}

// row returns logits[b, i, :].
func row(l model.Tensor, b, i int64) []float32 {
	v, s := l.Shape[2], l.Shape[1]
	return l.F32[(b*s+i)*v : (b*s+i+1)*v]
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// A batch of sequences of different lengths, left-padded with the mask
// and positions as transformers.js computes them, gives each sequence the
// logits it gets alone, at the prefill and at the decode step after it:
// the graph honours the attention mask over past and new positions, which
// batching sequences together needs.
func TestLLMBatchedMatchesAlone(t *testing.T) {
	lib := model.FindLibrary()
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("ONNX Runtime library %s: %v (run `make test`, which fetches it)", lib, err)
	}
	g := newLLMWeights().graph(LLMVariants[0]) // fp32
	e, err := model.New(model.Params{Library: lib, Data: g.Marshal(), Name: "llm", Device: model.DeviceCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()

	a, b := []int64{151644, 872, 198, 9707, 11}, []int64{151644, 77091, 198}
	const pad = llmBOS
	// Alone.
	la, pa := runLLM(t, e, 1, a, []int64{1, 1, 1, 1, 1}, []int64{0, 1, 2, 3, 4}, nil)
	lb, pb := runLLM(t, e, 1, b, []int64{1, 1, 1}, []int64{0, 1, 2}, nil)
	la2, _ := runLLM(t, e, 1, []int64{42}, []int64{1, 1, 1, 1, 1, 1}, []int64{5}, pa)
	lb2, _ := runLLM(t, e, 1, []int64{4242}, []int64{1, 1, 1, 1}, []int64{3}, pb)

	// Together: b left-padded by two.
	ids := append(append([]int64{}, a...), pad, pad, b[0], b[1], b[2])
	mask := []int64{1, 1, 1, 1, 1, 0, 0, 1, 1, 1}
	pos := []int64{0, 1, 2, 3, 4, 1, 1, 0, 1, 2} // cumsum - 1, pads 1
	l, p := runLLM(t, e, 2, ids, mask, pos, nil)
	l2, _ := runLLM(t, e, 2, []int64{42, 4242}, []int64{1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1}, []int64{5, 3}, p)

	for _, c := range []struct {
		name       string
		alone, bat []float32
	}{
		{"a prefill", row(la, 0, 4), row(l, 0, 4)}, {"b prefill", row(lb, 0, 2), row(l, 1, 4)},
		{"a step", row(la2, 0, 0), row(l2, 0, 0)}, {"b step", row(lb2, 0, 0), row(l2, 1, 0)},
	} {
		if d := maxDiff(c.alone, c.bat); d > 1e-3 {
			t.Errorf("%s: batched logits differ from alone by %g", c.name, d)
		} else {
			t.Logf("%s: batched logits within %.2g of alone", c.name, d)
		}
	}
}
