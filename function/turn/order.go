package turn

import (
	"context"
	"slices"
	"sync"
)

// sessionLocks serialises the turns of each session in arrival order. The
// zero value is ready.
type sessionLocks struct {
	mu sync.Mutex // guards m
	m  map[string]*sessionQueue
}

type sessionQueue struct {
	waiters []chan struct{} // closed to hand over the turn, in arrival order
	refs    int             // holder plus waiters
}

// lock waits for the session's earlier turns; ctx ending gives up the place
// in line (and returns ctx.Err()). The returned function hands the turn to
// the next in line.
func (l *sessionLocks) lock(ctx context.Context, id string) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[string]*sessionQueue)
	}
	q := l.m[id]
	if q == nil {
		q = &sessionQueue{}
		l.m[id] = q
	}
	q.refs++
	if q.refs == 1 {
		l.mu.Unlock()
		return func() { l.unlock(id, q) }, nil
	}
	ch := make(chan struct{})
	q.waiters = append(q.waiters, ch)
	l.mu.Unlock()

	select {
	case <-ch:
		return func() { l.unlock(id, q) }, nil
	case <-ctx.Done():
		l.mu.Lock()
		if i := slices.Index(q.waiters, ch); i >= 0 {
			q.waiters = slices.Delete(q.waiters, i, i+1)
			q.refs--
			l.mu.Unlock()
			return nil, ctx.Err()
		}
		l.mu.Unlock()
		// The turn was handed over as ctx ended: pass it on.
		l.unlock(id, q)
		return nil, ctx.Err()
	}
}

func (l *sessionLocks) unlock(id string, q *sessionQueue) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q.refs--
	if len(q.waiters) > 0 {
		next := q.waiters[0]
		q.waiters = q.waiters[1:]
		close(next)
		return
	}
	if q.refs == 0 {
		delete(l.m, id)
	}
}

// held reports how many turns hold or wait for sessions' locks.
func (l *sessionLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, q := range l.m {
		n += q.refs
	}
	return n
}
