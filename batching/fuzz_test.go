package batching

import (
	"context"
	"fmt"
	"testing"
)

// FuzzRing drives random sequences of submit, cancel and dispatch, with
// wrap-around of a small ring, against a slice-based reference model.
func FuzzRing(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 0, 0, 2, 2, 2})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 2, 2, 2, 2})
	f.Add([]byte{0x30, 0x50, 0x70, 0x02, 0x90, 0x01, 0x02, 0x02})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const capacity, maxBatch, maxCost = 5, 3, 6
		b := New(Params{Capacity: capacity, MaxBatch: maxBatch, MaxCost: maxCost, Workers: 1}, double,
			WithCost(func(v int) int64 { return int64(v % 4) }))
		b.running = true // drive take directly, without executor goroutines

		type ref struct {
			v      int
			cancel context.CancelFunc
			ctx    context.Context
		}
		var model []ref
		next := 0
		buf := batchBuf[int, int]{out: make([]int, maxBatch)}
		for _, op := range ops {
			switch op % 3 {
			case 0: // submit
				ctx, cancel := context.WithCancel(context.Background())
				v := next*4 + int(op>>4)%4
				next++
				_, err := b.submit(ctx, v)
				if len(model) == capacity {
					if err != ErrFull {
						t.Fatalf("submit to full ring: %v", err)
					}
					cancel()
					continue
				}
				if err != nil {
					t.Fatalf("submit: %v", err)
				}
				model = append(model, ref{v, cancel, ctx})
			case 1: // cancel the k-th queued item
				if len(model) > 0 {
					model[int(op>>2)%len(model)].cancel()
				}
			case 2: // dispatch
				var want []int
				var kept []ref
				var cost int64
				i := 0
				for ; i < len(model) && len(want) < maxBatch; i++ {
					r := model[i]
					if r.ctx.Err() != nil {
						continue
					}
					c := int64(r.v % 4)
					if len(want) > 0 && cost+c > maxCost {
						break
					}
					cost += c
					want = append(want, r.v)
				}
				kept = append(kept, model[i:]...)
				model = kept
				n, _, _ := b.take(&buf, false)
				if got := buf.in[:n]; fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
					t.Fatalf("dispatched %v, want %v", got, want)
				}
				b.inSystem -= n
			}
			if got, want := b.Len(), len(model); got != want {
				t.Fatalf("queue length %d, want %d", got, want)
			}
		}
	})
}
