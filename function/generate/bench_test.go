package generate

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// BenchmarkDecode32 generates 32 tokens for each of 32 concurrent
// sequences (30-token prompts) on the bench-sized decoder (512 wide, 4
// layers), in each form: b.N rounds.
func BenchmarkDecode32(b *testing.B) {
	for _, f := range []struct {
		name   string
		gqa    bool
		shared int
	}{{"optimum", false, 0}, {"gqa", true, 256}} {
		b.Run(f.name, func(b *testing.B) {
			m := decoderModel(b, f.name, func(dir string, tok []byte) error {
				return testmodels.DecoderForm(dir, f.name, tok, 512, 4, 8, 8, f.gqa)
			})
			for _, mb := range []int{32, 1} {
				b.Run(fmt.Sprint("maxbatch-", mb), func(b *testing.B) {
					e := startEngine(b, m, Options{SharedKV: f.shared, MaxBatch: mb})
					ps := make([][]int64, 32)
					for i := range ps {
						ps[i] = make([]int64, 30)
						for j := range ps[i] {
							ps[i][j] = int64(2000 + (i*131+j*17)%5000)
						}
					}
					b.ResetTimer()
					for range b.N {
						var wg sync.WaitGroup
						for _, p := range ps {
							wg.Add(1)
							go func() {
								defer wg.Done()
								e.Generate(context.Background(), p, Params{MaxTokens: 32}, nil)
							}()
						}
						wg.Wait()
					}
					b.ReportMetric(float64(b.N*32*32)/b.Elapsed().Seconds(), "tokens/s")
				})
			}
		})
	}
}
