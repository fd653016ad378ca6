package function

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/sous-ai/sous/function/turn"
)

// BenchmarkTurnTelemetry measures turns/s through the whole pipeline
// (memory state, batcher, model) with metrics and traces on and off, in
// one run, to show what telemetry costs.
func BenchmarkTurnTelemetry(b *testing.B) {
	for _, on := range []bool{true, false} {
		name := "telemetry=on"
		var opts []Option
		if !on {
			name = "telemetry=off"
			opts = append(opts, withoutTelemetry())
		}
		b.Run(name, func(b *testing.B) {
			s := startServer(b, testConfig(b), opts...)
			var n atomic.Int64
			b.SetParallelism(32)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					req := turn.Request{Session: "b" + strconv.FormatInt(i%512, 10), Text: "hello there"}
					if _, err := s.f.turns.Do(context.Background(), req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "turns/s")
		})
	}
}
