package batching

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a manual clock. Every NewTimer is announced on timers so that
// a test can wait until an executor is holding before it moves time.
type fakeClock struct {
	mu      sync.Mutex // guards now, pending
	now     time.Time
	pending []*fakeTimer
	timers  chan time.Duration
}

type fakeTimer struct {
	clock   *fakeClock
	at      time.Time
	c       chan time.Time
	stopped bool
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1000, 0), timers: make(chan time.Duration, 64)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer() Timer {
	return &fakeTimer{clock: c, c: make(chan time.Time, 1), stopped: true}
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Reset(d time.Duration) {
	c := t.clock
	c.mu.Lock()
	t.at = c.now.Add(d)
	t.stopped = false
	c.pending = append(c.pending, t)
	c.mu.Unlock()
	c.timers <- d
}

func (t *fakeTimer) Stop() {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	t.stopped = true
	select { // drain a fired value, as Go 1.23 timers do
	case <-t.c:
	default:
	}
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.pending[:0]
	for _, t := range c.pending {
		if t.stopped {
			continue
		}
		if !t.at.After(c.now) {
			t.c <- c.now
			t.stopped = true
			continue
		}
		kept = append(kept, t)
	}
	c.pending = kept
}

// gate is an executor that records batches and blocks each call until the
// test releases it.
type gate struct {
	mu      sync.Mutex // guards batches
	batches [][]int
	entered chan int
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan int, 64), release: make(chan struct{})}
}

func (g *gate) exec(ctx context.Context, in []int, out []int) error {
	g.mu.Lock()
	g.batches = append(g.batches, append([]int(nil), in...))
	g.mu.Unlock()
	g.entered <- len(in)
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	for i, v := range in {
		out[i] = v * 10
	}
	return nil
}

func (g *gate) Batches() [][]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]int(nil), g.batches...)
}

func double(_ context.Context, in []int, out []int) error {
	for i, v := range in {
		out[i] = 2 * v
	}
	return nil
}

// start runs b until the test ends and returns a function that stops it and
// waits for Run to return.
func start[In, Out any](t *testing.T, b *Batcher[In, Out]) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	waitRunning(t, b)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitRunning[In, Out any](t *testing.T, b *Batcher[In, Out]) {
	t.Helper()
	for i := 0; ; i++ {
		b.mu.Lock()
		r := b.running
		b.mu.Unlock()
		if r {
			return
		}
		if i > 10000 {
			t.Fatal("Run did not start")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// submitAsync submits v in a goroutine and returns where its result lands.
func submitAsync(ctx context.Context, b *Batcher[int, int], v int) <-chan result[int] {
	ch := make(chan result[int], 1)
	go func() {
		out, err := b.Submit(ctx, v)
		ch <- result[int]{out, err}
	}()
	return ch
}

// waitQueued blocks until n items are queued.
func waitQueued(t *testing.T, b *Batcher[int, int], n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.Len() != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue length %d, want %d", b.Len(), n)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// occupy makes the gated executor busy with item 0 and queues items 1..k
// behind it: k+1 callers concurrent.
func occupy(t *testing.T, b *Batcher[int, int], g *gate, k int) (first <-chan result[int], queued []<-chan result[int]) {
	t.Helper()
	first = submitAsync(context.Background(), b, 0)
	<-g.entered
	for i := 1; i <= k; i++ {
		queued = append(queued, submitAsync(context.Background(), b, i))
	}
	waitQueued(t, b, k)
	return first, queued
}

// releaseAll opens the gate for good and checks every result.
func releaseAll(t *testing.T, g *gate, rs ...<-chan result[int]) {
	t.Helper()
	close(g.release)
	for _, ch := range rs {
		if r := <-ch; r.err != nil {
			t.Error(r.err)
		}
	}
}

// await returns ch's result, letting every hold run out on the fake clock,
// and says whether the item was held.
func await(clock *fakeClock, ch <-chan result[int]) (r result[int], held bool) {
	for {
		select {
		case r := <-ch:
			return r, held
		case d := <-clock.timers:
			held = true
			clock.Advance(d)
		}
	}
}

// gated starts a Batcher with params() changed by set, a gated executor
// and a fake clock.
func gated(t *testing.T, set func(*Params)) (*Batcher[int, int], *gate, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	g := newGate()
	p := params()
	set(&p)
	b := New(p, g.exec, WithClock(clock))
	start(t, b)
	return b, g, clock
}

func params() Params {
	return Params{Capacity: 64, MaxBatch: 8, Workers: 1}
}

func TestSubmitReturnsOwnResult(t *testing.T) {
	p := params()
	p.Capacity = 128
	b := New(p, double)
	start(t, b)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := b.Submit(context.Background(), i)
			if err != nil {
				t.Errorf("Submit(%d): %v", i, err)
				return
			}
			if want := 2 * i; got != want {
				t.Errorf("Submit(%d) = %d, want %d", i, got, want)
			}
		}()
	}
	wg.Wait()
}

func TestSubmitBeforeRunWaitsForRun(t *testing.T) {
	b := New(params(), double)
	r := submitAsync(context.Background(), b, 4)
	waitQueued(t, b, 1)
	start(t, b)
	if got := <-r; got.err != nil || got.v != 8 {
		t.Fatalf("got (%d, %v), want (8, nil)", got.v, got.err)
	}
}

func TestFullRingRejectsAtOnce(t *testing.T) {
	g := newGate()
	p := params()
	p.Capacity = 3
	b := New(p, g.exec)
	start(t, b)
	first := submitAsync(context.Background(), b, 0)
	<-g.entered // item 0 is executing; the ring is empty again
	var queued []<-chan result[int]
	for i := 1; i <= p.Capacity; i++ {
		queued = append(queued, submitAsync(context.Background(), b, i))
	}
	waitQueued(t, b, p.Capacity)

	// A blocked Submit would hang here; the test's deadline catches it.
	if _, err := b.Submit(context.Background(), 99); !errors.Is(err, ErrFull) {
		t.Fatalf("Submit to a full ring: got %v, want ErrFull", err)
	}
	close(g.release)
	for i, ch := range append([]<-chan result[int]{first}, queued...) {
		if r := <-ch; r.err != nil || r.v != 10*i {
			t.Errorf("item %d: got (%d, %v), want (%d, nil)", i, r.v, r.err, 10*i)
		}
	}
}

func TestLightLoadDispatchesWithoutTimer(t *testing.T) {
	for _, delay := range []time.Duration{0, 2 * time.Millisecond} {
		t.Run(fmt.Sprintf("MaxDelay=%s", delay), func(t *testing.T) {
			clock := newFakeClock()
			p := params()
			p.MaxDelay = delay
			b := New(p, double, WithClock(clock))
			start(t, b)
			// A sequential caller: the fake clock never moves, so any wait
			// on a timer would hang the test.
			for i := range 20 {
				if got, err := b.Submit(context.Background(), i); err != nil || got != 2*i {
					t.Fatalf("Submit(%d) = (%d, %v)", i, got, err)
				}
			}
			select {
			case d := <-clock.timers:
				t.Fatalf("an executor set a %s timer at light load", d)
			default:
			}
		})
	}
}

func TestMaxDelayCountsFromOldestArrival(t *testing.T) {
	b, g, clock := gated(t, func(p *Params) { p.MaxDelay = 10 * time.Millisecond })

	// Four callers are concurrent: item 0 executes while 1..3 queue.
	r0, rs := occupy(t, b, g, 3)

	// Item 1 arrived at t0. The batch finishes 6ms later; the executor must
	// hold the partial batch only until t0+10ms, not until finish+10ms.
	clock.Advance(6 * time.Millisecond)
	g.release <- struct{}{}
	if r := <-r0; r.err != nil {
		t.Fatal(r.err)
	}
	got := <-clock.timers
	// A wake-up left over from the arrivals may re-arm the hold once; take
	// the last timer the executor set.
	for settled := false; !settled; {
		select {
		case got = <-clock.timers:
		case <-time.After(20 * time.Millisecond):
			settled = true
		}
	}
	if want := 4 * time.Millisecond; got != want {
		t.Fatalf("hold timer %s, want %s (MaxDelay from the oldest arrival)", got, want)
	}
	clock.Advance(4*time.Millisecond - time.Nanosecond)
	select {
	case n := <-g.entered:
		t.Fatalf("batch of %d dispatched before MaxDelay passed", n)
	case <-time.After(20 * time.Millisecond):
	}
	clock.Advance(time.Nanosecond)
	if got, want := <-g.entered, 3; got != want {
		t.Fatalf("held batch size %d, want %d", got, want)
	}
	releaseAll(t, g, rs...)
}

func TestHeldBatchGoesWhenFull(t *testing.T) {
	b, g, _ := gated(t, func(p *Params) { p.MaxBatch = 2; p.MaxDelay = time.Hour })

	r0, rs := occupy(t, b, g, 2)
	g.release <- struct{}{} // batch [0] done; [1 2] is full and goes at once
	if got, want := <-g.entered, 2; got != want {
		t.Fatalf("batch size %d, want %d", got, want)
	}
	releaseAll(t, g, append(rs, r0)...)
}

// Three callers, far fewer than MaxBatch: once the third is back, the held
// batch has all the company it was held for and goes without waiting out
// MaxDelay (before, every such batch waited the whole MaxDelay).
func TestHeldBatchGoesWhenItsCompanyArrives(t *testing.T) {
	b, g, clock := gated(t, func(p *Params) { p.MaxDelay = time.Hour })

	r0, rs := occupy(t, b, g, 2)
	g.release <- struct{}{} // [0] done: [1 2] is held for the third caller
	if r := <-r0; r.err != nil {
		t.Fatal(r.err)
	}
	<-clock.timers
	rs = append(rs, submitAsync(context.Background(), b, 3)) // the third is back
	select {
	case n := <-g.entered:
		if n != 3 {
			t.Fatalf("batch size %d, want 3", n)
		}
	case <-time.After(10 * time.Second):
		close(g.release)
		t.Fatal("the held batch waited for MaxDelay though all its callers had arrived")
	}
	releaseAll(t, g, rs...)
}

// Callers arriving independently at a rate the executor serves with room to
// spare: a recent peak of three says company may come, but the executor was
// idle most of the last window, so holding would only add latency.
func TestIdleExecutorDoesNotHold(t *testing.T) {
	b, g, clock := gated(t, func(p *Params) { p.MaxDelay = 10 * time.Millisecond })

	// Three at once set the peak; the executor is busy 1ms.
	r0, rs := occupy(t, b, g, 2)
	clock.Advance(time.Millisecond)
	close(g.release)
	for _, ch := range append(rs, r0) {
		if r, _ := await(clock, ch); r.err != nil { // [1 2] may be held: the window is young
			t.Fatal(r.err)
		}
	}

	// Then a second of quiet, and a lone caller.
	clock.Advance(time.Second)
	ch := submitAsync(context.Background(), b, 3)
	select {
	case r := <-ch:
		if r.err != nil || r.v != 30 {
			t.Fatalf("Submit(3) = (%d, %v)", r.v, r.err)
		}
	case d := <-clock.timers:
		clock.Advance(d)
		t.Fatalf("an executor idle for a second held a lone item for %s", d)
	}
}

// After the load drops from eight concurrent callers to one, one batch waits
// out MaxDelay for the company that is gone, not one batch per missing
// caller.
func TestLoadDropCostsOneHold(t *testing.T) {
	b, g, clock := gated(t, func(p *Params) { p.MaxBatch = 7; p.MaxDelay = 10 * time.Millisecond })

	r0, rs := occupy(t, b, g, 7)
	releaseAll(t, g, append(rs, r0)...) // [0], then the full [1..7] at once: eight were concurrent

	held := 0
	for i := range 10 { // now a single sequential caller
		r, wasHeld := await(clock, submitAsync(context.Background(), b, i))
		if r.err != nil || r.v != 10*i {
			t.Fatalf("Submit(%d) = (%d, %v)", i, r.v, r.err)
		}
		if wasHeld {
			held++
		}
	}
	if held != 1 {
		t.Fatalf("%d of 10 sequential items waited out MaxDelay after the load dropped, want 1", held)
	}
}

func TestBatchBounds(t *testing.T) {
	const maxBatch, maxCost = 4, 10
	g := newGate()
	p := Params{Capacity: 64, MaxBatch: maxBatch, MaxCost: maxCost, Workers: 1}
	b := New(p, g.exec, WithCost(func(v int) int64 { return int64(v) }))
	start(t, b)

	var rs []<-chan result[int]
	rs = append(rs, submitAsync(context.Background(), b, 1))
	<-g.entered
	// Costs 3,3,3 fit 10 (9); the 4th 3 would not. 12 alone exceeds the
	// budget but still runs, alone. Then 1,1,1,1,1 splits by MaxBatch.
	costs := []int{3, 3, 3, 3, 12, 1, 1, 1, 1, 1}
	for i, c := range costs {
		rs = append(rs, submitAsync(context.Background(), b, c))
		waitQueued(t, b, i+1)
	}
	close(g.release)
	for _, ch := range rs {
		if r := <-ch; r.err != nil {
			t.Error(r.err)
		}
	}
	want := [][]int{{1}, {3, 3, 3}, {3}, {12}, {1, 1, 1, 1}, {1}}
	if got := g.Batches(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("batches %v, want %v", got, want)
	}
}

// With padding, a batch costs items × its longest. In arrival order, a
// batch ends where the next item would push the padded size past MaxCost;
// grouped by length, the oldest item goes with the queued items nearest to
// it in length, and items far from it wait for a batch of their own.
func TestPaddedBatches(t *testing.T) {
	for _, tc := range []struct {
		name    string
		group   bool
		lengths []int
		want    [][]int
	}{
		// 3 × 100 = 300 fits; 4 × 200 would not; nor would 2 × 200.
		{"arrival order", false, []int{100, 10, 100, 200, 10}, [][]int{{1}, {100, 10, 100}, {200}, {10}}},
		// Oldest 100 with its neighbours 98 and 101 (3 × 101 = 303 ≤ 320);
		// the short ones together; 200 alone (no one near it).
		{"grouped", true, []int{100, 5, 98, 6, 101, 200, 4}, [][]int{{1}, {100, 101, 98}, {5, 6, 4}, {200}}},
		// The oldest always goes, even when every other item is far from it:
		// no item waits behind more batches than items ahead of it.
		{"grouped, no starvation", true, []int{300, 4, 4, 4, 4}, [][]int{{1}, {300}, {4, 4, 4, 4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGate()
			p := Params{Capacity: 64, MaxBatch: 8, MaxCost: 320, Workers: 1}
			b := New(p, g.exec, WithCost(func(v int) int64 { return int64(v) }), WithPadding(tc.group))
			start(t, b)
			rs := []<-chan result[int]{submitAsync(context.Background(), b, 1)}
			<-g.entered
			for i, l := range tc.lengths {
				rs = append(rs, submitAsync(context.Background(), b, l))
				waitQueued(t, b, i+1)
			}
			close(g.release)
			for _, ch := range rs {
				if r := <-ch; r.err != nil {
					t.Error(r.err)
				}
			}
			if got := g.Batches(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("batches %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWorkersRunConcurrently(t *testing.T) {
	g := newGate()
	p := params()
	p.Workers = 3
	b := New(p, g.exec)
	start(t, b)
	var rs []<-chan result[int]
	for i := range 3 {
		rs = append(rs, submitAsync(context.Background(), b, i))
		<-g.entered // three batches in flight at once, or this hangs
	}
	close(g.release)
	for _, ch := range rs {
		if r := <-ch; r.err != nil {
			t.Error(r.err)
		}
	}
}

func TestExpiredItemsAreDroppedBeforeExecution(t *testing.T) {
	g := newGate()
	var expired atomic.Int32
	b := New(params(), g.exec, WithHooks(Hooks{Expired: func() { expired.Add(1) }}))
	start(t, b)

	r0 := submitAsync(context.Background(), b, 0)
	<-g.entered
	ctx, cancel := context.WithCancel(context.Background())
	rc := submitAsync(ctx, b, 1)
	r2 := submitAsync(context.Background(), b, 2)
	waitQueued(t, b, 2)
	cancel()
	if r := <-rc; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled caller got %v, want context.Canceled", r.err)
	}
	close(g.release)
	for _, ch := range []<-chan result[int]{r0, r2} {
		if r := <-ch; r.err != nil {
			t.Error(r.err)
		}
	}
	for _, batch := range g.Batches() {
		for _, v := range batch {
			if v == 1 {
				t.Errorf("cancelled item executed in batch %v", batch)
			}
		}
	}
	if got := expired.Load(); got != 1 {
		t.Errorf("Expired hook called %d times, want 1", got)
	}
}

func TestFailingExecutorFailsOnlyItsBatch(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		fail func()
		want error
	}{
		{"error", func() {}, boom},
		{"panic", func() { panic("kaboom") }, ErrExecutorPanic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exec := func(ctx context.Context, in, out []int) error {
				if in[0] < 0 {
					tc.fail()
					return boom
				}
				return double(ctx, in, out)
			}
			b := New(params(), exec)
			start(t, b)
			if _, err := b.Submit(context.Background(), -1); !errors.Is(err, tc.want) {
				t.Fatalf("failing batch: got %v, want %v", err, tc.want)
			}
			if got, err := b.Submit(context.Background(), 21); err != nil || got != 42 {
				t.Fatalf("next batch: got (%d, %v), want (42, nil)", got, err)
			}
		})
	}
}

func TestShutdownDrainsEveryAcceptedItem(t *testing.T) {
	g := newGate()
	p := params()
	p.Capacity = 20 // full once 1..20 queue, so the probe below is never accepted
	b := New(p, g.exec)
	stop := start(t, b)

	var rs []<-chan result[int]
	rs = append(rs, submitAsync(context.Background(), b, 0))
	<-g.entered
	for i := 1; i <= 20; i++ {
		rs = append(rs, submitAsync(context.Background(), b, i))
	}
	waitQueued(t, b, 20)

	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	for {
		_, err := b.Submit(context.Background(), 99)
		if errors.Is(err, ErrClosed) {
			break
		}
		if !errors.Is(err, ErrFull) && err != nil {
			t.Fatalf("Submit while closing: %v", err)
		}
		time.Sleep(100 * time.Microsecond)
	}
	close(g.release)
	<-stopped
	for i, ch := range rs {
		if r := <-ch; r.err != nil || r.v != 10*i {
			t.Errorf("item %d: got (%d, %v), want (%d, nil)", i, r.v, r.err, 10*i)
		}
	}
}

func TestDrainTimeoutFailsTheRest(t *testing.T) {
	clock := newFakeClock()
	g := newGate()
	p := params()
	p.DrainTimeout = 5 * time.Second
	b := New(p, g.exec, WithClock(clock))
	stop := start(t, b)

	running := submitAsync(context.Background(), b, 0)
	<-g.entered
	queued := submitAsync(context.Background(), b, 1)
	waitQueued(t, b, 1)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	if got := <-clock.timers; got != p.DrainTimeout {
		t.Fatalf("drain timer %s, want %s", got, p.DrainTimeout)
	}
	clock.Advance(p.DrainTimeout)
	<-stopped
	if r := <-queued; !errors.Is(r.err, ErrDrainTimeout) {
		t.Errorf("queued item: got %v, want ErrDrainTimeout", r.err)
	}
	if r := <-running; !errors.Is(r.err, context.Canceled) {
		t.Errorf("running item: got %v, want the executor's context error", r.err)
	}
}

// Under 64 concurrent submitters and random cancellations, no item runs twice
// and every item that returned a result ran exactly once.
func TestConcurrentNoLossNoDuplicates(t *testing.T) {
	const submitters, each = 64, 200
	var runs [submitters * each]atomic.Int32
	exec := func(_ context.Context, in, out []int) error {
		for i, v := range in {
			runs[v].Add(1)
			out[i] = v
		}
		return nil
	}
	p := Params{Capacity: 32, MaxBatch: 8, MaxDelay: 50 * time.Microsecond, Workers: 2}
	b := New(p, exec)
	stop := start(t, b)

	var ok, full, cancelled atomic.Int32
	var wg sync.WaitGroup
	for s := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(s), 1))
			for i := range each {
				id := s*each + i
				ctx, cancel := context.WithCancel(context.Background())
				if rng.IntN(4) == 0 {
					go cancel()
				}
				got, err := b.Submit(ctx, id)
				cancel()
				switch {
				case err == nil:
					if got != id {
						t.Errorf("item %d got result %d", id, got)
					}
					ok.Add(1)
					if n := runs[id].Load(); n != 1 {
						t.Errorf("item %d returned after %d runs", id, n)
					}
				case errors.Is(err, ErrFull):
					full.Add(1)
				case errors.Is(err, context.Canceled):
					cancelled.Add(1)
				default:
					t.Errorf("item %d: %v", id, err)
				}
			}
		}()
	}
	wg.Wait()
	stop()
	for id := range runs {
		if n := runs[id].Load(); n > 1 {
			t.Errorf("item %d ran %d times", id, n)
		}
	}
	if got := b.Len(); got != 0 {
		t.Errorf("%d items left queued", got)
	}
	if b.inSystem != 0 {
		t.Errorf("%d items still counted in the system", b.inSystem)
	}
	t.Logf("ok=%d full=%d cancelled=%d", ok.Load(), full.Load(), cancelled.Load())
	if ok.Load() == 0 {
		t.Error("no item succeeded")
	}
}

func TestHooks(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	var waits int
	b := New(params(), double, WithHooks(Hooks{
		Batch: func(n int) { mu.Lock(); sizes = append(sizes, n); mu.Unlock() },
		Wait:  func(time.Duration) { mu.Lock(); waits++; mu.Unlock() },
	}))
	start(t, b)
	for i := range 5 {
		if _, err := b.Submit(context.Background(), i); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range sizes {
		total += n
	}
	if total != 5 || waits != 5 {
		t.Errorf("hooks saw %d items in batches and %d waits, want 5 and 5", total, waits)
	}
}

func TestParamsValidate(t *testing.T) {
	ok := Params{Capacity: 1, MaxBatch: 1, Workers: 1}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid params: %v", err)
	}
	for name, mutate := range map[string]func(*Params){
		"Capacity":     func(p *Params) { p.Capacity = 0 },
		"MaxBatch":     func(p *Params) { p.MaxBatch = 0 },
		"MaxCost":      func(p *Params) { p.MaxCost = -1 },
		"MaxDelay":     func(p *Params) { p.MaxDelay = -1 },
		"Workers":      func(p *Params) { p.Workers = 0 },
		"DrainTimeout": func(p *Params) { p.DrainTimeout = -1 },
	} {
		p := ok
		mutate(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: invalid value accepted", name)
		}
	}
}
