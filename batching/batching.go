// Package batching groups submitted items into bounded batches for an
// executor.
//
// A Batcher holds a fixed-capacity ring buffer guarded by one mutex. Submit
// never blocks: a full ring answers ErrFull at once. Executors pull work: a
// free executor takes everything queued, up to MaxBatch items and MaxCost, in
// one lock acquisition. It knows nothing of HTTP or ONNX.
package batching

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"time"
)

// Errors a caller acts on.
var (
	// ErrFull is returned by Submit when the ring is at capacity.
	ErrFull = errors.New("batching: queue full")
	// ErrClosed is returned by Submit once Run has begun shutting down.
	ErrClosed = errors.New("batching: closed")
	// ErrDrainTimeout fails items still queued when the drain period ends.
	ErrDrainTimeout = errors.New("batching: not executed before the drain timeout")
	// ErrExecutorPanic fails every item of a batch whose executor panicked.
	ErrExecutorPanic = errors.New("batching: executor panicked")
)

// Executor runs one batch. It must fill out[i] for every in[i] or return an
// error, which fails every item of the batch. len(out) == len(in) and both
// slices are reused after it returns: it must not keep them. ctx is
// cancelled only when a shutdown's drain timeout passes.
type Executor[In, Out any] func(ctx context.Context, in []In, out []Out) error

// Params configures a Batcher. Validate it with Params.Validate; New panics
// on invalid Params because they are a programming error by then.
type Params struct {
	// Capacity is the number of items the ring holds; Submit beyond it fails
	// with ErrFull.
	Capacity int
	// MaxBatch is the most items handed to one executor call.
	MaxBatch int
	// MaxCost bounds the summed Cost of a batch; 0 means no bound. A single
	// item whose cost exceeds MaxCost still runs, alone.
	MaxCost int64
	// MaxDelay is the longest an idle executor holds a partial batch, counted
	// from the arrival of the oldest queued item. It only applies while
	// recent concurrency says more items are on their way, and while the
	// executors have lately been busy or those items are close (see
	// Batcher); 0 dispatches at once.
	MaxDelay time.Duration
	// Workers is the number of batches that may execute at once.
	Workers int
	// DrainTimeout bounds how long Run keeps executing after its context is
	// cancelled. Items still queued then fail with ErrDrainTimeout, and the
	// executor's context is cancelled. 0 means 30s.
	DrainTimeout time.Duration
}

// Validate reports the first invalid field.
func (p Params) Validate() error {
	switch {
	case p.Capacity <= 0:
		return fmt.Errorf("batching: Capacity must be positive, got %d", p.Capacity)
	case p.MaxBatch <= 0:
		return fmt.Errorf("batching: MaxBatch must be positive, got %d", p.MaxBatch)
	case p.MaxCost < 0:
		return fmt.Errorf("batching: MaxCost must not be negative, got %d", p.MaxCost)
	case p.MaxDelay < 0:
		return fmt.Errorf("batching: MaxDelay must not be negative, got %s", p.MaxDelay)
	case p.Workers <= 0:
		return fmt.Errorf("batching: Workers must be positive, got %d", p.Workers)
	case p.DrainTimeout < 0:
		return fmt.Errorf("batching: DrainTimeout must not be negative, got %s", p.DrainTimeout)
	}
	return nil
}

// Hooks receive telemetry. Nil fields are skipped. They are called from
// executor goroutines, outside the lock, and must not block.
type Hooks struct {
	// Batch is called before each executor call with the batch's size.
	Batch func(size int)
	// Wait is called for each item taken for execution with its time queued.
	Wait func(queued time.Duration)
	// Expired is called for each item dropped because its context ended
	// while it was queued.
	Expired func()
}

// Clock is the time source; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// NewTimer returns a stopped timer.
	NewTimer() Timer
}

// Timer is the part of *time.Timer that a Batcher uses.
type Timer interface {
	C() <-chan time.Time
	// Reset starts the timer to fire once after d. The timer must be
	// stopped or have fired and been received.
	Reset(d time.Duration)
	// Stop prevents the timer from firing. After Stop, C never delivers a
	// stale value (Go 1.23 timer semantics).
	Stop()
}

// wallClock is the default Clock. The Batcher does not call its Now on the
// hot path: see Batcher.elapsed.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }
func (wallClock) NewTimer() Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return wallTimer{t}
}

type wallTimer struct{ t *time.Timer }

func (w wallTimer) C() <-chan time.Time   { return w.t.C }
func (w wallTimer) Reset(d time.Duration) { w.t.Reset(d) }
func (w wallTimer) Stop()                 { w.t.Stop() }

// Option sets an optional part of a Batcher.
type Option func(*options)

type options struct {
	clock   Clock
	hooks   Hooks
	cost    any
	padded  bool
	grouped bool
}

// WithClock replaces the wall clock.
func WithClock(c Clock) Option { return func(o *options) { o.clock = c } }

// WithHooks installs telemetry hooks.
func WithHooks(h Hooks) Option { return func(o *options) { o.hooks = h } }

// WithCost sets the per-item cost counted against Params.MaxCost. Its type
// parameter must be the Batcher's In.
func WithCost[In any](cost func(In) int64) Option {
	return func(o *options) { o.cost = cost }
}

// WithPadding says that items are sequences padded to the longest in their
// batch: an item's cost (WithCost) is its length, and a batch's cost is
// its padded size, items × longest, held to MaxCost. Without group,
// batches are taken in arrival order. With group, a batch is the oldest
// queued item plus the queued items nearest to it in length, as long as
// the batch stays at least three quarters real tokens; the others wait for
// a later batch. Since the oldest item always goes, an item waits behind at
// most as many batches as there are items queued ahead of it.
func WithPadding(group bool) Option {
	return func(o *options) { o.padded, o.grouped = true, group }
}

type result[Out any] struct {
	v   Out
	err error
}

// waiter carries one item's result back to its caller. Waiters are pooled so
// that a Submit costs no allocation.
type waiter[Out any] struct{ ch chan result[Out] }

type slot[In, Out any] struct {
	in   In
	ctx  context.Context
	cost int64
	at   time.Duration // arrival, as Batcher.elapsed
	w    *waiter[Out]
}

// A Batcher groups items submitted by many goroutines into batches for an
// Executor. All methods are safe for concurrent use. Call Run once to start
// execution; items submitted before Run wait in the ring until it starts.
//
// Holding a partial batch: an idle executor waits up to MaxDelay (from the
// oldest item's arrival) for a partial batch to fill only while the number of
// items in the system (queued plus executing) is below the recent peak of
// that number: the peak says that many callers were recently concurrent, so
// the missing ones are likely on their way back. The batch goes as soon as
// they are. A lone sequential caller never sets a peak above one, so at
// light load no item waits on a timer for company it will not get. The peak
// decays by one per dispatched batch, and falls to the present count as soon
// as a hold runs out without the batch filling: after a drop in load, one
// batch waits out MaxDelay, not one per missing caller. And nothing is held
// while the executors were busy less than half of the last 100ms unless the
// missing company, at the recent rate of arrivals, would all arrive within
// an eighth of MaxDelay: callers arriving independently at a light rate are
// served as they come, since holding them would add latency for throughput
// nobody needs.
type Batcher[In, Out any] struct {
	p     Params
	exec  Executor[In, Out]
	clock Clock
	wall  bool      // clock is the wall clock
	epoch time.Time // origin of elapsed
	hooks Hooks
	cost  func(In) int64
	// padded: a batch costs items × its longest; grouped: batches are
	// formed by length (WithPadding).
	padded, grouped bool
	pool            sync.Pool

	// wake has capacity 1: a send means "the ring changed, look again".
	wake chan struct{}
	// closing is closed when Run's context is done.
	closing chan struct{}

	mu       sync.Mutex // guards ring, qcost, running, closed, inSystem, peak, holding, busy, window, util, last, gap
	ring     ring[slot[In, Out]]
	qcost    int64 // summed cost of queued items
	running  bool
	closed   bool
	inSystem int           // items queued or executing
	peak     int           // recent peak of inSystem
	holding  int           // executors holding a partial batch
	busy     time.Duration // executor time spent in batches since window
	window   time.Duration // start of the utilization window, as elapsed
	util     float64       // executors busy on average over the last window
	last     time.Duration // latest arrival, as elapsed
	gap      time.Duration // moving average of the time between arrivals
}

// New returns a Batcher that runs batches through exec. It panics if p is
// invalid (check p.Validate first) or exec is nil.
func New[In, Out any](p Params, exec Executor[In, Out], opts ...Option) *Batcher[In, Out] {
	if err := p.Validate(); err != nil {
		panic(err)
	}
	if exec == nil {
		panic("batching: nil executor")
	}
	if p.DrainTimeout == 0 {
		p.DrainTimeout = 30 * time.Second
	}
	o := options{clock: wallClock{}}
	for _, opt := range opts {
		opt(&o)
	}
	b := &Batcher[In, Out]{
		p:       p,
		exec:    exec,
		clock:   o.clock,
		hooks:   o.hooks,
		wake:    make(chan struct{}, 1),
		closing: make(chan struct{}),
		ring:    newRing[slot[In, Out]](p.Capacity),
		util:    1,          // until a window has been measured, as if busy
		gap:     p.MaxDelay, // and as if arrivals were sparse
	}
	_, b.wall = o.clock.(wallClock)
	b.epoch = o.clock.Now()
	if o.cost != nil {
		cost, ok := o.cost.(func(In) int64)
		if !ok {
			panic("batching: WithCost type parameter does not match the Batcher's item type")
		}
		b.cost = cost
	}
	b.padded, b.grouped = o.padded, o.grouped
	b.pool.New = func() any { return &waiter[Out]{ch: make(chan result[Out], 1)} }
	return b
}

// Submit queues in and waits for its result. Admission never blocks: a full ring
// answers ErrFull at once. If ctx ends first it returns ctx.Err() unchanged; an item
// whose context has ended is dropped before execution.
func (b *Batcher[In, Out]) Submit(ctx context.Context, in In) (Out, error) {
	w, err := b.submit(ctx, in)
	if err != nil {
		var zero Out
		return zero, err
	}
	done := ctx.Done()
	if done == nil { // a context that cannot end: skip the select
		r := <-w.ch
		b.pool.Put(w)
		return r.v, r.err
	}
	select {
	case r := <-w.ch:
		b.pool.Put(w)
		return r.v, r.err
	case <-done:
		// The waiter stays with its slot; the dispatcher completes it into
		// the buffered channel and it is then garbage.
		var zero Out
		return zero, ctx.Err()
	}
}

func (b *Batcher[In, Out]) submit(ctx context.Context, in In) (*waiter[Out], error) {
	var cost int64
	if b.cost != nil {
		cost = b.cost(in)
	}
	w := b.pool.Get().(*waiter[Out])
	now := b.elapsed()
	b.mu.Lock()
	var err error
	var wake bool
	switch {
	case b.closed:
		err = ErrClosed
	case !b.ring.push(slot[In, Out]{in: in, ctx: ctx, cost: cost, at: now, w: w}):
		err = ErrFull
	default:
		b.qcost += cost
		b.gap += (min(now-b.last, b.p.MaxDelay) - b.gap) / 8
		b.last = now
		b.inSystem++
		if b.inSystem > b.peak {
			b.peak = b.inSystem
		}
		// Wake an executor only when it has something new to decide: the
		// ring was empty (an idle one may be waiting), or the batch an
		// executor holds is now complete, or the company it holds for has
		// all arrived. Waking a holding executor on every arrival would
		// cost a timer and a context switch per item.
		n := b.ring.len()
		wake = n == 1 || (b.holding > 0 && (n >= b.p.MaxBatch || b.inSystem >= b.peak ||
			(b.p.MaxCost > 0 && b.qcost >= b.p.MaxCost)))
	}
	b.mu.Unlock()
	if err != nil {
		b.pool.Put(w)
		return nil, err
	}
	if wake {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return w, nil
}

// Len returns the number of queued items, not counting executing ones.
func (b *Batcher[In, Out]) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ring.len()
}

// Run executes batches until ctx is done, then stops admission (Submit
// answers ErrClosed), executes every accepted item or, after
// Params.DrainTimeout, fails the rest with ErrDrainTimeout, and returns nil.
// Run may be called once.
func (b *Batcher[In, Out]) Run(ctx context.Context) error {
	b.mu.Lock()
	if b.running || b.closed {
		b.mu.Unlock()
		return errors.New("batching: Run called twice")
	}
	b.running = true
	b.mu.Unlock()

	// execCtx outlives ctx by the drain timeout so that draining batches
	// still run.
	execCtx, cancelExec := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelExec()

	var wg sync.WaitGroup
	for range b.p.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.work(execCtx)
		}()
	}

	<-ctx.Done()
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	close(b.closing)

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := b.clock.NewTimer()
	timer.Reset(b.p.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C():
	}
	// Out of time: fail what is queued, cancel running batches, and wait for
	// the executors to notice. The ring is emptied before the cancel: an
	// executor whose batch the cancel ends would otherwise take a queued
	// item into a batch of its own and fail it with the cancelled context
	// instead of ErrDrainTimeout.
	b.mu.Lock()
	var abandoned []slot[In, Out]
	for b.ring.len() > 0 {
		s := b.ring.pop()
		b.qcost -= s.cost
		b.inSystem--
		abandoned = append(abandoned, s)
	}
	b.mu.Unlock()
	cancelExec()
	for _, s := range abandoned {
		s.w.ch <- result[Out]{err: ErrDrainTimeout}
	}
	<-done
	return nil
}

// batchBuf is one executor's reusable batch storage.
type batchBuf[In, Out any] struct {
	in  []In
	out []Out
	w   []*waiter[Out]
	at  []time.Duration
}

func (b *Batcher[In, Out]) work(ctx context.Context) {
	buf := batchBuf[In, Out]{
		in:  make([]In, 0, b.p.MaxBatch),
		out: make([]Out, b.p.MaxBatch),
		w:   make([]*waiter[Out], 0, b.p.MaxBatch),
		at:  make([]time.Duration, 0, b.p.MaxBatch),
	}
	timer := b.clock.NewTimer()
	defer timer.Stop()
	held := false
	for {
		n, wait, stop := b.take(&buf, held)
		if stop {
			return
		}
		held = wait > 0
		if n == 0 {
			b.idle(timer, wait)
			continue
		}
		b.runBatch(ctx, &buf)
		// Let the callers just woken, and the handlers whose requests came
		// in meanwhile, run before the next take. With one P (a pod with
		// one CPU: GOMAXPROCS follows the CPU limit) the executor would
		// otherwise take the P straight back and run batches of one or two
		// while the handlers wait: make bench's pinned phase measured a
		// mean batch of 1.4 without this and 21 with it, on 64 clients.
		runtime.Gosched()
	}
}

// idle blocks until the ring changes, the hold deadline passes (wait > 0) or
// shutdown begins.
func (b *Batcher[In, Out]) idle(timer Timer, wait time.Duration) {
	if wait <= 0 {
		select {
		case <-b.wake:
		case <-b.closing:
		}
		return
	}
	timer.Reset(wait)
	select {
	case <-b.wake:
	case <-timer.C():
	case <-b.closing:
	}
	timer.Stop()
}

// take fills buf with the next batch in one lock acquisition. It returns the
// batch size; 0 with wait > 0 means hold for wait (the executor counts as
// holding until its next take, which says so with held), 0 with wait == 0
// means the ring is empty; stop means the batcher is closed and drained.
func (b *Batcher[In, Out]) take(buf *batchBuf[In, Out], held bool) (n int, wait time.Duration, stop bool) {
	buf.in, buf.w, buf.at = buf.in[:0], buf.w[:0], buf.at[:0]
	var expired []*waiter[Out]
	var expiredErrs []error

	now := b.elapsed()
	b.mu.Lock()
	if held {
		b.holding--
	}
	if b.ring.len() == 0 {
		closed := b.closed
		b.mu.Unlock()
		return 0, 0, closed
	}
	if d := b.holdLocked(now); d > 0 {
		b.holding++
		b.mu.Unlock()
		return 0, d, false
	}
	if b.grouped {
		expired, expiredErrs = b.takeGroupedLocked(buf)
	} else {
		expired, expiredErrs = b.takeInOrderLocked(buf)
	}
	b.inSystem -= len(expired)
	if len(buf.in) > 0 && b.peak > b.inSystem {
		b.peak--
	}
	more := b.ring.len() > 0
	b.mu.Unlock()

	for i, w := range expired {
		w.ch <- result[Out]{err: expiredErrs[i]}
		if b.hooks.Expired != nil {
			b.hooks.Expired()
		}
	}
	if more {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	if b.hooks.Wait != nil {
		for _, at := range buf.at {
			b.hooks.Wait(now - at)
		}
	}
	return len(buf.in), 0, false
}

// takeInOrderLocked fills buf with the oldest queued items, in arrival
// order, up to MaxBatch and MaxCost, and removes them and the expired items
// among them from the ring. b.mu is held.
func (b *Batcher[In, Out]) takeInOrderLocked(buf *batchBuf[In, Out]) (expired []*waiter[Out], expiredErrs []error) {
	// Read the batch in place and discard its slots in one step: popping
	// slot by slot would zero and wrap each one under the lock.
	var cost, expiredCost, longest int64
	i := 0
	for ; i < b.ring.len() && len(buf.in) < b.p.MaxBatch; i++ {
		s := b.ring.at(i)
		if err := s.ctx.Err(); err != nil {
			// Dropped before Run: the runtime cannot cancel mid-batch, so
			// this is the last chance to save the work.
			expiredCost += s.cost
			expired = append(expired, s.w)
			expiredErrs = append(expiredErrs, err)
			continue
		}
		if b.p.MaxCost > 0 && len(buf.in) > 0 {
			if b.padded && int64(len(buf.in)+1)*max(longest, s.cost) > b.p.MaxCost ||
				!b.padded && cost+s.cost > b.p.MaxCost {
				break
			}
		}
		cost += s.cost
		longest = max(longest, s.cost)
		buf.in = append(buf.in, s.in)
		buf.w = append(buf.w, s.w)
		buf.at = append(buf.at, s.at)
	}
	b.ring.discard(i)
	b.qcost -= cost + expiredCost
	return expired, expiredErrs
}

// groupWindow bounds how many queued items, oldest first, a grouped take
// considers, in batches' worth: the lock is held while it looks.
const groupWindow = 8

// takeGroupedLocked fills buf with the oldest live item and the live items
// nearest to it in length (WithPadding with group), and removes them and
// the expired items from the ring. b.mu is held.
func (b *Batcher[In, Out]) takeGroupedLocked(buf *batchBuf[In, Out]) (expired []*waiter[Out], errs []error) {
	n := min(b.ring.len(), groupWindow*b.p.MaxBatch)
	drop := make([]bool, b.ring.len())
	live := make([]int, 0, n)
	for i := range n {
		s := b.ring.at(i)
		if err := s.ctx.Err(); err != nil {
			drop[i] = true
			b.qcost -= s.cost
			expired = append(expired, s.w)
			errs = append(errs, err)
			continue
		}
		live = append(live, i)
	}
	if len(live) > 0 {
		anchor := b.ring.at(live[0]).cost
		rest := live[1:]
		dist := func(i int) int64 {
			d := b.ring.at(i).cost - anchor
			return max(d, -d)
		}
		sort.SliceStable(rest, func(x, y int) bool { return dist(rest[x]) < dist(rest[y]) })
		pick := func(i int) {
			s := b.ring.at(i)
			drop[i] = true
			b.qcost -= s.cost
			buf.in = append(buf.in, s.in)
			buf.w = append(buf.w, s.w)
			buf.at = append(buf.at, s.at)
		}
		pick(live[0])
		longest, real := anchor, anchor
		for _, i := range rest {
			if len(buf.in) >= b.p.MaxBatch {
				break
			}
			c := b.ring.at(i).cost
			l, k := max(longest, c), int64(len(buf.in)+1)
			if b.p.MaxCost > 0 && k*l > b.p.MaxCost || 4*(k*l-(real+c)) > k*l {
				continue
			}
			pick(i)
			longest, real = l, real+c
		}
	}
	b.ring.compact(drop)
	return expired, errs
}

// utilWindow is the span over which executor utilization is measured.
const utilWindow = 100 * time.Millisecond

// holdLocked returns how much longer an idle executor should hold the
// partial batch now queued, or 0 to dispatch it now.
func (b *Batcher[In, Out]) holdLocked(now time.Duration) time.Duration {
	if b.p.MaxDelay == 0 || b.closed || b.ring.len() >= b.p.MaxBatch || b.inSystem >= b.peak {
		return 0
	}
	if b.p.MaxCost > 0 && b.qcost >= b.p.MaxCost {
		return 0
	}
	if span := now - b.window; span >= utilWindow {
		b.util = float64(b.busy) / float64(span)
		b.busy, b.window = 0, now
	}
	if b.util < 0.5 && time.Duration(b.peak-b.inSystem)*b.gap > b.p.MaxDelay/8 {
		// The executors have room to run every item as it comes, and the
		// company would be slow to arrive: holding would add latency and
		// buy no throughput that is needed.
		return 0
	}
	d := b.ring.peek().at + b.p.MaxDelay - now
	if d <= 0 {
		// The company that the peak promised did not come within
		// MaxDelay: the load has dropped. Forget the peak, or every
		// partial batch would wait out MaxDelay until it decayed.
		b.peak = b.inSystem
	}
	return d
}

// elapsed is the time since the Batcher was made. Arrival times are kept as
// these offsets: 8 bytes without a pointer instead of a time.Time, and on
// the wall clock one monotonic read (time.Since of a monotonic reading skips
// the wall-clock read that time.Now makes) with no time.Time arithmetic.
func (b *Batcher[In, Out]) elapsed() time.Duration {
	if b.wall {
		return time.Since(b.epoch)
	}
	return b.clock.Now().Sub(b.epoch)
}

// finished records that a batch of n items left the system after running
// for d.
func (b *Batcher[In, Out]) finished(n int, d time.Duration) {
	b.mu.Lock()
	b.inSystem -= n
	b.busy += d
	b.mu.Unlock()
}

func (b *Batcher[In, Out]) runBatch(ctx context.Context, buf *batchBuf[In, Out]) {
	n := len(buf.in)
	out := buf.out[:n]
	if b.hooks.Batch != nil {
		b.hooks.Batch(n)
	}
	began := b.elapsed()
	err := b.call(ctx, buf.in, out)
	// Leave the system before the callers wake: a sequential caller's next
	// Submit must not count its previous item and so fake concurrency.
	b.finished(n, b.elapsed()-began)
	var zero Out
	for i, w := range buf.w {
		if err != nil {
			w.ch <- result[Out]{err: err}
		} else {
			w.ch <- result[Out]{v: out[i]}
		}
		out[i] = zero
		buf.w[i] = nil
	}
	clear(buf.in)
}

// call runs the executor, turning a panic into an error for this batch only.
func (b *Batcher[In, Out]) call(ctx context.Context, in []In, out []Out) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrExecutorPanic, r)
		}
	}()
	return b.exec(ctx, in, out)
}
