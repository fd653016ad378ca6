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
	pastBuf, presentBuf [][2][]byte
}

func (k *pastKV) String() string { return "Optimum form (past_key_values)" }

func (k *pastKV) reserve(n int) (int, error) { return n, nil }

func (k *pastKV) move(s *seq, to int) { s.slot = to }

func (k *pastKV) fork(from, to *seq) {
	to.kv = make([][2][]byte, len(from.kv))
	for l := range from.kv {
		for kind := range 2 {
			to.kv[l][kind] = slices.Clone(from.kv[l][kind])
		}
	}
}

func (k *pastKV) kvOf(s *seq) [][2][]byte { return s.kv }

func (k *pastKV) prefill(ctx context.Context, s *seq, ins []model.Tensor, past, end int, pkv [][2][]byte) error {
	sh := k.e.shape
	for l := range sh.layers {
		for kind := range 2 {
			var b []byte
			if past > 0 {
				b = pkv[l][kind]
			}
			ins[sh.past[l][kind]] = sh.tensor([]int64{1, sh.heads, int64(past), sh.hd}, b)
		}
	}
	// Presents [1, heads, end, hd] and the logits into memory the loop
	// owns (ONNX Runtime's own FP16 outputs cannot be copied out whole).
	n := int64(end)
	bind := k.e.bound(nil, 1, k.e.logitRows(n-int64(past)))
	kv := make([][2][]byte, sh.layers)
	for l := range sh.layers {
		for kind := range 2 {
			kv[l][kind] = make([]byte, sh.heads*n*sh.row())
			bind.Into[sh.present[l][kind]] = sh.tensor([]int64{1, sh.heads, n, sh.hd}, kv[l][kind])
		}
	}
	return k.e.m.RunBound(ctx, ins, bind, func(outs []model.Tensor) error {
		s.kv, s.length = kv, end
		if end == len(s.prompt) {
			k.e.emitLast(s, outs[sh.logits])
		}
		return nil
	})
}

func (k *pastKV) step(ctx context.Context, active []*seq) error {
	sh := k.e.shape
	b := int64(len(active))
	p := int64(longest(active))
	ins := k.e.stepInputs(active, p, true)
	r := sh.row()
	rowSize := sh.heads * p * r
	if len(k.pastBuf) != sh.layers {
		k.pastBuf = make([][2][]byte, sh.layers)
		k.presentBuf = make([][2][]byte, sh.layers)
	}
	for l := range sh.layers {
		for kind := range 2 {
			if int64(cap(k.pastBuf[l][kind])) < b*rowSize {
				k.pastBuf[l][kind] = make([]byte, b*rowSize, 2*b*rowSize)
			}
			past := k.pastBuf[l][kind][:b*rowSize]
			for i, s := range active {
				row, pad := past[int64(i)*rowSize:], p-int64(s.length)
				for h := range sh.heads {
					clear(row[h*p*r : h*p*r+pad*r])
				}
				copyHeads(row[pad*r:], p*r, s.kv[l][kind], int64(s.length)*r, sh.heads, int64(s.length)*r)
			}
			ins[sh.past[l][kind]] = sh.tensor([]int64{b, sh.heads, p, sh.hd}, past)
		}
	}
	// Presents [b, heads, p+1, hd] and logits go into the loop's own
	// buffers, not ONNX Runtime's (which would be copied out again).
	bind := k.e.bound(nil, b, 1)
	n := b * sh.heads * (p + 1) * r
	for l := range sh.layers {
		for kind := range 2 {
			if int64(cap(k.presentBuf[l][kind])) < n {
				k.presentBuf[l][kind] = make([]byte, n, 2*n)
			}
			k.presentBuf[l][kind] = k.presentBuf[l][kind][:n]
			bind.Into[sh.present[l][kind]] = sh.tensor([]int64{b, sh.heads, p + 1, sh.hd}, k.presentBuf[l][kind])
		}
	}
	return k.e.m.RunBound(ctx, ins, bind, func(outs []model.Tensor) error {
		k.take(active, p)
		k.e.emitRows(active, outs[sh.logits])
		return nil
	})
}

// take copies each row's present (less its padding) into its sequence's
// KV.
func (k *pastKV) take(active []*seq, p int64) {
	sh := k.e.shape
	r := sh.row()
	outSize := sh.heads * (p + 1) * r
	for i, s := range active {
		pad := p - int64(s.length)
		n := int64(s.length) + 1
		for l := range sh.layers {
			for kind := range 2 {
				kv := make([]byte, sh.heads*n*r)
				copyHeads(kv, n*r, k.presentBuf[l][kind][int64(i)*outSize+pad*r:], (p+1)*r, sh.heads, n*r)
				s.kv[l][kind] = kv
			}
		}
		s.length++
	}
}
