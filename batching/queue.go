package batching

import (
	"context"
	"sync"
)

// A Queue is the Batcher's ring for a consumer that pulls its own batches:
// a loop that decides at each of its steps how many items it can take on
// (a decode engine admitting sequences while its KV budget allows), where
// a Batcher's executor would take a whole batch and finish it before the
// next. Push never blocks: a full ring answers ErrFull at once, a closed
// one ErrClosed. All methods are safe for concurrent use; the zero value
// is unusable, use NewQueue.
type Queue[T any] struct {
	mu     sync.Mutex // guards ring, closed
	ring   ring[queued[T]]
	closed bool
}

type queued[T any] struct {
	v   T
	ctx context.Context
}

// NewQueue returns a Queue holding at most capacity items (> 0).
func NewQueue[T any](capacity int) *Queue[T] {
	return &Queue[T]{ring: newRing[queued[T]](capacity)}
}

// Push queues v on behalf of a caller whose request is ctx.
func (q *Queue[T]) Push(ctx context.Context, v T) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return ErrClosed
	case !q.ring.push(queued[T]{v: v, ctx: ctx}):
		return ErrFull
	}
	return nil
}

// Take removes and returns, oldest first and in one lock acquisition, the
// queued items that fit: at most n, each admitted by fit (called in order
// under the lock; the first item it refuses ends the take, so that no item
// is passed over by younger ones). Items whose context has ended are
// removed and returned apart, in gone, whatever fit says: their callers
// left, and the consumer answers them.
func (q *Queue[T]) Take(n int, fit func(T) bool) (taken, gone []T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := 0
	for ; i < q.ring.len(); i++ {
		s := q.ring.at(i)
		if s.ctx.Err() != nil {
			gone = append(gone, s.v)
			continue
		}
		if len(taken) == n || !fit(s.v) {
			break
		}
		taken = append(taken, s.v)
	}
	// The first i slots are all taken or gone; any live ones after the
	// break stay, and so do gone ones past it (the next take finds them).
	q.ring.discard(i)
	return taken, gone
}

// Len is the number of items queued.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ring.len()
}

// Close stops admission (Push answers ErrClosed) and returns the items
// still queued, oldest first, for the consumer to answer.
func (q *Queue[T]) Close() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	left := make([]T, 0, q.ring.len())
	for q.ring.len() > 0 {
		left = append(left, q.ring.pop().v)
	}
	return left
}
