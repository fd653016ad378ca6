package generate

import (
	"context"
	"fmt"

	"github.com/sous-ai/sous/function/model"
)

// sharedKV is the GroupQueryAttention form: one slab per layer of
// fixed-length buffers [slots, kv_heads, buffer, head_dim], where active
// sequence i owns slot i. A step passes the first len(active) slots as
// past and binds the same memory as present: the operator appends each
// row's new position at its own length (seqlens_k, from the right-padded
// attention mask), so nothing is copied per step. A sequence that leaves
// gives its slot to the last active one (one sequence's KV copied, once).
// The price is memory: each sequence reserves a whole buffer however short
// it is, so SOUS_KV_TOKENS / buffer bounds the sequences in flight.
type sharedKV struct {
	e      *Engine
	slots  int
	buffer int64 // positions per slot
	// slab holds each layer's keys and values, slot after slot.
	slab [][2][]byte
	// outs maps each present output to its past input.
	outs map[int]int
}

func newSharedKV(e *Engine, slots int, buffer int64) *sharedKV {
	sh := e.shape
	k := &sharedKV{e: e, slots: slots, buffer: buffer, slab: make([][2][]byte, sh.layers), outs: make(map[int]int, 2*sh.layers)}
	// Allocated once; pages are touched only as slots fill.
	for l := range k.slab {
		for kind := range 2 {
			k.slab[l][kind] = make([]byte, int64(slots)*sh.heads*buffer*sh.row())
			k.outs[sh.present[l][kind]] = sh.past[l][kind]
		}
	}
	return k
}

func (k *sharedKV) String() string {
	return fmt.Sprintf("GroupQueryAttention form, %d buffers of %d positions", k.slots, k.buffer)
}

// reserve: a prompt and its reply must fit one buffer, which the sequence
// holds whole.
func (k *sharedKV) reserve(n int) (int, error) {
	if int64(n) > k.buffer {
		return 0, ErrTooLong
	}
	return int(k.buffer), nil
}

// slotKV is slot's buffer [kv_heads, buffer, hd] of layer l's keys (kind
// 0) or values (kind 1).
func (k *sharedKV) slotKV(l, kind, slot int) []byte {
	row := k.e.shape.heads * k.buffer * k.e.shape.row()
	return k.slab[l][kind][int64(slot)*row : int64(slot+1)*row]
}

func (k *sharedKV) move(s *seq, to int) {
	if s.slot == to {
		return
	}
	sh := k.e.shape
	for l := range sh.layers {
		for kind := range 2 {
			copyHeads(k.slotKV(l, kind, to), k.buffer*sh.row(), k.slotKV(l, kind, s.slot), k.buffer*sh.row(), sh.heads, int64(s.length)*sh.row())
		}
	}
	s.slot = to
}

func (k *sharedKV) fork(from, to *seq) {
	sh := k.e.shape
	for l := range sh.layers {
		for kind := range 2 {
			copyHeads(k.slotKV(l, kind, to.slot), k.buffer*sh.row(), k.slotKV(l, kind, from.slot), k.buffer*sh.row(), sh.heads, int64(from.length)*sh.row())
		}
	}
}

func (k *sharedKV) kvOf(s *seq) [][2][]byte {
	sh := k.e.shape
	kv := make([][2][]byte, sh.layers)
	for l := range kv {
		for kind := range 2 {
			kv[l][kind] = headsPrefix(k.slotKV(l, kind, s.slot), sh.heads, k.buffer, int64(s.length), sh.row())
		}
	}
	return kv
}

// prefill copies the cached prefix's KV, if any, into s's slot; the
// prompt's keys and values go straight into it (after its earlier
// chunks').
func (k *sharedKV) prefill(ctx context.Context, s *seq, ins []model.Tensor, past, end int, pkv [][2][]byte) error {
	sh := k.e.shape
	r := sh.row()
	for l := range sh.layers {
		for kind := range 2 {
			slot := k.slotKV(l, kind, s.slot)
			if past > 0 && pkv != nil {
				copyHeads(slot, k.buffer*r, pkv[l][kind], int64(past)*r, sh.heads, int64(past)*r)
			}
			ins[sh.past[l][kind]] = sh.tensor([]int64{1, sh.heads, k.buffer, sh.hd}, slot)
		}
	}
	return k.e.m.RunBound(ctx, ins, k.e.bound(k.outs, 1, k.e.logitRows(int64(end-past))), func(outs []model.Tensor) error {
		s.length = end
		if end == len(s.prompt) {
			k.e.emitLast(s, outs[sh.logits])
		}
		return nil
	})
}

// step: active sequence i is row and slot i; the mask is right-padded (row
// i's ones are its positions and the new one), which is what the graph
// turns into seqlens_k; the slab's first len(active) slots are past and
// present.
func (k *sharedKV) step(ctx context.Context, active []*seq) error {
	sh := k.e.shape
	b := int64(len(active))
	ins := k.e.stepInputs(active, int64(longest(active)), false)
	row := sh.heads * k.buffer * sh.row()
	for l := range sh.layers {
		for kind := range 2 {
			ins[sh.past[l][kind]] = sh.tensor([]int64{b, sh.heads, k.buffer, sh.hd}, k.slab[l][kind][:b*row])
		}
	}
	return k.e.m.RunBound(ctx, ins, k.e.bound(k.outs, b, 1), func(outs []model.Tensor) error {
		for _, s := range active {
			s.length++
		}
		k.e.emitRows(active, outs[sh.logits])
		return nil
	})
}
