package batching_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sous-ai/sous/batching"
)

// A Batcher turns many concurrent Submit calls into few executor calls.
func Example() {
	square := func(_ context.Context, in []int, out []int) error {
		for i, v := range in {
			out[i] = v * v
		}
		return nil
	}
	b := batching.New(batching.Params{Capacity: 1024, MaxBatch: 32, MaxDelay: 2 * time.Millisecond, Workers: 1}, square)

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()

	fmt.Println(b.Submit(context.Background(), 7))
	stop() // stop admission and drain
	fmt.Println(<-done)
	_, err := b.Submit(context.Background(), 8)
	fmt.Println(err)
	// Output:
	// 49 <nil>
	// <nil>
	// batching: closed
}
