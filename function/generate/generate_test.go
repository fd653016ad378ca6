package generate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sous-ai/sous/batching"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// form is one of the two model forms the engine runs.
type form struct {
	name   string
	dir    string // what write writes
	shared int    // Options.SharedKV
	write  func(dir string, tokenizerJSON []byte) error
}

var forms = []form{
	{"optimum", "text-generation", 0, testmodels.Decoder},
	{"gqa", "text-generation-gqa", 256, testmodels.DecoderGQA},
}

// eachForm runs test once per model form, with the test decoder in that
// form loaded.
func eachForm(t *testing.T, test func(t *testing.T, f form, m *model.Engine)) {
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) { test(t, f, decoderModel(t, f.dir, f.write)) })
	}
}

// decoderModel writes a test decoder with write and loads dir/name from it.
func decoderModel(t testing.TB, name string, write func(dir string, tokenizerJSON []byte) error) *model.Engine {
	t.Helper()
	tok, err := os.ReadFile("../tokenizer/testdata/tokenizers/all-minilm-l6-v2.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := write(dir, tok); err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Params{Library: model.FindLibrary(), Model: filepath.Join(dir, name, "model.onnx"),
		Device: "cpu", Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// greedy generates each prompt alone, greedily, max tokens 12, 15, 18...
func greedy(t *testing.T, e *Engine, ps [][]int64) [][]int64 {
	t.Helper()
	out := make([][]int64, len(ps))
	for i, p := range ps {
		r, err := e.Generate(context.Background(), p, Params{MaxTokens: 12 + i*3}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Finish != FinishLength || len(r.Tokens) != 12+i*3 {
			t.Fatalf("alone %d: %d tokens, finish %s", i, len(r.Tokens), r.Finish)
		}
		out[i] = r.Tokens
	}
	return out
}

func startEngine(t testing.TB, m *model.Engine, opt Options) *Engine {
	t.Helper()
	e, err := New(m, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// prompts of different lengths (token ids from the vocabulary's words).
func prompts() [][]int64 {
	var out [][]int64
	for i, n := range []int{3, 7, 12, 20, 5, 31} {
		p := make([]int64, n)
		for j := range p {
			p[j] = int64(2000 + (i*131+j*17)%5000)
		}
		out = append(out, p)
	}
	return out
}

// Greedy generation with continuous batching is token for token what
// generating each sequence alone gives, for prompts of different lengths
// that join and leave mid-flight.
func TestContinuousBatchingEqualsAlone(t *testing.T) { eachForm(t, testContinuousBatchingEqualsAlone) }

func testContinuousBatchingEqualsAlone(t *testing.T, f form, m *model.Engine) {
	ps := prompts()
	alone := greedy(t, startEngine(t, m, Options{SharedKV: f.shared}), ps)
	eachChunk(t, func(t *testing.T, chunk int) { continuousEqualsAlone(t, f, m, ps, alone, chunk) })
}

// chunks are the prefill chunks tests run with: whole prompts, and 4
// tokens a step, so that most prompts span several steps.
var chunks = []int{0, 4}

// eachChunk runs test once per prefill chunk of chunks.
func eachChunk(t *testing.T, test func(t *testing.T, chunk int)) {
	for _, c := range chunks {
		t.Run(fmt.Sprintf("chunk%d", c), func(t *testing.T) { test(t, c) })
	}
}

func continuousEqualsAlone(t *testing.T, f form, m *model.Engine, ps, alone [][]int64, chunk int) {
	var mu sync.Mutex
	var batches []int
	e := startEngine(t, m, Options{SharedKV: f.shared, PrefillChunk: chunk, OnStep: func(n int) { mu.Lock(); batches = append(batches, n); mu.Unlock() }})
	// Staggered: each sequence starts when the previous one has made 4
	// tokens, so they join while others are mid-flight, and their
	// different max_tokens make them leave at different steps.
	got := make([][]int64, len(ps))
	var wg sync.WaitGroup
	start := make(chan struct{}, len(ps))
	start <- struct{}{}
	for i, p := range ps {
		<-start
		wg.Add(1)
		n := 0
		go func() {
			defer wg.Done()
			r, err := e.Generate(context.Background(), p, Params{MaxTokens: 12 + i*3}, func(int64) {
				if n++; n == 4 {
					start <- struct{}{}
				}
			})
			if err != nil {
				t.Error(err)
			}
			got[i] = r.Tokens
		}()
	}
	wg.Wait()
	for i := range ps {
		if fmt.Sprint(got[i]) != fmt.Sprint(alone[i]) {
			t.Errorf("prompt %d (%d tokens): batched %v, alone %v", i, len(ps[i]), got[i], alone[i])
		}
	}
	mu.Lock()
	peak := 0
	for _, b := range batches {
		peak = max(peak, b)
	}
	mu.Unlock()
	if peak < 3 {
		t.Errorf("decode steps ran at most %d sequences together: the sequences did not overlap", peak)
	}
	if !t.Failed() {
		t.Logf("%d sequences, %d decode steps, up to %d sequences a step; every token equal to the sequence alone", len(ps), len(batches), peak)
	}
}

// The GroupQueryAttention form, with as many key/value heads as query
// heads, has the Optimum form's weights: greedy generation, alone and
// batched, gives the same tokens through either.
func TestFormsAgree(t *testing.T) {
	ps := prompts()
	opt := decoderModel(t, "text-generation", testmodels.Decoder)
	gqa := decoderModel(t, "gqa-mha", func(dir string, tok []byte) error {
		return testmodels.DecoderForm(dir, "gqa-mha", tok, 32, 2, 2, 2, true)
	})
	want := greedy(t, startEngine(t, opt, Options{}), ps)
	got := greedy(t, startEngine(t, gqa, Options{SharedKV: 256}), ps)
	for i := range ps {
		if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
			t.Errorf("prompt %d: GroupQueryAttention form %v, Optimum form %v", i, got[i], want[i])
		}
	}
}

// A caller that goes away frees its sequence within a step; the others
// carry on.
func TestCallerLeavingFreesItsSequence(t *testing.T) { eachForm(t, testCallerLeavingFreesItsSequence) }

func testCallerLeavingFreesItsSequence(t *testing.T, f form, m *model.Engine) {
	// Room for one sequence of up to 256 positions.
	e := startEngine(t, m, Options{KVTokens: 256, SharedKV: f.shared})
	ps := prompts()
	ctx, cancel := context.WithCancel(context.Background())
	var made int
	leaving := make(chan Result, 1)
	go func() {
		r, _ := e.Generate(ctx, ps[0], Params{MaxTokens: 200}, func(int64) {
			if made++; made == 3 {
				cancel()
			}
		})
		leaving <- r
	}()
	r := <-leaving
	if r.Finish != FinishCancelled || len(r.Tokens) > 5 {
		t.Fatalf("left after 3 tokens: finish %s with %d tokens", r.Finish, len(r.Tokens))
	}
	// Its reserved positions are free again: a sequence needing most of
	// the budget is admitted at once.
	done := make(chan Result, 1)
	go func() {
		r, _ := e.Generate(context.Background(), ps[1], Params{MaxTokens: 240}, nil)
		done <- r
	}()
	select {
	case r := <-done:
		if r.Finish != FinishLength {
			t.Errorf("next sequence: %s", r.Finish)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the budget was not freed")
	}
}

// When the KV budget is full, new sequences wait and start as soon as
// room is made; one too large for the budget is refused.
func TestKVBudgetBackPressure(t *testing.T) { eachForm(t, testKVBudgetBackPressure) }

func testKVBudgetBackPressure(t *testing.T, f form, m *model.Engine) {
	// Optimum's form: each sequence below reserves 3+140=143 of 256
	// positions; the GroupQueryAttention form: one 256-position buffer.
	// Either way one at a time.
	e := startEngine(t, m, Options{KVTokens: 256, SharedKV: f.shared})
	ps := prompts()
	if _, err := e.Generate(context.Background(), ps[0], Params{MaxTokens: 300}, nil); err != ErrTooLong {
		t.Fatalf("over the budget: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := 0
	order := make(chan int, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// onToken runs in the engine's loop: the sequences it holds
			// admitted then are those sharing the budget (a caller's own
			// count, taken after Generate returns, would lag the loop).
			r, err := e.Generate(context.Background(), ps[0], Params{MaxTokens: 140}, func(int64) {
				mu.Lock()
				peak = max(peak, e.Active())
				mu.Unlock()
			})
			if err != nil || r.Finish != FinishLength {
				t.Errorf("%d: %v %s", i, err, r.Finish)
			}
			order <- i
		}()
	}
	wg.Wait()
	if len(order) != 3 {
		t.Fatal("not every waiting sequence ran")
	}
	if peak != 1 {
		t.Errorf("%d sequences ran at once in a budget for one", peak)
	}
}

// Sampling with a seed is reproducible; different seeds differ.
func TestSeededSampling(t *testing.T) {
	m := decoderModel(t, "text-generation", testmodels.Decoder)
	e := startEngine(t, m, Options{})
	p := prompts()[2]
	gen := func(seed uint64) []int64 {
		r, err := e.Generate(context.Background(), p, Params{MaxTokens: 16, Temperature: 1.5, TopK: 50, TopP: 0.95, Seed: seed}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r.Tokens
	}
	a, b, c := gen(7), gen(7), gen(8)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("seed 7 twice: %v, %v", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Errorf("seeds 7 and 8 gave the same tokens %v", a)
	}
}

// A session's next turn starts from the KV its last turn left in the
// prefix cache: only the new tokens are prefilled, and greedy generation
// gives the tokens a whole prefill gives. A turn built from another
// version of the transcript does not use it.
func TestPrefixCache(t *testing.T) { eachForm(t, testPrefixCache) }

func testPrefixCache(t *testing.T, f form, m *model.Engine) {
	eachChunk(t, func(t *testing.T, chunk int) { prefixCacheTurns(t, f, m, chunk) })
}

func prefixCacheTurns(t *testing.T, f form, m *model.Engine, chunk int) {
	cached := startEngine(t, m, Options{SharedKV: f.shared, PrefixCacheBytes: 1 << 20, PrefillChunk: chunk})
	plain := startEngine(t, m, Options{SharedKV: f.shared})
	ps := prompts()
	gen := func(e *Engine, prompt []int64, session, prev, next string) Result {
		t.Helper()
		r, err := e.Generate(context.Background(), prompt, Params{MaxTokens: 10, Session: session, Prev: prev, Next: next}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	prompt := ps[3]
	r := gen(cached, prompt, "s", "0", "1")
	if r.CachedTokens != 0 {
		t.Fatalf("first turn: %d cached tokens", r.CachedTokens)
	}
	for turn := 2; turn <= 4; turn++ {
		// The next prompt: the last one, its reply, and a new message.
		prompt = append(append(append([]int64(nil), prompt...), r.Tokens...), ps[turn]...)
		want := gen(plain, prompt, "", "", "")
		r = gen(cached, prompt, "s", fmt.Sprint(turn-1), fmt.Sprint(turn))
		if fed := len(prompt) - len(ps[turn]) - 1; r.CachedTokens != fed {
			t.Errorf("turn %d: %d of %d prompt tokens cached, want %d (all the last turn fed)", turn, r.CachedTokens, len(prompt), fed)
		}
		if fmt.Sprint(r.Tokens) != fmt.Sprint(want.Tokens) {
			t.Errorf("turn %d: from the cache %v, whole prefill %v", turn, r.Tokens, want.Tokens)
		}
	}
	// Another pod took turn 5: the transcript's version is not the one
	// this entry was saved as.
	prompt = append(append(append([]int64(nil), prompt...), r.Tokens...), ps[5]...)
	want := gen(plain, prompt, "", "", "")
	r = gen(cached, prompt, "s", "5-elsewhere", "6")
	if r.CachedTokens != 0 || fmt.Sprint(r.Tokens) != fmt.Sprint(want.Tokens) {
		t.Errorf("version mismatch: %d cached tokens, tokens %v, want 0 and %v", r.CachedTokens, r.Tokens, want.Tokens)
	}
	// A prompt that shares only part of the cached tokens (the transcript
	// was cut at the front, or the reply re-tokenized differently) reuses
	// the common prefix.
	cut := append(append([]int64(nil), prompt[:20]...), 999, 1000, 1001)
	want = gen(plain, cut, "", "", "")
	r = gen(cached, cut, "s", "6", "7")
	if r.CachedTokens != 20 || fmt.Sprint(r.Tokens) != fmt.Sprint(want.Tokens) {
		t.Errorf("common prefix of 20: %d cached tokens, tokens %v, want 20 and %v", r.CachedTokens, r.Tokens, want.Tokens)
	}
	st := cached.CacheStats()
	if st.Hits != 4 || st.Misses != 2 || st.Entries != 1 || st.Bytes == 0 {
		t.Errorf("stats %+v: want 4 hits, 2 misses, 1 entry", st)
	}
}

// The cache holds at most its bytes: least recently used out first; an
// entry is taken out when used.
func TestPrefixCacheBound(t *testing.T) {
	c := newPrefixCache(100)
	put := func(session string, bytes int64) {
		c.put(&prefix{session: session, version: "v", bytes: bytes})
	}
	put("a", 40)
	put("b", 40)
	put("c", 40) // evicts a
	if c.take("a", "v") != nil || c.snapshot().Bytes != 80 {
		t.Fatalf("a should be gone, %+v", c.snapshot())
	}
	put("b", 50) // replaces b, now the most recent: 90 bytes
	put("d", 20) // evicts c, the least recent
	if st := c.snapshot(); st.Bytes != 70 || st.Entries != 2 || c.by["c"] != nil {
		t.Fatalf("after d: %+v, want b and d", st)
	}
	put("huge", 101) // larger than the bound: not kept, nothing evicted
	if c.take("huge", "v") != nil || c.snapshot().Entries != 2 {
		t.Fatalf("after huge: %+v", c.snapshot())
	}
	if c.take("b", "w") != nil || c.take("b", "v") != nil {
		t.Fatal("a mismatched take drops the entry")
	}
	if c.take("d", "v") == nil || c.take("d", "v") != nil {
		t.Fatal("a take takes the entry out")
	}
	if st := c.snapshot(); st.Bytes != 0 || st.Entries != 0 {
		t.Fatalf("left %+v, want nothing", st)
	}
}

// The wait for admission is bounded: beyond Options.Queue waiting
// sequences Generate answers batching.ErrFull at once, and a caller who
// leaves while waiting is answered too. Run is not started, so nothing is
// admitted meanwhile.
func TestQueueBoundsWaitingSequences(t *testing.T) {
	m := decoderModel(t, forms[0].dir, forms[0].write)
	e, err := New(m, Options{Queue: 1})
	if err != nil {
		t.Fatal(err)
	}
	ps := prompts()
	ctx, cancel := context.WithCancel(context.Background())
	waited := make(chan error, 1)
	go func() {
		_, err := e.Generate(ctx, ps[0], Params{MaxTokens: 4}, nil)
		waited <- err
	}()
	for e.Waiting() != 1 {
		time.Sleep(time.Millisecond)
	}
	// With no loop running, a Generate that waited would never return.
	if _, err := e.Generate(context.Background(), ps[1], Params{MaxTokens: 4}, nil); !errors.Is(err, batching.ErrFull) {
		t.Fatalf("second sequence with a queue of 1: %v, want batching.ErrFull", err)
	}
	cancel()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(runCtx); close(done) }()
	if err := <-waited; err != nil {
		t.Errorf("caller who left while waiting: %v, want its partial result", err)
	}
	stop()
	<-done
	if _, err := e.Generate(context.Background(), ps[1], Params{MaxTokens: 4}, nil); !errors.Is(err, ErrStopped) {
		t.Errorf("after Run ended: %v, want ErrStopped", err)
	}
}

// n continuations of one prompt share one prefill: each equals the same
// settings run alone, token for token (greedy and seeded sampling), in
// either form; the group takes its places together.
func TestGenerateNSharesThePrefill(t *testing.T) { eachForm(t, testGenerateN) }

func testGenerateN(t *testing.T, f form, m *model.Engine) {
	eachChunk(t, func(t *testing.T, chunk int) { generateN(t, f, m, chunk) })
}

func generateN(t *testing.T, f form, m *model.Engine, chunk int) {
	var mu sync.Mutex
	var batches []int
	e := startEngine(t, m, Options{SharedKV: f.shared, PrefillChunk: chunk, OnStep: func(n int) { mu.Lock(); batches = append(batches, n); mu.Unlock() }})
	prompt := prompts()[3]
	ps := []Params{
		{MaxTokens: 10},
		{MaxTokens: 14, Temperature: 1, Seed: 11},
		{MaxTokens: 6, Temperature: 1.2, TopK: 40, Seed: 12},
	}
	got, err := e.GenerateN(context.Background(), prompt, ps, nil)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	first := batches[0]
	mu.Unlock()
	if first != len(ps) {
		t.Errorf("first decode step ran %d sequences, want the %d of the group", first, len(ps))
	}
	for i, p := range ps {
		alone, err := e.Generate(context.Background(), prompt, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got[i].Tokens, alone.Tokens) || got[i].Finish != alone.Finish {
			t.Errorf("choice %d: %v %s, alone %v %s", i, got[i].Tokens, got[i].Finish, alone.Tokens, alone.Finish)
		}
	}
}

// A long prompt arriving is prefilled a chunk a step, between the decode
// steps of the running sequences: they go on making tokens while it
// fills, and it is as it would be prefilled whole.
func TestChunkedPrefillInterleavesDecoding(t *testing.T) {
	eachForm(t, testChunkedPrefillInterleavesDecoding)
}

func testChunkedPrefillInterleavesDecoding(t *testing.T, f form, m *model.Engine) {
	ps := prompts()
	long := ps[5] // 31 tokens: 8 chunks of 4
	const chunk = 4
	want := greedy(t, startEngine(t, m, Options{SharedKV: f.shared}), [][]int64{long})[0]
	e := startEngine(t, m, Options{SharedKV: f.shared, PrefillChunk: chunk})
	var made atomic.Int64 // the running sequence's tokens
	started := make(chan struct{})
	running := make(chan error, 1)
	go func() {
		_, err := e.Generate(context.Background(), ps[0], Params{MaxTokens: 200}, func(int64) {
			if made.Add(1) == 2 {
				close(started)
			}
		})
		running <- err
	}()
	<-started
	before := made.Load()
	var atFirst int64 = -1
	r, err := e.Generate(context.Background(), long, Params{MaxTokens: 12}, func(int64) {
		if atFirst < 0 {
			atFirst = made.Load()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Tokens, want) {
		t.Errorf("prefilled in chunks of %d: %v, whole %v", chunk, r.Tokens, want)
	}
	// Its first token comes with its last chunk, before that step's
	// decode: one decode step after each of the chunks before.
	chunks := int64((len(long) + chunk - 1) / chunk)
	if got := atFirst - before; got < chunks-1 {
		t.Errorf("the running sequence made %d tokens while a %d-token prompt filled in %d chunks, want at least %d", got, len(long), chunks, chunks-1)
	}
	if err := <-running; err != nil {
		t.Fatal(err)
	}
}

// Twelve sequences at once, greedy and seeded sampling mixed: a step's
// greedy rows are picked on every core before the rows are handed out
// (batches of 8 and more), and every sequence is still token for token
// what it makes alone.
func TestWideBatchEqualsAlone(t *testing.T) { eachForm(t, testWideBatchEqualsAlone) }

func testWideBatchEqualsAlone(t *testing.T, f form, m *model.Engine) {
	var ps [][]int64
	var params []Params
	for i := range 12 {
		p := make([]int64, 3+i%5)
		for j := range p {
			p[j] = int64(3000 + (i*97+j*13)%4000)
		}
		ps = append(ps, p)
		pr := Params{MaxTokens: 10 + i}
		if i%3 == 2 {
			pr.Temperature, pr.TopK, pr.Seed = 0.8, 40, uint64(i+1)
		}
		params = append(params, pr)
	}
	solo := startEngine(t, m, Options{SharedKV: f.shared})
	alone := make([][]int64, len(ps))
	for i, p := range ps {
		r, err := solo.Generate(context.Background(), p, params[i], nil)
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = r.Tokens
	}
	var mu sync.Mutex
	widest := 0
	e := startEngine(t, m, Options{SharedKV: f.shared, OnStep: func(n int) { mu.Lock(); widest = max(widest, n); mu.Unlock() }})
	got := make([][]int64, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.Generate(context.Background(), p, params[i], nil)
			if err != nil {
				t.Error(err)
			}
			got[i] = r.Tokens
		}()
	}
	wg.Wait()
	for i := range ps {
		if fmt.Sprint(got[i]) != fmt.Sprint(alone[i]) {
			t.Errorf("sequence %d (%+v): batched %v, alone %v", i, params[i], got[i], alone[i])
		}
	}
	if mu.Lock(); widest < 8 {
		t.Errorf("widest step %d rows: the test wants steps of 8 and more", widest)
	}
	mu.Unlock()
}
