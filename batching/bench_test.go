package batching

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/telemetry"
)

// chanBatcher is the textbook batcher, kept as the benchmark's reference: a
// bounded channel, and a loop that hands over a batch when it is full or when
// a timer started by its first item fires.
type chanBatcher struct {
	in       chan chanItem
	maxBatch int
	maxDelay time.Duration
	exec     func(in []int, out []int)
}

type chanItem struct {
	v   int
	out chan int
}

func (c *chanBatcher) Submit(v int) (int, bool) {
	out := make(chan int, 1)
	select {
	case c.in <- chanItem{v, out}:
	default:
		return 0, false // full
	}
	return <-out, true
}

func (c *chanBatcher) run(stop <-chan struct{}) {
	batch := make([]chanItem, 0, c.maxBatch)
	in := make([]int, 0, c.maxBatch)
	out := make([]int, c.maxBatch)
	flush := func() {
		in = in[:0]
		for _, it := range batch {
			in = append(in, it.v)
		}
		c.exec(in, out)
		for i, it := range batch {
			it.out <- out[i]
		}
		batch = batch[:0]
	}
	for {
		select {
		case <-stop:
			return
		case it := <-c.in:
			batch = append(batch, it)
			timer := time.NewTimer(c.maxDelay)
		fill:
			for len(batch) < c.maxBatch {
				select {
				case it := <-c.in:
					batch = append(batch, it)
				case <-timer.C:
					break fill
				}
			}
			timer.Stop()
			flush()
		}
	}
}

func noop(_ context.Context, in []int, out []int) error {
	copy(out, in)
	return nil
}

// BenchmarkSubmit compares the ring batcher with the channel reference at 64
// parallel submitters and a no-op executor, and with the floor that any
// design whose callers block for their results pays.
func BenchmarkSubmit(b *testing.B) {
	const capacity, maxBatch, delay = 1024, 32, 2 * time.Millisecond
	ring := func(b *testing.B, opts ...Option) {
		bt := New(Params{Capacity: capacity, MaxBatch: maxBatch, MaxDelay: delay, Workers: 1}, noop, opts...)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); bt.Run(ctx) }()
		b.SetParallelism(64 / max(1, testingProcs()))
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				for {
					if _, err := bt.Submit(ctx, 1); err == nil {
						break
					}
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
		cancel()
		wg.Wait()
	}
	b.Run("ring", func(b *testing.B) { ring(b) })
	// The same with sous's OpenTelemetry instruments on the hooks: what
	// telemetry costs the hot path.
	b.Run("ring+metrics", func(b *testing.B) {
		m, err := telemetry.New(telemetry.Params{Model: "bench", Device: "cpu"})
		if err != nil {
			b.Fatal(err)
		}
		ring(b, WithHooks(Hooks{Batch: m.Batch, Wait: m.QueueWait}))
	})
	// The floor under any batcher whose callers wait for their results: per
	// item one park of the submitter and one wake by the executor, with no
	// timestamps, no contexts, no bounds and no hold: submitters append
	// their channel to a slice, the executor takes the slice and wakes each.
	b.Run("floor", func(b *testing.B) {
		var mu sync.Mutex
		var waiting []chan int
		kick := make(chan struct{}, 1)
		stop := make(chan struct{})
		go func() {
			batch := make([]chan int, 0, 64)
			for {
				select {
				case <-kick:
				case <-stop:
					return
				}
				mu.Lock()
				batch = append(batch[:0], waiting...)
				waiting = waiting[:0]
				mu.Unlock()
				for _, c := range batch {
					c <- 1
				}
			}
		}()
		b.SetParallelism(64 / max(1, testingProcs()))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			c := make(chan int, 1)
			for pb.Next() {
				mu.Lock()
				waiting = append(waiting, c)
				mu.Unlock()
				select {
				case kick <- struct{}{}:
				default:
				}
				<-c
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
		close(stop)
	})
	b.Run("channel", func(b *testing.B) {
		cb := &chanBatcher{in: make(chan chanItem, capacity), maxBatch: maxBatch, maxDelay: delay,
			exec: func(in, out []int) { copy(out, in) }}
		stop := make(chan struct{})
		go cb.run(stop)
		b.SetParallelism(64 / max(1, testingProcs()))
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				for {
					if _, ok := cb.Submit(1); ok {
						break
					}
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
		close(stop)
	})
}
