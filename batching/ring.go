package batching

// ring is a fixed-capacity FIFO of T. It is not safe for concurrent use: the
// Batcher guards it with its mutex. The zero value is unusable; use newRing.
type ring[T any] struct {
	buf     []T
	head, n int
}

func newRing[T any](capacity int) ring[T] {
	if capacity <= 0 {
		panic("batching: ring capacity must be positive")
	}
	return ring[T]{buf: make([]T, capacity)}
}

func (r *ring[T]) len() int   { return r.n }
func (r *ring[T]) full() bool { return r.n == len(r.buf) }

// push appends v and reports whether there was room.
func (r *ring[T]) push(v T) bool {
	if r.full() {
		return false
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
	return true
}

// peek returns the oldest element; the ring must not be empty.
func (r *ring[T]) peek() *T { return &r.buf[r.head] }

// pop removes and returns the oldest element; the ring must not be empty. The
// vacated slot is zeroed so that the ring keeps no reference to it.
func (r *ring[T]) pop() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v
}
