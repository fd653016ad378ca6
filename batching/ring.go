package batching

// ring is a fixed-capacity FIFO of T. It is not safe for concurrent use: the
// Batcher guards it with its mutex. The zero value is unusable; use newRing.
// Indexes wrap by comparison, not by modulo: a division per push and pop is
// measurable under the Batcher's lock.
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

// index returns the buffer index of the i-th oldest element.
func (r *ring[T]) index(i int) int {
	j := r.head + i
	if j >= len(r.buf) {
		j -= len(r.buf)
	}
	return j
}

// push appends v and reports whether there was room.
func (r *ring[T]) push(v T) bool {
	if r.full() {
		return false
	}
	r.buf[r.index(r.n)] = v
	r.n++
	return true
}

// at returns the i-th oldest element, 0 <= i < len.
func (r *ring[T]) at(i int) *T { return &r.buf[r.index(i)] }

// peek returns the oldest element; the ring must not be empty.
func (r *ring[T]) peek() *T { return &r.buf[r.head] }

// pop removes and returns the oldest element; the ring must not be empty. The
// vacated slot is zeroed so that the ring keeps no reference to it.
func (r *ring[T]) pop() T {
	v := r.buf[r.head]
	r.discard(1)
	return v
}

// discard removes the n oldest elements, zeroing their slots in at most two
// runs, 0 <= n <= len.
func (r *ring[T]) discard(n int) {
	if end := r.head + n; end <= len(r.buf) {
		clear(r.buf[r.head:end])
	} else {
		clear(r.buf[r.head:])
		clear(r.buf[:end-len(r.buf)])
	}
	r.head = r.index(n)
	r.n -= n
}

// compact removes the elements whose index (0 = oldest) drop reports,
// keeping the others in order, and zeroes the slots freed.
func (r *ring[T]) compact(drop []bool) {
	w := 0
	for i := 0; i < r.n; i++ {
		if drop[i] {
			continue
		}
		if w != i {
			*r.at(w) = *r.at(i)
		}
		w++
	}
	var zero T
	for i := w; i < r.n; i++ {
		*r.at(i) = zero
	}
	r.n = w
}
