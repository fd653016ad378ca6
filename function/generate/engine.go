// Package generate is the decode engine for decoder-only models: continuous
// batching of decode steps. New sequences wait in a bounded queue (the
// batching package's ring: a full queue refuses at once); each step of the
// engine's loop (Run) admits waiting sequences while the KV budget allows,
// prefills admitted prompts (from the prefix cache's KV when it has the
// session's) up to the step's prefill budget, runs ONE batched decode call
// for every active sequence, hands each its token, and retires the
// finished (end of sequence, a stop string, max tokens) and those whose
// caller left. Sequences join and leave between steps.
//
// Chunked prefill (Options.PrefillChunk): no model form takes rows of
// different lengths with a past in one call (GroupQueryAttention takes
// several new positions with a past only at batch 1), so a prompt cannot
// ride in the decode call. Instead each step spends at most PrefillChunk
// prompt tokens on prefill calls of their own, batch 1, oldest admitted
// prompt first (a prompt longer than the budget goes on from its KV at the
// next step), and then runs the decode call: a long prompt arriving delays
// each decode step by one chunk's prefill, never by its whole prefill.
//
// Where the KV lives is the model's form, one kvLayout each: Optimum's
// export (kv_past.go: past_key_values.{i}.key/value in, present.{i}.* out,
// one position longer) or ONNX Runtime GenAI's GroupQueryAttention form
// (kv_shared.go: one fixed buffer per sequence, written in place).
// sample.go picks tokens; detok.go turns them into text that streams
// without ever showing a stop string; prefix.go keeps recent sessions' KV.
package generate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/batching"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/model/half"
)

// Params are one generation's settings.
type Params struct {
	MaxTokens   int     // most tokens generated (default 64)
	Temperature float64 // 0: greedy
	TopK        int     // 0: all
	TopP        float64 // 0 or 1: all
	Seed        uint64  // for sampling; 0 picks one
	// FrequencyPenalty and PresencePenalty (-2 to 2, as OpenAI's) lower
	// the logit of each token already generated: by its count times the
	// first, and by the second once it has appeared.
	FrequencyPenalty, PresencePenalty float64
	// Logprobs asks for each generated token's log probability and
	// TopLogprobs (0-20) for that many of the most likely at each step:
	// log-softmax of the model's logits before penalties and temperature,
	// as vLLM reports them by default.
	Logprobs    bool
	TopLogprobs int
	// Constraint, if set, restricts the sequence's tokens (a grammar:
	// structured outputs); one per sequence, used by the engine's loop
	// alone. A constraint that is Done ends the sequence (finish "stop").
	Constraint Constraint
	// Stop strings end the generation where they first appear in its text
	// (finish "stop"); the text ends before it. Needs Options.Decoder.
	Stop []string
	// OnText, if set, gets the text as it grows, from the engine's loop
	// (it must not block): pieces of complete UTF-8 that never hold a stop
	// string or a piece of one, and that concatenate to Result.Text.
	OnText func(string)
	// Session names the conversation for the prefix cache ("": none).
	// Prev is the version of its transcript the prompt was built from,
	// Next the version this generation's exchange is saved as: the next
	// turn, built from Next, starts from this one's KV.
	Session, Prev, Next string
}

// Constraint restricts a sequence's tokens, as a grammar's matcher does:
// the engine samples first and checks the one token (Allowed); only on a
// rejection does it mask the logits (FillMask: a bitset over the
// vocabulary, bit i for id i) and sample again, then moves the constraint
// past the token taken (Accept).
type Constraint interface {
	Allowed(id int) bool
	FillMask(dst []uint64)
	Accept(id int) error
	Done() bool
}

// Finish reasons.
const (
	FinishStop      = "stop"      // the model's end-of-sequence token, or a stop string
	FinishLength    = "length"    // MaxTokens reached
	FinishCancelled = "cancelled" // the caller went away, or the engine stopped
)

// Result is a finished generation.
type Result struct {
	Tokens []int64 // as sampled, the end-of-sequence token included
	// Text is the reply's text (with Options.Decoder): the tokens decoded,
	// the end-of-sequence token left out, cut before a stop string.
	Text         string
	Finish       string
	PromptTokens int
	CachedTokens int // of the prompt's, those whose KV came from the prefix cache
	// Logprobs, with Params.Logprobs, are each generated token's (the
	// end-of-sequence token's too).
	Logprobs []Logprob
}

// Logprob is one generated token's log probability, and the most likely
// tokens' at its step.
type Logprob struct {
	ID      int64
	Logprob float32
	Top     []TokenLogprob
}

// TokenLogprob is a token's log probability at a step.
type TokenLogprob struct {
	ID      int64
	Logprob float32
}

// Errors callers act on.
var (
	// ErrTooLong: the prompt with MaxTokens cannot fit the KV budget even
	// alone.
	ErrTooLong = errors.New("generate: prompt and max_tokens exceed the KV budget")
	// ErrStopped: the engine's loop has ended.
	ErrStopped = errors.New("generate: engine stopped")
)

// Options configure an Engine.
type Options struct {
	// EOS are the end-of-sequence token ids (generation_config.json may
	// list several); none: generations end by length or stop strings.
	EOS      []int64
	MaxBatch int // most sequences in one decode step (default 32)
	// Queue bounds the sequences waiting for admission (default 1024):
	// beyond it Generate answers batching.ErrFull at once.
	Queue int
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
	// Decoder turns tokens into text, for Result.Text, Params.OnText and
	// stop strings (nil: no text).
	Decoder Decoder
	// LastPositionLogits says the model gives logits at the last
	// position of a call only (a graph derived so at load), whatever its
	// declared output shape.
	LastPositionLogits bool
	// PrefillChunk bounds the prompt tokens prefilled in one step of the
	// loop, between decode steps (0: each admitted prompt whole). A
	// prompt longer than it is prefilled over several steps.
	PrefillChunk int
	// OnStep, if set, is told each decode step's batch size.
	OnStep func(batch int)
	// Tracer, if set, gets a span per prefill (under the caller's span)
	// and per decode step (linked to every sequence in it).
	Tracer trace.Tracer
}

// Engine runs a decoder model's generations. Generate may be called
// concurrently; Run, once, runs the loop.
type Engine struct {
	m     *model.Engine
	opt   Options
	shape kvShape
	kv    kvLayout
	cache *prefixCache // nil: none
	// logitsBuf and logits16 take the logits of steps (FP32 or FP16, as
	// the model gives them), rows16 their rows as float32: the loop's own,
	// reused.
	logitsBuf []float32
	logits16  []uint16
	rows16    []float32
	// mask is a constrained sequence's mask, allowed and allowedLogits the
	// ids it allows and their logits: the loop's own, reused.
	mask          []uint64
	allowed       []int64
	allowedLogits []float32

	queue *batching.Queue[*seq]
	mu    sync.Mutex // guards reserved, admittedN
	// reserved is the KV positions admitted sequences reserve.
	reserved  int
	admittedN int // sequences admitted, not yet retired
	wake      chan struct{}
}

// kvShape is what the model's inputs and outputs say of its KV and where
// each tensor is.
type kvShape struct {
	layers    int
	heads, hd int64
	kv        model.DType // of the past inputs: FP32, FP16 or BF16
	// input and output indexes; pos and keep are -1 where the model has
	// no position_ids (ONNX Runtime GenAI's form: positions follow from
	// the mask) or no num_logits_to_keep.
	ids, mask, pos, keep int
	// lastOnly: the logits' seq dimension is fixed at 1, the graph
	// giving the last position's only (derived so at load).
	lastOnly bool
	inputs   int
	past     [][2]int // per layer: key, value input index
	logits   int
	present  [][2]int // per layer: key, value output index
}

// row is the bytes of one position of one head: hd elements.
func (sh kvShape) row() int64 {
	if sh.kv == model.FP32 {
		return sh.hd * 4
	}
	return sh.hd * 2
}

// tensor views b, KV bytes, as a tensor of the model's KV type.
func (sh kvShape) tensor(shape []int64, b []byte) model.Tensor {
	t := model.Tensor{DType: sh.kv, Shape: shape}
	if sh.kv == model.FP32 {
		t.F32 = []float32{}
		if len(b) > 0 {
			t.F32 = unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
		}
		return t
	}
	t.F16 = []uint16{}
	if len(b) > 0 {
		t.F16 = unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
	}
	return t
}

// seq is one generation, from Generate until it is retired.
type seq struct {
	ctx     context.Context
	prompt  []int64
	p       Params
	onToken func(int64)
	rng     *rand.Rand
	text    *detok // nil without a decoder
	out     []int64
	counts  map[int64]int // generated tokens' counts, with penalties
	stuck   bool          // its constraint refused the token taken
	// pick is the row's greedy token when it was found before emit
	// (picked): emitRows finds those of a step's rows on every core.
	pick   int64
	picked bool
	// siblings continue the same prompt (GenerateN): admitted with s, its
	// prefill's KV and logits copied to them.
	siblings []*seq
	lps      []Logprob
	kv       [][2][]byte // per layer: key, value, [heads, length, hd] (Optimum's form)
	length   int         // positions whose KV it holds
	done     chan Result
	err      error
	finish   string
	reserve  int // KV positions it needs: prompt + MaxTokens (a whole slot when shared)
	held     int // of them reserved in the engine (once admitted)
	slot     int // its slot in the slab (the GroupQueryAttention form)
	cached   int // prompt tokens whose KV came from the prefix cache
}

// New binds an Engine to a decoder model loaded with model.New.
func New(m *model.Engine, opt Options) (*Engine, error) {
	if opt.MaxBatch <= 0 {
		opt.MaxBatch = 32
	}
	if opt.KVTokens <= 0 {
		opt.KVTokens = 65536
	}
	if opt.Queue <= 0 {
		opt.Queue = 1024
	}
	sh, err := readShape(m)
	if err != nil {
		return nil, err
	}
	sh.lastOnly = sh.lastOnly || opt.LastPositionLogits
	e := &Engine{m: m, opt: opt, shape: sh, wake: make(chan struct{}, 1), queue: batching.NewQueue[*seq](opt.Queue)}
	if opt.PrefixCacheBytes > 0 {
		e.cache = newPrefixCache(opt.PrefixCacheBytes)
	}
	if opt.SharedKV > 0 {
		slots := min(opt.MaxBatch, opt.KVTokens/opt.SharedKV)
		if slots == 0 {
			return nil, fmt.Errorf("generate: model %s: a sequence's KV buffer is %d positions, more than SOUS_KV_TOKENS %d", m.Name(), opt.SharedKV, opt.KVTokens)
		}
		e.opt.MaxBatch = slots
		e.kv = newSharedKV(e, slots, int64(opt.SharedKV))
	} else {
		e.kv = &pastKV{e: e}
	}
	return e, nil
}

// readShape finds the decoder's inputs and outputs: Optimum's names, with
// fixed heads and head_dim.
func readShape(m *model.Engine) (kvShape, error) {
	sh := kvShape{ids: -1, mask: -1, pos: -1, keep: -1, logits: -1, inputs: len(m.Inputs())}
	idx := func(list []model.Info) map[string]int {
		out := map[string]int{}
		for i, in := range list {
			out[in.Name] = i
		}
		return out
	}
	ins, outs := idx(m.Inputs()), idx(m.Outputs())
	var ok bool
	if sh.ids, ok = ins["input_ids"]; !ok {
		return sh, fmt.Errorf("generate: model %s has no input_ids", m.Name())
	}
	if sh.mask, ok = ins["attention_mask"]; !ok {
		return sh, fmt.Errorf("generate: model %s has no attention_mask", m.Name())
	}
	if sh.logits, ok = outs["logits"]; !ok {
		return sh, fmt.Errorf("generate: model %s has no logits output", m.Name())
	}
	known := 2
	if i, ok := ins["position_ids"]; ok {
		sh.pos, known = i, known+1
	}
	if i, ok := ins["num_logits_to_keep"]; ok {
		// Fed 1: the logits of the last position only, the one sampled
		// (a prompt's other positions' logits are never read).
		sh.keep, known = i, known+1
	}
	for l := 0; ; l++ {
		k, okK := ins["past_key_values."+strconv.Itoa(l)+".key"]
		v, okV := ins["past_key_values."+strconv.Itoa(l)+".value"]
		pk, okPK := outs["present."+strconv.Itoa(l)+".key"]
		pv, okPV := outs["present."+strconv.Itoa(l)+".value"]
		if !okK || !okV || !okPK || !okPV {
			break
		}
		sh.past = append(sh.past, [2]int{k, v})
		sh.present = append(sh.present, [2]int{pk, pv})
	}
	sh.layers = len(sh.past)
	if sh.layers == 0 {
		return sh, fmt.Errorf("generate: model %s: no past_key_values.{i}.key/value inputs with present.{i}.key/value outputs", m.Name())
	}
	if n := known + 2*sh.layers; sh.inputs != n {
		var extra []string
		for name := range ins {
			if name != "input_ids" && name != "attention_mask" && name != "position_ids" && name != "num_logits_to_keep" && !strings.HasPrefix(name, "past_key_values.") {
				extra = append(extra, name)
			}
		}
		sort.Strings(extra)
		return sh, fmt.Errorf("generate: model %s: inputs %s are not served (a decoder takes input_ids, attention_mask, position_ids, num_logits_to_keep and past_key_values.{i}.key/value)", m.Name(), strings.Join(extra, ", "))
	}
	in := m.Inputs()[sh.past[0][0]]
	if len(in.Shape) != 4 || in.Shape[1] <= 0 || in.Shape[3] <= 0 {
		return sh, fmt.Errorf("generate: model %s: past keys have shape %v, want [batch, heads, past, head_dim] with fixed heads and head_dim", m.Name(), in.Shape)
	}
	sh.heads, sh.hd, sh.kv = in.Shape[1], in.Shape[3], in.DType
	switch sh.kv {
	case model.FP32, model.FP16, model.BF16:
	default:
		return sh, fmt.Errorf("generate: model %s: KV cache of type %s is not served (FP32, FP16, BF16)", m.Name(), sh.kv)
	}
	for l := range sh.layers {
		for k := range 2 {
			if p, o := m.Inputs()[sh.past[l][k]], m.Outputs()[sh.present[l][k]]; p.DType != sh.kv || o.DType != sh.kv {
				return sh, fmt.Errorf("generate: model %s: %s and %s are %s and %s, want both %s as the first layer's", m.Name(), p.Name, o.Name, p.DType, o.DType, sh.kv)
			}
		}
	}
	if lt := m.Outputs()[sh.logits]; len(lt.Shape) == 3 && lt.Shape[1] == 1 {
		sh.lastOnly = true
	}
	switch lt := m.Outputs()[sh.logits]; lt.DType {
	case model.FP32, model.FP16:
	default:
		return sh, fmt.Errorf("generate: model %s: logits of type %s are not served (FP32, FP16)", m.Name(), lt.DType)
	}
	return sh, nil
}

// Generate queues prompt, waits for its generation and returns it.
// onToken, if set, gets each token as it is made, in order, from the
// engine's loop (it must not block). A full queue answers batching.ErrFull
// at once. A caller whose ctx ends gets what was generated so far with
// FinishCancelled, and its sequence is freed at the next step.
func (e *Engine) Generate(ctx context.Context, prompt []int64, p Params, onToken func(int64)) (Result, error) {
	var each func(int, int64)
	if onToken != nil {
		each = func(_ int, t int64) { onToken(t) }
	}
	rs, err := e.GenerateN(ctx, prompt, []Params{p}, each)
	if len(rs) == 0 {
		return Result{}, err
	}
	return rs[0], err
}

// GenerateN is Generate for several continuations of one prompt (OpenAI's
// n), one per element of ps: they are admitted together, the prompt is
// prefilled once and its KV copied to each, and each samples on with its
// own settings (give each its own Seed). onToken gets each choice's index
// with its tokens. Only the first continuation leaves its KV in the
// prefix cache.
func (e *Engine) GenerateN(ctx context.Context, prompt []int64, ps []Params, onToken func(choice int, t int64)) ([]Result, error) {
	if len(prompt) == 0 || len(ps) == 0 {
		return nil, errors.New("generate: empty prompt")
	}
	group := make([]*seq, len(ps))
	for i, p := range ps {
		if p.MaxTokens <= 0 {
			p.MaxTokens = 64
		}
		if i > 0 {
			p.Session = ""
		}
		reserve, err := e.kv.reserve(len(prompt) + p.MaxTokens)
		if err != nil {
			return nil, err
		}
		seed := p.Seed
		if seed == 0 {
			seed = rand.Uint64()
		}
		s := &seq{ctx: ctx, prompt: prompt, p: p, rng: rand.New(rand.NewPCG(seed, seed>>1|1)),
			done: make(chan Result, 1), reserve: reserve}
		if onToken != nil {
			s.onToken = func(t int64) { onToken(i, t) }
		}
		if e.opt.Decoder != nil {
			s.text = newDetok(e.opt.Decoder, p.Stop)
		}
		group[i] = s
	}
	lead := group[0]
	lead.siblings = group[1:]
	if lead.groupReserve() > e.opt.KVTokens || len(group) > e.opt.MaxBatch {
		return nil, ErrTooLong
	}
	if err := e.queue.Push(ctx, lead); err != nil {
		if errors.Is(err, batching.ErrClosed) {
			err = ErrStopped
		}
		return nil, err
	}
	e.poke()
	rs := make([]Result, len(group))
	var err error
	for i, s := range group {
		select {
		case rs[i] = <-s.done:
		case <-ctx.Done():
			// The loop frees the sequences at its next step and says so.
			e.poke()
			rs[i] = <-s.done
		}
		if s.err != nil && err == nil {
			err = s.err
		}
	}
	return rs, err
}

// groupReserve is the KV positions s and its siblings reserve together.
func (s *seq) groupReserve() int {
	n := s.reserve
	for _, sib := range s.siblings {
		n += sib.reserve
	}
	return n
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run runs the engine's loop until ctx ends; then every active and waiting
// sequence finishes with FinishCancelled. Each turn of the loop is one
// step: admit, prefill (within the step's budget), run, hand out, retire.
func (e *Engine) Run(ctx context.Context) error {
	// active are the sequences decoding (active[i] in slot i); filling
	// the admitted groups whose prompts are being prefilled, oldest
	// first (leads: their siblings follow them). Only filling[0] is ever
	// part way through, in the slots just past the active ones.
	var active, filling []*seq
	defer func() {
		left := active
		for _, s := range append(filling, e.queue.Close()...) {
			left = append(append(left, s), s.siblings...)
		}
		for _, s := range left {
			s.finish = FinishCancelled
			e.retire(s)
		}
	}()
	for ctx.Err() == nil {
		// Admit: waiting sequences, oldest first, while the batch and
		// the KV budget allow.
		filling = append(filling, e.admit(len(active)+groups(filling))...)
		// Prefill, oldest first, at most PrefillChunk prompt tokens in
		// all; a group whose prompt is done has its first tokens and
		// joins the decoding.
		budget := e.opt.PrefillChunk
		if budget <= 0 {
			budget = math.MaxInt
		}
		for len(filling) > 0 && budget > 0 {
			s := filling[0]
			group := append([]*seq{s}, s.siblings...)
			if s.length == 0 {
				// Its first chunk: the slots past the active ones.
				for i, g := range group {
					g.slot = len(active) + i
				}
			}
			n, err := e.prefill(ctx, s, budget)
			budget -= n
			if err != nil {
				for _, g := range group {
					g.err = err
					e.retire(g)
				}
				filling = filling[1:]
				continue
			}
			if s.length < len(s.prompt) {
				break // the budget is spent; it goes on next step
			}
			filling = filling[1:]
			for _, g := range group {
				if e.finished(g) {
					continue
				}
				// A finished one's slot is taken by the next.
				e.kv.move(g, len(active))
				active = append(active, g)
			}
		}
		// Retire the sequences whose callers left.
		active = e.prune(active, e.gone)
		filling = e.dropGone(filling)
		if len(active) == 0 {
			if len(filling) == 0 && e.queue.Len() == 0 {
				select {
				case <-e.wake:
				case <-ctx.Done():
				}
			}
			continue
		}
		// Run one decode call for every active sequence; hand each its
		// token.
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
		// Retire the finished.
		active = e.prune(active, e.finished)
	}
	return nil
}

// groups is the sequences in groups, siblings included.
func groups(groups []*seq) int {
	n := 0
	for _, s := range groups {
		n += 1 + len(s.siblings)
	}
	return n
}

// dropGone retires the prefilling groups whose lead's caller left (the
// siblings share its caller), keeping the others in order.
func (e *Engine) dropGone(filling []*seq) []*seq {
	kept := filling[:0]
	for _, s := range filling {
		if s.ctx.Err() == nil {
			kept = append(kept, s)
			continue
		}
		for _, g := range append([]*seq{s}, s.siblings...) {
			g.finish = FinishCancelled
			e.retire(g)
		}
	}
	return kept
}

// admit takes the waiting sequences that fit beside n active ones: the
// batch's size and the KV budget, each reserving its positions. Those
// whose callers left while waiting are retired.
func (e *Engine) admit(n int) []*seq {
	e.mu.Lock()
	room := e.opt.MaxBatch - n
	taken, gone := e.queue.Take(room, func(s *seq) bool {
		if e.reserved+s.groupReserve() > e.opt.KVTokens || 1+len(s.siblings) > room {
			return false
		}
		room -= 1 + len(s.siblings)
		for _, g := range append([]*seq{s}, s.siblings...) {
			e.reserved += g.reserve
			e.admittedN++
			g.held = g.reserve
		}
		return true
	})
	e.mu.Unlock()
	for _, s := range gone {
		for _, g := range append([]*seq{s}, s.siblings...) {
			g.finish = FinishCancelled
			e.retire(g)
		}
	}
	return taken
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
			e.kv.move(active[last], i)
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

// finished retires s if its last token ended it: the end of sequence, a
// stop string in its text, or MaxTokens.
func (e *Engine) finished(s *seq) bool {
	switch {
	case len(s.out) > 0 && slices.Contains(e.opt.EOS, s.out[len(s.out)-1]):
		s.finish = FinishStop
	case s.text != nil && s.text.stopped():
		s.finish = FinishStop
	case s.p.Constraint != nil && (s.p.Constraint.Done() || s.stuck):
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
	r := Result{Tokens: s.out, Finish: s.finish, PromptTokens: len(s.prompt), CachedTokens: s.cached, Logprobs: s.lps}
	if s.text != nil {
		r.Text = s.text.flush(s.p.OnText)
	}
	s.done <- r
	e.poke()
}

// prefill runs the next chunk of s's prompt alone, at most budget tokens,
// from the prefix cache's KV for its first tokens if the cache has them
// (else from an empty past) or from the chunks before it, and hands out
// its first token once the prompt is done. It returns the tokens run.
func (e *Engine) prefill(ctx context.Context, s *seq, budget int) (int, error) {
	past, pkv := s.length, s.kv
	if past == 0 {
		past, pkv = e.lookup(s)
	}
	end := len(s.prompt)
	if budget < end-past {
		end = past + budget
	}
	if e.opt.Tracer != nil {
		_, span := e.opt.Tracer.Start(s.ctx, "sous.generate.prefill", trace.WithAttributes(attribute.Int("sous.prompt_tokens", len(s.prompt)),
			attribute.Int("sous.prefill_from", past), attribute.Int("sous.prefill_tokens", end-past)))
		defer span.End()
	}
	return end - past, e.kv.prefill(ctx, s, e.prefillInputs(s, past, end), past, end, pkv)
}

// prefillInputs lays out the prompt's tokens from past to end: ids,
// positions, and the mask over the first end positions; the KV inputs are
// left to the form.
func (e *Engine) prefillInputs(s *seq, past, end int) []model.Tensor {
	ones, pos := make([]int64, end), make([]int64, end-past)
	for i := range ones {
		ones[i] = 1
	}
	for i := range pos {
		pos[i] = int64(past + i)
	}
	sh := e.shape
	ins := make([]model.Tensor, sh.inputs)
	ins[sh.ids] = model.Tensor{DType: model.INT64, Shape: []int64{1, int64(len(pos))}, I64: s.prompt[past:end]}
	ins[sh.mask] = model.Tensor{DType: model.INT64, Shape: []int64{1, int64(end)}, I64: ones}
	e.optionalInputs(ins, []int64{1, int64(len(pos))}, pos)
	return ins
}

// step runs one decode call for every active sequence.
func (e *Engine) step(ctx context.Context, active []*seq) error {
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
	err := e.kv.step(ctx, active)
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
	sh := e.shape
	ins := make([]model.Tensor, sh.inputs)
	ins[sh.ids] = model.Tensor{DType: model.INT64, Shape: []int64{b, 1}, I64: ids}
	ins[sh.mask] = model.Tensor{DType: model.INT64, Shape: []int64{b, p + 1}, I64: mask}
	e.optionalInputs(ins, []int64{b, 1}, pos)
	return ins
}

// optionalInputs sets the inputs a model may lack: position_ids (shape,
// pos) and num_logits_to_keep (1: the last position's logits).
func (e *Engine) optionalInputs(ins []model.Tensor, shape, pos []int64) {
	if e.shape.pos >= 0 {
		ins[e.shape.pos] = model.Tensor{DType: model.INT64, Shape: shape, I64: pos}
	}
	if e.shape.keep >= 0 {
		ins[e.shape.keep] = model.Tensor{DType: model.INT64, Shape: []int64{}, I64: []int64{1}}
	}
}

// logitRows is how many positions' logits a call over n new positions
// gives: 1 with num_logits_to_keep or a graph giving the last position's
// only, else n.
func (e *Engine) logitRows(n int64) int64 {
	if e.shape.keep >= 0 || e.shape.lastOnly {
		return 1
	}
	return n
}

// bound binds outputs: each present to its past input where the form
// shares them (shared: nil for Optimum's), and the logits [rows, seq,
// vocab] to the engine's buffer when the vocabulary's size is fixed.
func (e *Engine) bound(shared map[int]int, rows, seq int64) model.Bind {
	b := model.Bind{Shared: shared, Into: map[int]model.Tensor{}}
	out := e.m.Outputs()[e.shape.logits]
	if v := out.Shape; len(v) == 3 && v[2] > 0 {
		n := rows * seq * v[2]
		t := model.Tensor{DType: out.DType, Shape: []int64{rows, seq, v[2]}}
		if out.DType == model.FP16 {
			if int64(cap(e.logits16)) < n {
				e.logits16 = make([]uint16, n)
			}
			t.F16 = e.logits16[:n]
		} else {
			if int64(cap(e.logitsBuf)) < n {
				e.logitsBuf = make([]float32, n)
			}
			t.F32 = e.logitsBuf[:n]
		}
		b.Into[e.shape.logits] = t
	}
	return b
}

// longest is the longest past among the active sequences.
func longest(active []*seq) int {
	n := 0
	for _, s := range active {
		n = max(n, s.length)
	}
	return n
}

// emitRows hands out each active sequence's token from its row of a
// decode step's logits [batch, 1, vocab].
func (e *Engine) emitRows(active []*seq, logits model.Tensor) {
	v := int(logits.Shape[2])
	e.greedyPicks(active, logits, v)
	for i, s := range active {
		e.emit(s, e.logitRow(logits, i, v))
	}
}

// greedyPicks finds the token of every greedy row of a step's logits
// (no temperature, no penalties: the row's argmax, what sample would
// take) on all cores at once. At a real vocabulary the scan is a large
// share of a batched step (151,669 logits a row at Qwen3's), and it runs
// while ONNX Runtime's threads wait for the next call, so one core would
// do it alone. FP32 logits only (FP16 rows are converted one at a time
// into the loop's buffer), and only for batches worth the goroutines.
func (e *Engine) greedyPicks(active []*seq, logits model.Tensor, v int) {
	workers := min(runtime.GOMAXPROCS(0), 4)
	if logits.DType != model.FP32 || len(active) < 8 || workers < 2 {
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(active); i += workers {
				if s := active[i]; s.greedy() {
					s.pick, s.picked = int64(argmax(logits.F32[i*v:(i+1)*v])), true
				}
			}
		}()
	}
	wg.Wait()
}

// greedy says s's token is its row's argmax: sample takes it at
// temperature 0, and no penalty changes the row first.
func (s *seq) greedy() bool {
	return s.p.Temperature <= 0 && s.p.FrequencyPenalty == 0 && s.p.PresencePenalty == 0
}

// logitRow is row i of logits as float32 (FP16 logits converted into the
// loop's buffer, which the next call reuses).
func (e *Engine) logitRow(logits model.Tensor, i, v int) []float32 {
	if logits.DType != model.FP16 {
		return logits.F32[i*v : (i+1)*v]
	}
	if cap(e.rows16) < v {
		e.rows16 = make([]float32, v)
	}
	row := e.rows16[:v]
	for j, h := range logits.F16[i*v : (i+1)*v] {
		row[j] = half.ToFloat32(h)
	}
	return row
}

// emitLast hands out s's token from the last row of a prefill's logits
// [1, S, vocab].
func (e *Engine) emitLast(s *seq, logits model.Tensor) {
	rows, v := int(logits.Shape[1]), int(logits.Shape[2])
	row := e.logitRow(logits, rows-1, v)
	// Siblings first: emit may change the row it samples from.
	for _, sib := range s.siblings {
		sib.length = s.length
		e.kv.fork(s, sib)
		e.emit(sib, slices.Clone(row))
	}
	e.emit(s, row)
}

// emit samples s's next token from logits (its row, which it may change)
// and hands it over: to onToken, and as text to OnText.
func (e *Engine) emit(s *seq, logits []float32) {
	var lse float64
	var top []TokenLogprob
	if s.p.Logprobs {
		lse, top = logSoftmaxTop(logits, s.p.TopLogprobs)
	}
	penalized := s.penalize(logits)
	var t int64
	if s.picked {
		t, s.picked = s.pick, false
	} else {
		t = sample(logits, s.p, s.rng)
	}
	if c := s.p.Constraint; c != nil {
		if !c.Allowed(int(t)) {
			// Masked only on a rejection: with the token it would have
			// drawn allowed, the draw is already one from the allowed set.
			if n := (len(logits) + 63) / 64; len(e.mask) < n {
				e.mask = make([]uint64, n)
			}
			c.FillMask(e.mask)
			// The draw again, over the allowed ids alone: the same token as
			// over logits with every other id at -inf (same order, same
			// sum, same random number), at the cost of the allowed ids
			// rather than the whole vocabulary, which at temperature > 0
			// is an exp per id.
			e.allowed, e.allowedLogits = e.allowed[:0], e.allowedLogits[:0]
			for w, word := range e.mask[:(len(logits)+63)/64] {
				for ; word != 0; word &= word - 1 {
					if id := w*64 + bits.TrailingZeros64(word); id < len(logits) {
						e.allowed = append(e.allowed, int64(id))
						e.allowedLogits = append(e.allowedLogits, logits[id])
					}
				}
			}
			if len(e.allowed) > 0 {
				t = e.allowed[sample(e.allowedLogits, s.p, s.rng)]
			}
		}
		if c.Accept(int(t)) != nil {
			// Nothing the grammar allows: the constraint cannot go on
			// (its Done ends the sequence at the finish check).
			s.stuck = true
		}
	}
	if s.p.Logprobs {
		raw := float64(logits[t]) + penalized(t)
		s.lps = append(s.lps, Logprob{ID: t, Logprob: float32(raw - lse), Top: top})
	}
	if s.counts != nil {
		s.counts[t]++
	}
	s.out = append(s.out, t)
	if s.onToken != nil {
		s.onToken(t)
	}
	if s.text != nil && !slices.Contains(e.opt.EOS, t) {
		s.text.add(t, s.p.OnText)
	}
}

// penalize lowers the logits of the tokens s has generated, as its
// penalties say, and returns how much each token's logit was lowered.
func (s *seq) penalize(logits []float32) func(int64) float64 {
	if s.p.FrequencyPenalty == 0 && s.p.PresencePenalty == 0 {
		return func(int64) float64 { return 0 }
	}
	if s.counts == nil {
		s.counts = map[int64]int{}
	}
	by := func(t int64) float64 {
		c := s.counts[t]
		if c == 0 {
			return 0
		}
		return float64(c)*s.p.FrequencyPenalty + s.p.PresencePenalty
	}
	for t := range s.counts {
		logits[t] -= float32(by(t))
	}
	return by
}

// logSoftmaxTop returns the log of the softmax's normaliser over logits
// and the n most likely tokens' log probabilities.
func logSoftmaxTop(logits []float32, n int) (float64, []TokenLogprob) {
	hi := float64(logits[argmax(logits)])
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - hi)
	}
	lse := hi + math.Log(sum)
	if n <= 0 {
		return lse, nil
	}
	top := make([]TokenLogprob, 0, n)
	for _, i := range topK(logits, min(n, len(logits))) {
		top = append(top, TokenLogprob{ID: int64(i), Logprob: float32(float64(logits[i]) - lse)})
	}
	return lse, top
}

// String describes the engine, for logs.
func (e *Engine) String() string {
	return fmt.Sprintf("%s, %d layers, %d kv heads, %s", e.m.Name(), e.shape.layers, e.shape.heads, e.kv)
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
func (e *Engine) Waiting() int { return e.queue.Len() }
