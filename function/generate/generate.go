// Package generate is the decode engine for decoder-only models, in either
// of two forms: Optimum's export (past_key_values.{i}.key/value in,
// present.{i}.key/value out, the present one position longer than the
// past) or ONNX Runtime GenAI's GroupQueryAttention form (past and present
// are one fixed buffer per sequence, written in place). It does continuous
// batching of decode steps. New sequences wait in a queue; each step of
// the engine's loop admits waiting sequences while the KV budget allows
// (and prefills each, from the prefix cache's KV when it has the
// session's), runs ONE
// batched decode call for every active sequence, hands each its token, and
// retires the finished (end of sequence, max tokens) and those whose
// caller left. Sequences join and leave between steps.
//
// KV cache, Optimum's form: each sequence holds its own keys and values
// per layer as a dense [heads, length, head_dim] slice that grows by one
// position a step. A step lays the batch's pasts out left-padded to the
// longest, with the attention mask zero on the padding, and takes each
// row's present back without it. The graph concatenates past and new and
// returns a new present every step, so a copy per step is unavoidable;
// holding KV per sequence (not in one shared padded buffer) lets sequences
// of any length join or leave at any step with no re-layout of the others,
// and a sequence holds only the positions it has.
//
// KV cache, GroupQueryAttention form: one slab per layer of fixed-length
// buffers [slots, kv_heads, buffer, head_dim], where active sequence i
// owns slot i. A step passes the first len(active) slots as past and binds
// the same memory as present: the operator appends each row's new
// position at its own length (seqlens_k, from the right-padded attention
// mask), so nothing is copied per step. A sequence that leaves gives its
// slot to the last active one (one sequence's KV copied, once). The price
// is memory: each sequence reserves a whole buffer however short it is, so
// SOUS_KV_TOKENS / buffer bounds the sequences in flight.
package generate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/function/model"
)

// Params are one generation's settings.
type Params struct {
	MaxTokens   int     // most tokens generated (default 64)
	Temperature float64 // 0: greedy
	TopK        int     // 0: all
	TopP        float64 // 0 or 1: all
	Seed        uint64  // for sampling; 0 picks one
	// Session names the conversation for the prefix cache ("": none).
	// Prev is the version of its transcript the prompt was built from,
	// Next the version this generation's exchange is saved as: the next
	// turn, built from Next, starts from this one's KV.
	Session, Prev, Next string
}

// Finish reasons.
const (
	FinishStop      = "stop"      // the model's end-of-sequence token
	FinishLength    = "length"    // MaxTokens reached
	FinishCancelled = "cancelled" // the caller went away, or the engine stopped
)

// Result is a finished generation.
type Result struct {
	Tokens       []int64
	Finish       string
	PromptTokens int
	CachedTokens int // of the prompt's, those whose KV came from the prefix cache
}

// ErrTooLong is returned for a prompt that with MaxTokens cannot fit the KV
// budget even alone.
var ErrTooLong = errors.New("generate: prompt and max_tokens exceed the KV budget")

// Options configure an Engine.
type Options struct {
	EOS      int64 // end-of-sequence token id (-1: none)
	MaxBatch int   // most sequences in one decode step (default 32)
	// KVTokens bounds the positions all active sequences may hold, each
	// reserving its prompt plus MaxTokens on admission (default 65536).
	KVTokens int
	// SharedKV, if positive, says the model takes the GroupQueryAttention
	// form with past and present sharing a buffer of this many positions
	// per sequence (genai_config.json's search.max_length with
	// past_present_share_buffer).
	SharedKV int
	// PrefixCacheBytes bounds the prefix cache of recent sessions' KV (0:
	// no cache).
	PrefixCacheBytes int64
	// OnStep, if set, is told each decode step's batch size.
	OnStep func(batch int)
	// Tracer, if set, gets a span per prefill (under the caller's span)
	// and per decode step (linked to every sequence in it).
	Tracer trace.Tracer
}

// Engine runs a decoder model's generations.
type Engine struct {
	m      *model.Engine
	opt    Options
	layers int
	heads  int64
	hd     int64
	// input and output indexes
	ids, mask, pos int
	past           [][2]int // per layer: key, value input index
	logits         int
	present        [][2]int // per layer: key, value output index

	// pastBuf holds each layer's batched past keys and values between
	// steps (the loop's own; Optimum's form).
	pastBuf [][2][]float32
	// slab holds each layer's keys and values, slot after slot of shared
	// buffers [kv_heads, shared, hd] (the GroupQueryAttention form).
	slab [][2][]float32
	// sharedOuts maps each present output to its past input (the
	// GroupQueryAttention form; nil for Optimum's).
	sharedOuts map[int]int
	shared     int64 // positions per slot; 0 for Optimum's form
	slots      int

	cache *prefixCache // nil: none
	// logitsBuf and presentBuf take the logits and (Optimum's form) the
	// presents of decode steps: the loop's own, reused.
	logitsBuf  []float32
	presentBuf [][2][]float32

	mu      sync.Mutex // guards waiting, reserved, closed
	waiting []*seq
	// reserved is the KV positions admitted sequences reserve.
	reserved  int
	admittedN int // sequences admitted, not yet retired
	closed    bool
	wake      chan struct{}
}

type seq struct {
	ctx     context.Context
	prompt  []int64
	p       Params
	onToken func(int64)
	rng     *rand.Rand
	out     []int64
	kv      [][2][]float32 // per layer: key, value, [heads, length, hd]
	length  int
	done    chan Result
	err     error
	finish  string
	reserve int // KV positions it needs: prompt + MaxTokens (a whole slot when shared)
	held    int // of them reserved in the engine (once admitted)
	slot    int // its slot in the slab (the GroupQueryAttention form)
	cached  int // prompt tokens whose KV came from the prefix cache
}

// New binds an Engine to a decoder model loaded with model.New.
func New(m *model.Engine, opt Options) (*Engine, error) {
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 32
	}
	if opt.KVTokens <= 0 {
		opt.KVTokens = 65536
	}
	e := &Engine{m: m, opt: opt, ids: -1, mask: -1, pos: -1, logits: -1, wake: make(chan struct{}, 1)}
	idx := func(list []model.Info) map[string]int {
		out := map[string]int{}
		for i, in := range list {
			out[in.Name] = i
		}
		return out
	}
	ins, outs := idx(m.Inputs()), idx(m.Outputs())
	var ok bool
	if e.ids, ok = ins["input_ids"]; !ok {
		return nil, fmt.Errorf("generate: model %s has no input_ids", m.Name())
	}
	if e.mask, ok = ins["attention_mask"]; !ok {
		return nil, fmt.Errorf("generate: model %s has no attention_mask", m.Name())
	}
	if e.pos, ok = ins["position_ids"]; !ok {
		return nil, fmt.Errorf("generate: model %s has no position_ids", m.Name())
	}
	if e.logits, ok = outs["logits"]; !ok {
		return nil, fmt.Errorf("generate: model %s has no logits output", m.Name())
	}
	for l := 0; ; l++ {
		k, okK := ins["past_key_values."+strconv.Itoa(l)+".key"]
		v, okV := ins["past_key_values."+strconv.Itoa(l)+".value"]
		pk, okPK := outs["present."+strconv.Itoa(l)+".key"]
		pv, okPV := outs["present."+strconv.Itoa(l)+".value"]
		if !okK || !okV || !okPK || !okPV {
			break
		}
		e.past = append(e.past, [2]int{k, v})
		e.present = append(e.present, [2]int{pk, pv})
	}
	e.layers = len(e.past)
	if e.layers == 0 || len(ins) != 3+2*e.layers {
		return nil, fmt.Errorf("generate: model %s: want input_ids, attention_mask, position_ids and past_key_values.{i}.key/value, got %d inputs", m.Name(), len(ins))
	}
	shape := m.Inputs()[e.past[0][0]].Shape
	if len(shape) != 4 || shape[1] <= 0 || shape[3] <= 0 {
		return nil, fmt.Errorf("generate: model %s: past keys have shape %v, want [batch, heads, past, head_dim] with fixed heads and head_dim", m.Name(), shape)
	}
	e.heads, e.hd = shape[1], shape[3]
	if opt.PrefixCacheBytes > 0 {
		e.cache = newPrefixCache(opt.PrefixCacheBytes)
	}
	if opt.SharedKV > 0 {
		e.shared = int64(opt.SharedKV)
		e.slots = min(opt.MaxBatch, opt.KVTokens/opt.SharedKV)
		if e.slots == 0 {
			return nil, fmt.Errorf("generate: model %s: a sequence's KV buffer is %d positions, more than SOUS_KV_TOKENS %d", m.Name(), opt.SharedKV, opt.KVTokens)
		}
		e.opt.MaxBatch = e.slots
		// Allocated once; pages are touched only as slots fill.
		e.slab = make([][2][]float32, e.layers)
		e.sharedOuts = make(map[int]int, 2*e.layers)
		for l := range e.slab {
			for k := range 2 {
				e.slab[l][k] = make([]float32, int64(e.slots)*e.heads*e.shared*e.hd)
				e.sharedOuts[e.present[l][k]] = e.past[l][k]
			}
		}
	}
	return e, nil
}

// Generate queues prompt, waits for its generation and returns it.
// onToken, if set, gets each token as it is made, in order, from the
// engine's loop (it must not block). A caller whose ctx ends gets what was
// generated so far with FinishCancelled, and its sequence is freed at the
// next step.
func (e *Engine) Generate(ctx context.Context, prompt []int64, p Params, onToken func(int64)) (Result, error) {
	if p.MaxTokens <= 0 {
		p.MaxTokens = 64
	}
	if len(prompt) == 0 {
		return Result{}, errors.New("generate: empty prompt")
	}
	reserve := len(prompt) + p.MaxTokens
	if e.shared > 0 {
		if int64(reserve) > e.shared {
			return Result{}, ErrTooLong
		}
		reserve = int(e.shared)
	}
	if reserve > e.opt.KVTokens {
		return Result{}, ErrTooLong
	}
	seed := p.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s := &seq{ctx: ctx, prompt: prompt, p: p, onToken: onToken, rng: rand.New(rand.NewPCG(seed, seed>>1|1)),
		done: make(chan Result, 1), reserve: reserve}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return Result{}, errors.New("generate: engine stopped")
	}
	e.waiting = append(e.waiting, s)
	e.mu.Unlock()
	e.poke()
	select {
	case r := <-s.done:
		return r, s.err
	case <-ctx.Done():
		// The loop frees the sequence at its next step and says so.
		e.poke()
		r := <-s.done
		return r, s.err
	}
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run runs the engine's loop until ctx ends; then every active and waiting
// sequence finishes with FinishCancelled.
func (e *Engine) Run(ctx context.Context) error {
	var active []*seq
	defer func() {
		e.mu.Lock()
		e.closed = true
		waiting := e.waiting
		e.waiting = nil
		e.mu.Unlock()
		for _, s := range append(active, waiting...) {
			s.finish = FinishCancelled
			e.retire(s)
		}
	}()
	for {
		if ctx.Err() != nil {
			return nil
		}
		// Admit waiting sequences, oldest first, while the KV budget and
		// the batch allow; prefill each.
		e.mu.Lock()
		var admitted []*seq
		var gone []*seq
		waiting := e.waiting[:0]
		for _, s := range e.waiting {
			if s.ctx.Err() != nil {
				gone = append(gone, s)
			} else {
				waiting = append(waiting, s)
			}
		}
		e.waiting = waiting
		for len(e.waiting) > 0 && len(active)+len(admitted) < e.opt.MaxBatch && e.reserved+e.waiting[0].reserve <= e.opt.KVTokens {
			s := e.waiting[0]
			e.waiting = e.waiting[1:]
			e.reserved += s.reserve
			e.admittedN++
			s.held = s.reserve
			admitted = append(admitted, s)
		}
		e.mu.Unlock()
		for _, s := range gone {
			s.finish = FinishCancelled
			e.retire(s)
		}
		for _, s := range admitted {
			if s.ctx.Err() != nil {
				s.finish = FinishCancelled
				e.retire(s)
				continue
			}
			s.slot = len(active)
			if err := e.prefill(ctx, s); err != nil {
				s.err = err
				e.retire(s)
				continue
			}
			if !e.finished(s) {
				active = append(active, s)
			}
		}
		// Leave: callers gone.
		active = e.prune(active, e.gone)
		if len(active) == 0 {
			e.mu.Lock()
			idle := len(e.waiting) == 0
			e.mu.Unlock()
			if idle {
				select {
				case <-e.wake:
				case <-ctx.Done():
					return nil
				}
			}
			continue
		}
		if err := e.step(ctx, active); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			for _, s := range active {
				s.err = err
				e.retire(s)
			}
			active = nil
			continue
		}
		active = e.prune(active, e.finished)
	}
}

// prune drops the sequences done says are done (done retires them). The
// last active sequence takes a dropped one's place, and its slot.
func (e *Engine) prune(active []*seq, done func(*seq) bool) []*seq {
	for i := 0; i < len(active); {
		if !done(active[i]) {
			i++
			continue
		}
		last := len(active) - 1
		if i != last {
			e.moveSlot(active[last], i)
			active[i] = active[last]
		}
		active = active[:last]
	}
	return active
}

// gone retires s if its caller left.
func (e *Engine) gone(s *seq) bool {
	if s.ctx.Err() == nil {
		return false
	}
	s.finish = FinishCancelled
	e.retire(s)
	return true
}

// moveSlot moves s's KV to slot to (the GroupQueryAttention form): its
// positions, per layer and head.
func (e *Engine) moveSlot(s *seq, to int) {
	if e.shared == 0 || s.slot == to {
		s.slot = to
		return
	}
	for l := range e.layers {
		for k := range 2 {
			copyHeads(e.slotKV(l, k, to), e.shared*e.hd, e.slotKV(l, k, s.slot), e.shared*e.hd, e.heads, int64(s.length)*e.hd)
		}
	}
	s.slot = to
}

// slotKV is slot's buffer [kv_heads, shared, hd] of layer l's keys (k 0)
// or values (k 1), in the slab (the GroupQueryAttention form).
func (e *Engine) slotKV(l, k, slot int) []float32 {
	row := e.heads * e.shared * e.hd
	return e.slab[l][k][int64(slot)*row : int64(slot+1)*row]
}

// copyHeads copies n values of each of heads heads from src, whose heads
// start srcStride apart, into dst, whose heads start dstStride apart: the
// per-head copies between KV layouts of different lengths.
func copyHeads(dst []float32, dstStride int64, src []float32, srcStride int64, heads, n int64) {
	for h := range heads {
		copy(dst[h*dstStride:h*dstStride+n], src[h*srcStride:h*srcStride+n])
	}
}

// finished retires s if its last token ended it.
func (e *Engine) finished(s *seq) bool {
	switch {
	case len(s.out) > 0 && s.out[len(s.out)-1] == e.opt.EOS:
		s.finish = FinishStop
	case len(s.out) >= s.p.MaxTokens:
		s.finish = FinishLength
	default:
		return false
	}
	e.retire(s)
	return true
}

func (e *Engine) retire(s *seq) {
	e.mu.Lock()
	if s.held > 0 {
		e.admittedN--
	}
	e.reserved -= s.held
	s.held = 0
	e.mu.Unlock()
	e.remember(s)
	s.kv = nil
	s.done <- Result{Tokens: s.out, Finish: s.finish, PromptTokens: len(s.prompt), CachedTokens: s.cached}
	e.poke()
}

// prefill runs s's prompt alone, from the prefix cache's KV for its first
// tokens if the cache has them (else from an empty past), and takes its
// first token.
func (e *Engine) prefill(ctx context.Context, s *seq) error {
	if e.opt.Tracer != nil {
		_, span := e.opt.Tracer.Start(s.ctx, "sous.generate.prefill", trace.WithAttributes(attribute.Int("sous.prompt_tokens", len(s.prompt))))
		defer span.End()
	}
	past, pkv := e.lookup(s)
	ins := e.prefillInputs(s, past)
	if e.shared > 0 {
		return e.prefillShared(ctx, s, ins, past, pkv)
	}
	for l := range e.layers {
		for k := range 2 {
			t := model.Tensor{DType: model.FP32, Shape: []int64{1, e.heads, int64(past), e.hd}, F32: []float32{}}
			if past > 0 {
				t.F32 = pkv[l][k]
			}
			ins[e.past[l][k]] = t
		}
	}
	outs, err := e.m.RunWhole(ctx, ins)
	if err != nil {
		return err
	}
	s.kv = make([][2][]float32, e.layers)
	for l := range e.layers {
		for k := range 2 {
			s.kv[l][k] = outs[e.present[l][k]].F32
		}
	}
	s.length = len(s.prompt)
	e.emitLast(s, outs[e.logits])
	return nil
}

// prefillInputs lays out the prompt's tokens from past on: ids, positions,
// and the mask over the whole prompt; the KV inputs are left to the form.
func (e *Engine) prefillInputs(s *seq, past int) []model.Tensor {
	n := int64(len(s.prompt))
	ones, pos := make([]int64, n), make([]int64, n-int64(past))
	for i := range ones {
		ones[i] = 1
	}
	for i := range pos {
		pos[i] = int64(past + i)
	}
	ins := make([]model.Tensor, 3+2*e.layers)
	ins[e.ids] = model.Tensor{DType: model.INT64, Shape: []int64{1, int64(len(pos))}, I64: s.prompt[past:]}
	ins[e.mask] = model.Tensor{DType: model.INT64, Shape: []int64{1, n}, I64: ones}
	ins[e.pos] = model.Tensor{DType: model.INT64, Shape: []int64{1, int64(len(pos))}, I64: pos}
	return ins
}

// emitLast samples s's next token from the last row of a prefill's logits
// [1, S, vocab].
func (e *Engine) emitLast(s *seq, logits model.Tensor) {
	rows, v := int(logits.Shape[1]), int(logits.Shape[2])
	e.emit(s, logits.F32[(rows-1)*v:rows*v])
}

// lookup finds s's session in the prefix cache: how many of the prompt's
// tokens it already holds KV for (at least one token is left to prefill,
// for its logits), and that KV, per layer [heads, past, hd].
func (e *Engine) lookup(s *seq) (int, [][2][]float32) {
	if e.cache == nil || s.p.Session == "" {
		return 0, nil
	}
	c := e.cache.take(s.p.Session, s.p.Prev)
	if c == nil {
		return 0, nil
	}
	past := min(commonPrefix(c.ids, s.prompt), len(s.prompt)-1)
	if past <= 0 {
		return 0, nil
	}
	s.cached = past
	if past == len(c.ids) {
		return past, c.kv
	}
	kv := make([][2][]float32, e.layers)
	for l := range kv {
		for k := range 2 {
			kv[l][k] = headsPrefix(c.kv[l][k], e.heads, int64(len(c.ids)), int64(past), e.hd)
		}
	}
	return past, kv
}

// headsPrefix copies the first n of length positions of each head of kv
// [heads, length, hd].
func headsPrefix(kv []float32, heads, length, n, hd int64) []float32 {
	out := make([]float32, heads*n*hd)
	copyHeads(out, n*hd, kv, length*hd, heads, n*hd)
	return out
}

// remember keeps a finished sequence's KV in the prefix cache, for the
// session's next turn: the tokens fed (the prompt and all generated but
// the last) and their keys and values.
func (e *Engine) remember(s *seq) {
	if e.cache == nil || s.p.Session == "" || s.err != nil || s.length == 0 {
		return
	}
	n := len(s.prompt)
	ids := append(s.prompt[:n:n], s.out[:s.length-n]...)
	kv := s.kv
	if e.shared > 0 {
		kv = make([][2][]float32, e.layers)
		for l := range kv {
			for k := range 2 {
				kv[l][k] = headsPrefix(e.slotKV(l, k, s.slot), e.heads, e.shared, int64(s.length), e.hd)
			}
		}
	}
	if len(kv) != e.layers {
		return
	}
	e.cache.put(&prefix{session: s.p.Session, version: s.p.Next, ids: ids, kv: kv,
		bytes: int64(e.layers) * 2 * e.heads * int64(s.length) * e.hd * 4})
}

// CacheStats reports the prefix cache's counters (zero without one).
func (e *Engine) CacheStats() CacheStats {
	if e.cache == nil {
		return CacheStats{}
	}
	return e.cache.snapshot()
}

// prefillShared is prefill in the GroupQueryAttention form: the cached
// prefix's KV, if any, is copied into s's slot; the prompt's keys and
// values go straight into it.
func (e *Engine) prefillShared(ctx context.Context, s *seq, ins []model.Tensor, past int, pkv [][2][]float32) error {
	for l := range e.layers {
		for k := range 2 {
			slot := e.slotKV(l, k, s.slot)
			if past > 0 {
				copyHeads(slot, e.shared*e.hd, pkv[l][k], int64(past)*e.hd, e.heads, int64(past)*e.hd)
			}
			ins[e.past[l][k]] = model.Tensor{DType: model.FP32, Shape: []int64{1, e.heads, e.shared, e.hd}, F32: slot}
		}
	}
	return e.m.RunBound(ctx, ins, e.bound(1, int64(len(s.prompt)-past)), func(outs []model.Tensor) error {
		s.length = len(s.prompt)
		e.emitLast(s, outs[e.logits])
		return nil
	})
}

// bound binds each present output to its past input (the shared form:
// sharedOuts), and the logits [rows, seq, vocab] to the engine's buffer
// when the vocabulary's size is fixed.
func (e *Engine) bound(rows, seq int64) model.Bind {
	b := model.Bind{Shared: e.sharedOuts, Into: map[int]model.Tensor{}}
	if v := e.m.Outputs()[e.logits].Shape; len(v) == 3 && v[2] > 0 {
		n := rows * seq * v[2]
		if int64(cap(e.logitsBuf)) < n {
			e.logitsBuf = make([]float32, n)
		}
		b.Into[e.logits] = model.Tensor{DType: model.FP32, Shape: []int64{rows, seq, v[2]}, F32: e.logitsBuf[:n]}
	}
	return b
}

// stepShared is step in the GroupQueryAttention form: active sequence i
// is row and slot i; the mask is right-padded (row i's ones are its
// positions and the new one), which is what the graph turns into
// seqlens_k; the slab's first len(active) slots are past and present.
func (e *Engine) stepShared(ctx context.Context, active []*seq) error {
	b := int64(len(active))
	ins := e.stepInputs(active, int64(longest(active)), false)
	row := e.heads * e.shared * e.hd
	for l := range e.layers {
		for k := range 2 {
			ins[e.past[l][k]] = model.Tensor{DType: model.FP32, Shape: []int64{b, e.heads, e.shared, e.hd}, F32: e.slab[l][k][:b*row]}
		}
	}
	return e.m.RunBound(ctx, ins, e.bound(b, 1), func(outs []model.Tensor) error {
		logits := outs[e.logits]
		v := int(logits.Shape[2])
		for i, s := range active {
			s.length++
			e.emit(s, logits.F32[i*v:(i+1)*v])
		}
		return nil
	})
}

// step runs one decode call for every active sequence.
func (e *Engine) step(ctx context.Context, active []*seq) (err error) {
	if e.opt.Tracer != nil {
		links := make([]trace.Link, 0, len(active))
		for _, s := range active {
			if sc := trace.SpanContextFromContext(s.ctx); sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc})
			}
		}
		_, span := e.opt.Tracer.Start(context.Background(), "sous.generate.decode_step",
			trace.WithAttributes(attribute.Int("sous.batch_size", len(active)), attribute.Int("sous.past_tokens", longest(active))),
			trace.WithLinks(links...))
		defer span.End()
	}
	if e.shared > 0 {
		err = e.stepShared(ctx, active)
	} else {
		err = e.stepPast(ctx, active)
	}
	if err == nil && e.opt.OnStep != nil {
		e.opt.OnStep(len(active))
	}
	return err
}

// stepInputs lays out a decode step's ids, positions and mask [batch,
// past+1] for pasts up to p long: each row's ones are its positions and
// the new one, at the right end of the row (leftPad, Optimum's form,
// whose pasts are laid out left-padded) or at its start (the
// GroupQueryAttention form, where the ones' count is the row's length).
// The KV inputs are left to the form.
func (e *Engine) stepInputs(active []*seq, p int64, leftPad bool) []model.Tensor {
	b := int64(len(active))
	ids, pos := make([]int64, b), make([]int64, b)
	mask := make([]int64, b*(p+1))
	for i, s := range active {
		ids[i] = s.out[len(s.out)-1]
		pos[i] = int64(s.length)
		row := mask[int64(i)*(p+1) : int64(i+1)*(p+1)]
		if leftPad {
			row = row[p-int64(s.length):]
		}
		for j := range int64(s.length) + 1 {
			row[j] = 1
		}
	}
	ins := make([]model.Tensor, 3+2*e.layers)
	ins[e.ids] = model.Tensor{DType: model.INT64, Shape: []int64{b, 1}, I64: ids}
	ins[e.mask] = model.Tensor{DType: model.INT64, Shape: []int64{b, p + 1}, I64: mask}
	ins[e.pos] = model.Tensor{DType: model.INT64, Shape: []int64{b, 1}, I64: pos}
	return ins
}

// longest is the longest past among the active sequences.
func longest(active []*seq) int {
	n := 0
	for _, s := range active {
		n = max(n, s.length)
	}
	return n
}

// stepPast is step in Optimum's form.
func (e *Engine) stepPast(ctx context.Context, active []*seq) error {
	b := int64(len(active))
	p := int64(longest(active))
	ins := e.stepInputs(active, p, true)
	rowSize := e.heads * p * e.hd
	if len(e.pastBuf) != e.layers {
		e.pastBuf = make([][2][]float32, e.layers)
	}
	for l := range e.layers {
		for k := range 2 {
			// One buffer per layer and kind, reused step after step (the
			// loop is the only user; ONNX Runtime reads it during Run).
			if int64(cap(e.pastBuf[l][k])) < b*rowSize {
				e.pastBuf[l][k] = make([]float32, b*rowSize, 2*b*rowSize)
			}
			past := e.pastBuf[l][k][:b*rowSize]
			for i, s := range active {
				row, pad := past[int64(i)*rowSize:], p-int64(s.length)
				for h := range e.heads {
					clear(row[h*p*e.hd : h*p*e.hd+pad*e.hd])
				}
				copyHeads(row[pad*e.hd:], p*e.hd, s.kv[l][k], int64(s.length)*e.hd, e.heads, int64(s.length)*e.hd)
			}
			ins[e.past[l][k]] = model.Tensor{DType: model.FP32, Shape: []int64{b, e.heads, p, e.hd}, F32: past}
		}
	}
	// Presents [b, heads, p+1, hd] and logits go into the loop's own
	// buffers, not ONNX Runtime's (which would be copied out again).
	bind := e.bound(b, 1)
	if len(e.presentBuf) != e.layers {
		e.presentBuf = make([][2][]float32, e.layers)
	}
	n := b * e.heads * (p + 1) * e.hd
	for l := range e.layers {
		for k := range 2 {
			if int64(cap(e.presentBuf[l][k])) < n {
				e.presentBuf[l][k] = make([]float32, n, 2*n)
			}
			bind.Into[e.present[l][k]] = model.Tensor{DType: model.FP32, Shape: []int64{b, e.heads, p + 1, e.hd}, F32: e.presentBuf[l][k][:n]}
		}
	}
	return e.m.RunBound(ctx, ins, bind, func(outs []model.Tensor) error {
		e.takeStep(active, outs, p)
		return nil
	})
}

// takeStep copies each row's present (less its padding) into its
// sequence's KV and samples its next token.
func (e *Engine) takeStep(active []*seq, outs []model.Tensor, p int64) {
	outSize := e.heads * (p + 1) * e.hd
	for i, s := range active {
		pad := p - int64(s.length)
		n := int64(s.length) + 1
		for l := range e.layers {
			for k := range 2 {
				kv := make([]float32, e.heads*n*e.hd)
				copyHeads(kv, n*e.hd, outs[e.present[l][k]].F32[int64(i)*outSize+pad*e.hd:], (p+1)*e.hd, e.heads, n*e.hd)
				s.kv[l][k] = kv
			}
		}
		s.length++
		logits := outs[e.logits]
		v := int(logits.Shape[2])
		e.emit(s, logits.F32[i*v:(i+1)*v])
	}
}

// emit samples s's next token from logits and hands it over.
func (e *Engine) emit(s *seq, logits []float32) {
	t := sample(logits, s.p, s.rng)
	s.out = append(s.out, t)
	if s.onToken != nil {
		s.onToken(t)
	}
}

// sample picks a token: the most likely (temperature 0), else one drawn
// from the softmax at the temperature, restricted to the top_k most likely
// and to the smallest set whose probability reaches top_p.
func sample(logits []float32, p Params, rng *rand.Rand) int64 {
	if p.Temperature <= 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return int64(best)
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	if p.TopK > 0 && p.TopK < len(idx) {
		idx = idx[:p.TopK]
	}
	probs := make([]float64, len(idx))
	hi := float64(logits[idx[0]])
	var sum float64
	for i, j := range idx {
		probs[i] = math.Exp((float64(logits[j]) - hi) / p.Temperature)
		sum += probs[i]
	}
	if p.TopP > 0 && p.TopP < 1 {
		var acc float64
		for i := range probs {
			acc += probs[i] / sum
			if acc >= p.TopP {
				idx, probs = idx[:i+1], probs[:i+1]
				break
			}
		}
		sum = 0
		for _, q := range probs {
			sum += q
		}
	}
	r := rng.Float64() * sum
	for i, q := range probs {
		if r -= q; r <= 0 {
			return int64(idx[i])
		}
	}
	return int64(idx[len(idx)-1])
}

// String describes the engine, for logs.
func (e *Engine) String() string {
	parts := []string{e.m.Name(), strconv.Itoa(e.layers) + " layers", strconv.FormatInt(e.heads, 10) + " kv heads"}
	if e.shared > 0 {
		parts = append(parts, "GroupQueryAttention form, "+strconv.Itoa(e.slots)+" buffers of "+strconv.FormatInt(e.shared, 10)+" positions")
	}
	return strings.Join(parts, ", ")
}

// Active is the number of sequences admitted and not finished.
func (e *Engine) Active() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.admittedN
}

// KVUsage is the share of the KV budget admitted sequences reserve.
func (e *Engine) KVUsage() float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return float64(e.reserved) / float64(e.opt.KVTokens)
}

// Waiting is the number of sequences queued for admission.
func (e *Engine) Waiting() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.waiting)
}
