package generate

import (
	"context"
	"slices"

	"github.com/sous-ai/sous/function/model"
)

// pastKV is Optimum's form: each sequence holds its own keys and values
// per layer as a dense [heads, length, head_dim] slice that grows by one
// position a step. A step lays the batch's pasts out left-padded to the
// longest, with the attention mask zero on the padding, and takes each
// row's present back without it. The graph concatenates past and new and
// returns a new present every step, so a copy per step is unavoidable;
// holding KV per sequence (not in one shared padded buffer) lets sequences
// of any length join or leave at any step with no re-layout of the others,
// and a sequence holds only the positions it has.
type pastKV struct {
	e *Engine
	// pastBuf and presentBuf hold each layer's batched pasts and the
	// step's presents: the loop's own, reused step after step (ONNX
	// Runtime reads and writes them during Run).
	pastBuf, presentBuf [][2][]float32
}

func (k *pastKV) String() string { return "Optimum form (past_key_values)" }

func (k *pastKV) reserve(n int) (int, error) { return n, nil }

func (k *pastKV) move(s *seq, to int) { s.slot = to }

func (k *pastKV) fork(from, to *seq) {
	to.kv = make([][2][]float32, len(from.kv))
	for l := range from.kv {
		for kind := range 2 {
			to.kv[l][kind] = slices.Clone(from.kv[l][kind])
		}
	}
}

func (k *pastKV) kvOf(s *seq) [][2][]float32 { return s.kv }

func (k *pastKV) prefill(ctx context.Context, s *seq, ins []model.Tensor, past int, pkv [][2][]float32) error {
	sh := k.e.shape
	for l := range sh.layers {
		for kind := range 2 {
			t := model.Tensor{DType: model.FP32, Shape: []int64{1, sh.heads, int64(past), sh.hd}, F32: []float32{}}
			if past > 0 {
				t.F32 = pkv[l][kind]
			}
			ins[sh.past[l][kind]] = t
		}
	}
	outs, err := k.e.m.RunWhole(ctx, ins)
	if err != nil {
		return err
	}
	s.kv = make([][2][]float32, sh.layers)
	for l := range sh.layers {
		for kind := range 2 {
			s.kv[l][kind] = outs[sh.present[l][kind]].F32
		}
	}
	s.length = len(s.prompt)
	k.e.emitLast(s, outs[sh.logits])
	return nil
}

func (k *pastKV) step(ctx context.Context, active []*seq) error {
	sh := k.e.shape
	b := int64(len(active))
	p := int64(longest(active))
	ins := k.e.stepInputs(active, p, true)
	rowSize := sh.heads * p * sh.hd
	if len(k.pastBuf) != sh.layers {
		k.pastBuf = make([][2][]float32, sh.layers)
		k.presentBuf = make([][2][]float32, sh.layers)
	}
	for l := range sh.layers {
		for kind := range 2 {
			if int64(cap(k.pastBuf[l][kind])) < b*rowSize {
				k.pastBuf[l][kind] = make([]float32, b*rowSize, 2*b*rowSize)
			}
			past := k.pastBuf[l][kind][:b*rowSize]
			for i, s := range active {
				row, pad := past[int64(i)*rowSize:], p-int64(s.length)
				for h := range sh.heads {
					clear(row[h*p*sh.hd : h*p*sh.hd+pad*sh.hd])
				}
				copyHeads(row[pad*sh.hd:], p*sh.hd, s.kv[l][kind], int64(s.length)*sh.hd, sh.heads, int64(s.length)*sh.hd)
			}
			ins[sh.past[l][kind]] = model.Tensor{DType: model.FP32, Shape: []int64{b, sh.heads, p, sh.hd}, F32: past}
		}
	}
	// Presents [b, heads, p+1, hd] and logits go into the loop's own
	// buffers, not ONNX Runtime's (which would be copied out again).
	bind := k.e.bound(nil, b, 1)
	n := b * sh.heads * (p + 1) * sh.hd
	for l := range sh.layers {
		for kind := range 2 {
			if int64(cap(k.presentBuf[l][kind])) < n {
				k.presentBuf[l][kind] = make([]float32, n, 2*n)
			}
			bind.Into[sh.present[l][kind]] = model.Tensor{DType: model.FP32, Shape: []int64{b, sh.heads, p + 1, sh.hd}, F32: k.presentBuf[l][kind][:n]}
		}
	}
	return k.e.m.RunBound(ctx, ins, bind, func(outs []model.Tensor) error {
		k.take(active, outs, p)
		k.e.emitRows(active, outs[sh.logits])
		return nil
	})
}

// take copies each row's present (less its padding) into its sequence's
// KV.
func (k *pastKV) take(active []*seq, outs []model.Tensor, p int64) {
	sh := k.e.shape
	outSize := sh.heads * (p + 1) * sh.hd
	for i, s := range active {
		pad := p - int64(s.length)
		n := int64(s.length) + 1
		for l := range sh.layers {
			for kind := range 2 {
				kv := make([]float32, sh.heads*n*sh.hd)
				copyHeads(kv, n*sh.hd, outs[sh.present[l][kind]].F32[int64(i)*outSize+pad*sh.hd:], (p+1)*sh.hd, sh.heads, n*sh.hd)
				s.kv[l][kind] = kv
			}
		}
		s.length++
	}
}
