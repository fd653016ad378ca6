package turn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Turns of one session get its lock in arrival order, one at a time; a
// waiter whose ctx ends leaves the line without breaking it.
func TestSessionLocksKeepArrivalOrder(t *testing.T) {
	var l sessionLocks
	first, err := l.lock(context.Background(), "s")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	queued := make(chan struct{})
	gone, cancel := context.WithCancel(context.Background())
	for i := range 4 {
		ctx := context.Background()
		if i == 2 {
			ctx = gone // gives up its place while waiting
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := l.lock(ctx, "s")
			queued <- struct{}{}
			if err != nil {
				if i != 2 || !errors.Is(err, context.Canceled) {
					t.Errorf("waiter %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			unlock()
		}()
		// Barrier: waiter i is in line before waiter i+1 arrives.
		for l.held() != i+2 {
			time.Sleep(time.Millisecond)
		}
	}
	cancel()
	<-queued // waiter 2 left the line
	// Another session is not held up by this one's line.
	other, err := l.lock(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	other()
	first()
	for range 3 {
		<-queued
	}
	wg.Wait()
	if got, want := order, []int{0, 1, 3}; len(got) != len(want) || got[0] != 0 || got[1] != 1 || got[2] != 3 {
		t.Errorf("lock order = %v, want %v", got, want)
	}
	if n := l.held(); n != 0 {
		t.Errorf("%d locks left held", n)
	}
}
