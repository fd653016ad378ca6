package batching

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func TestQueueTake(t *testing.T) {
	q := NewQueue[int](4)
	ctx := context.Background()
	gone, cancel := context.WithCancel(ctx)
	for i, c := range []context.Context{ctx, gone, ctx, ctx} {
		if err := q.Push(c, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Push(ctx, 9); !errors.Is(err, ErrFull) {
		t.Fatalf("push to a full queue: %v, want ErrFull", err)
	}
	cancel()
	budget := 2 // items 0 and 2 fit; 3 must wait, though n allows it
	taken, left := q.Take(3, func(int) bool { budget--; return budget >= 0 })
	if got, want := taken, []int{0, 2}; !slices.Equal(got, want) {
		t.Errorf("taken = %v, want %v", got, want)
	}
	if got, want := left, []int{1}; !slices.Equal(got, want) {
		t.Errorf("gone = %v, want %v", got, want)
	}
	if got, want := q.Len(), 1; got != want {
		t.Fatalf("Len after take = %d, want %d", got, want)
	}
	taken, _ = q.Take(1, func(int) bool { return true })
	if got, want := taken, []int{3}; !slices.Equal(got, want) {
		t.Errorf("second take = %v, want %v", got, want)
	}
	q.Push(ctx, 5)
	if got, want := q.Close(), []int{5}; !slices.Equal(got, want) {
		t.Errorf("Close = %v, want %v", got, want)
	}
	if err := q.Push(ctx, 6); !errors.Is(err, ErrClosed) {
		t.Fatalf("push after Close: %v, want ErrClosed", err)
	}
}
