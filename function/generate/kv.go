package generate

import (
	"context"
	"fmt"

	"github.com/sous-ai/sous/function/model"
)

// kvLayout is where a model form keeps its sequences' keys and values and
// how it runs prefills and decode steps over them. Only the engine's loop
// calls it.
type kvLayout interface {
	// reserve returns the KV positions a sequence of n positions
	// (prompt and MaxTokens) holds once admitted, or ErrTooLong.
	reserve(n int) (int, error)
	// prefill runs s's prompt from position past to end (pkv, if not
	// nil: the first past positions' KV, per layer [heads, past, hd],
	// from the prefix cache or s's own from the chunks before) into s's
	// KV, and, end being the prompt's end, hands out its first token.
	// ins holds the ids, mask and positions.
	prefill(ctx context.Context, s *seq, ins []model.Tensor, past, end int, pkv [][2][]byte) error
	// step runs one decode call for the active sequences (active[i] in
	// slot i) and hands each its token.
	step(ctx context.Context, active []*seq) error
	// fork gives to (in its own slot) a copy of from's KV, after from's
	// prefill.
	fork(from, to *seq)
	// move gives s slot to (the last active sequence taking a leaver's
	// place).
	move(s *seq, to int)
	// kvOf is s's KV, per layer [heads, s.length, hd], for the prefix
	// cache; it may be s's own (the caller keeps it, s is retiring).
	kvOf(s *seq) [][2][]byte
	fmt.Stringer
}

// KV is held as bytes whatever its element type (the model's, FP32 or
// FP16/BF16: the type of its past inputs), so that one code moves it; a
// tensor views those bytes as its elements (kvShape.tensor).

// copyHeads copies n bytes of each of heads heads from src, whose heads
// start srcStride bytes apart, into dst, whose heads start dstStride
// apart: the per-head copies between KV layouts of different lengths.
func copyHeads(dst []byte, dstStride int64, src []byte, srcStride int64, heads, n int64) {
	for h := range heads {
		copy(dst[h*dstStride:h*dstStride+n], src[h*srcStride:h*srcStride+n])
	}
}

// headsPrefix copies the first n of length positions of each head of kv
// [heads, length, hd] (row: one position's bytes, hd elements).
func headsPrefix(kv []byte, heads, length, n, row int64) []byte {
	out := make([]byte, heads*n*row)
	copyHeads(out, n*row, kv, length*row, heads, n*row)
	return out
}
