package function

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/batching"
	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/telemetry"
	"github.com/sous-ai/sous/function/tokenizer"
)

// turnRequest is one turn, however it arrived.
type turnRequest struct {
	Session string
	// Event identifies the request for redelivery (CloudEvent source and
	// id, or the /turn id); "" turns deduplication off.
	Event string
	Text  string
	// Inputs are OIP tensors, used when Text is "" and HasInputs.
	Inputs    []model.Tensor
	HasInputs bool
	// enc is the text's encoding, for a model directory's text turn.
	enc *tokenizer.Encoding
	// gen are generation settings (a decoder model's turn), if any.
	gen *genParams
	// messages, for a chat completion, are the request's messages: the
	// prompt is the transcript then these (Text is the last user one).
	messages []chatMessage
}

// Reply is a turn's answer: the reply event's data, and /turn's body.
type Reply struct {
	Session   string          `json:"session"`
	Turn      int             `json:"turn"`
	Output    json.RawMessage `json:"output"`
	Model     string          `json:"model"`
	BatchSize int             `json:"batch_size"`
}

var sessionID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// maxConflicts bounds how often a turn is redone after losing an ETag race
// (each after a jittered backoff of up to 64 ms): enough for a session
// that several pods serve at once under load.
const maxConflicts = 32

// turn runs one turn: it validates, takes the session's turn lock (turns of
// one session run one at a time, in arrival order, so never share a batch)
// and submits the turn to the batcher, whose executor reads the batch's
// sessions in one call, runs the model and writes the sessions back in one
// call, conditionally on the ETags read. A turn that lost an ETag race is
// redone on the session as it is now.
func (f *Function) turn(ctx context.Context, req turnRequest) (Reply, error) {
	item, err := f.prepare(&req)
	if err != nil {
		return Reply{}, err
	}
	return f.runTurn(ctx, req, item)
}

// prepare validates a turn before it runs: its session id and its model
// inputs (built with a zero state in the state slot).
func (f *Function) prepare(req *turnRequest) ([]model.Tensor, error) {
	if f.gen != nil {
		return nil, nil // generateTurn checks its turns
	}
	if req.gen != nil {
		return nil, badRequest("model %s does not generate: max_tokens, temperature, top_k, top_p, seed, stop and stream are for decoder models", f.engine.Name())
	}
	if err := checkSession(req.Session); err != nil {
		return nil, err
	}
	return f.buildInputs(req)
}

// runTurn runs a turn that prepare accepted, with the inputs it built.
func (f *Function) runTurn(ctx context.Context, req turnRequest, item []model.Tensor) (Reply, error) {
	if f.gen != nil {
		return f.generateTurn(ctx, req, nil)
	}
	if req.Event == "" {
		// Every turn carries a key, so that a redo after a save whose
		// outcome was unclear finds its own write instead of running twice.
		req.Event = "req#" + strconv.FormatUint(rand.Uint64(), 36)
	}

	release, err := f.admitTurn(ctx, req.Session)
	if err != nil {
		return Reply{}, err
	}
	defer release()

	for attempt := 0; ; attempt++ {
		queued := time.Now()
		res, err := f.batcher.Submit(ctx, job{session: req.Session, turn: &req, inputs: item})
		if err != nil {
			return Reply{}, err
		}
		f.traceBatch(ctx, queued, res)
		if errors.Is(res.err, state.ErrConflict) && attempt < maxConflicts {
			// Another pod took this turn number: redo the turn on the
			// session as it is now.
			if err := conflictBackoff(ctx, attempt); err != nil {
				return Reply{}, err
			}
			continue
		}
		if res.err != nil {
			return Reply{}, res.err
		}
		trace.SpanFromContext(ctx).SetAttributes(attribute.String("sous.session", req.Session), attribute.Int("sous.turn", res.reply.Turn))
		return res.reply, nil
	}
}

// admitTurn counts a turn in progress and takes its session's turn lock
// (turns of one session run one at a time, in arrival order). A turn
// waiting behind its session's earlier turn holds a place as surely as one
// in the ring: both count, so that SOUS_QUEUE bounds every waiting turn and
// a hot session answers 503 instead of growing a line.
func (f *Function) admitTurn(ctx context.Context, session string) (release func(), err error) {
	if f.turns.Add(1) > f.turnLimit {
		f.turns.Add(-1)
		return nil, batching.ErrFull
	}
	unlock, err := f.locks.lock(ctx, session)
	if err != nil {
		f.turns.Add(-1)
		return nil, err
	}
	return func() { unlock(); f.turns.Add(-1) }, nil
}

// conflictBackoff waits a jittered, growing while before a turn that lost
// an ETag race is redone.
func conflictBackoff(ctx context.Context, attempt int) error {
	select {
	case <-time.After(time.Duration(1+rand.IntN(1<<min(attempt, 6))) * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// executeTurns completes a batch's turns around the model run: one bulk
// read of their sessions before, one bulk write after. run executes the
// model on the items that need it (a redelivered turn is answered from its
// transcript instead).
func (f *Function) executeTurns(ctx context.Context, in []job, out []result, run func(need []int) ([][]model.Tensor, error)) error {
	var turns []int
	var ids []string
	for i, j := range in {
		if j.turn != nil {
			turns = append(turns, i)
			ids = append(ids, j.session)
		}
	}
	stateIn, stateOut, stateful := f.engine.State()
	entries := make([]state.Entry, len(in))
	var getStart, getEnd time.Time
	if len(ids) > 0 {
		getStart = time.Now()
		sctx, cancel := context.WithTimeout(ctx, f.cfg.StateTimeout)
		got, err := f.store.GetBulk(sctx, ids)
		cancel()
		getEnd = time.Now()
		f.metrics.State("get", getEnd.Sub(getStart))
		for k, i := range turns {
			if err != nil {
				entries[i].Err = err
			} else {
				entries[i] = got[k]
			}
		}
	}

	// Which items need the model: stateless calls, and turns whose session
	// was read and that are not redeliveries.
	var need []int
	for i, j := range in {
		if j.turn == nil {
			need = append(need, i)
			continue
		}
		if e := entries[i].Err; e != nil {
			out[i].err = f.stateErr(ctx, "get", e)
			continue
		}
		if h := findEvent(entries[i].Session.History, j.turn.Event); h != nil {
			out[i].reply = Reply{Session: j.session, Turn: h.N, Output: h.Output, Model: f.engine.Name(), BatchSize: h.BatchSize}
			continue
		}
		if stateful {
			j.inputs[stateIn] = f.stateTensor(entries[i].Session.State, stateIn)
		}
		if f.hf != nil && j.turn.enc != nil && f.cfg.ContextTurns > 0 {
			// Encoded again on every run: a redo after a conflict sees
			// the session's newer transcript.
			enc := f.hf.Encode(j.turn.Text, lastTexts(entries[i].Session.History, f.cfg.ContextTurns))
			j.turn.enc = &enc
			in[i].inputs = f.hf.Inputs(enc)
		}
		need = append(need, i)
	}
	if len(need) == 0 {
		return nil
	}
	ran := time.Now()
	res, err := run(need)
	done := time.Now()
	if err != nil {
		return err
	}

	var saves []state.SaveItem
	var saved []int
	for k, i := range need {
		out[i].outputs, out[i].batch, out[i].ran, out[i].done = res[k], len(need), ran, done
		out[i].getStart, out[i].getEnd = getStart, getEnd
		j := in[i]
		if j.turn == nil {
			continue
		}
		output, err := f.render(*j.turn, res[k])
		if err != nil {
			out[i].err = err
			continue
		}
		sess := entries[i].Session
		next := state.Session{Version: 1, Turn: sess.Turn + 1}
		if stateful {
			next.State = res[k][stateOut].F32
		}
		next.History = append(slices.Clone(sess.History), state.Turn{
			N: next.Turn, Event: j.turn.Event, Text: j.turn.Text, Output: output, BatchSize: len(need), At: f.now().UTC(),
		})
		if over := len(next.History) - f.cfg.History; over > 0 {
			next.History = next.History[over:]
		}
		out[i].reply = Reply{Session: j.session, Turn: next.Turn, Output: output, Model: f.engine.Name(), BatchSize: len(need)}
		saves = append(saves, state.SaveItem{ID: j.session, Session: next, ETag: entries[i].ETag})
		saved = append(saved, i)
	}
	if len(saves) == 0 {
		return nil
	}
	saveStart := time.Now()
	sctx, cancel := context.WithTimeout(ctx, f.cfg.StateTimeout)
	errs := f.store.SaveBulk(sctx, saves, f.cfg.SessionTTL)
	cancel()
	saveEnd := time.Now()
	f.metrics.State("save", saveEnd.Sub(saveStart))
	for k, i := range saved {
		out[i].saveStart, out[i].saveEnd = saveStart, saveEnd
		if err := errs[k]; err != nil {
			out[i].reply = Reply{}
			if errors.Is(err, state.ErrConflict) {
				out[i].err = err
			} else {
				out[i].err = f.stateErr(ctx, "save", err)
			}
		}
	}
	return nil
}

// lastTexts returns the texts of the last n turns of a transcript, oldest
// first.
func lastTexts(history []state.Turn, n int) []string {
	var out []string
	for _, h := range history[max(0, len(history)-n):] {
		if h.Text != "" {
			out = append(out, h.Text)
		}
	}
	return out
}

func findEvent(history []state.Turn, event string) *state.Turn {
	for i := range history {
		if history[i].Event == event {
			return &history[i]
		}
	}
	return nil
}

// buildInputs validates the request's model inputs, with a zero state in
// the state slot; the real state is put there once the session is read.
func (f *Function) buildInputs(req *turnRequest) ([]model.Tensor, error) {
	stateIn, _, stateful := f.engine.State()
	var item []model.Tensor
	switch {
	case req.Text != "" && req.HasInputs:
		return nil, badRequest("give either text or inputs, not both")
	case req.Text != "" && f.hf != nil:
		if err := checkText(req.Text); err != nil {
			return nil, err
		}
		// Encoded without context here (to check it and to cost it in the
		// batcher); with SOUS_CONTEXT_TURNS the executor encodes it again
		// with the session's earlier texts once it has read the session.
		enc := f.hf.Encode(req.Text, nil)
		req.enc = &enc
		item = f.hf.Inputs(enc)
	case req.Text != "":
		if f.text == nil {
			return nil, badRequest("model %s does not take text; send OIP inputs instead", f.engine.Name())
		}
		if err := checkText(req.Text); err != nil {
			return nil, err
		}
		if len(f.engine.Inputs()) != 2 || !stateful {
			return nil, badRequest("model %s takes more than text", f.engine.Name())
		}
		tokens := demo.Tokenize(req.Text)
		item = make([]model.Tensor, 2)
		item[f.text.tokens] = model.Tensor{Name: "tokens", DType: model.INT64, Shape: []int64{1, int64(len(tokens))}, I64: tokens}
	case req.HasInputs:
		if stateful {
			for _, t := range req.Inputs {
				if t.Name == f.engine.Inputs()[stateIn].Name {
					return nil, badRequest("input %q is carried by the session; do not send it", t.Name)
				}
			}
			req.Inputs = append(req.Inputs, model.Tensor{Name: f.engine.Inputs()[stateIn].Name})
		}
		var err error
		if item, err = f.engine.Order(req.Inputs); err != nil {
			return nil, err
		}
		if stateful && len(item) > 0 && len(item[0].Shape) > 0 && item[0].Shape[0] != 1 {
			return nil, badRequest("a turn is one row: input %q has %d", item[0].Name, item[0].Shape[0])
		}
	default:
		return nil, badRequest("the turn has no text and no inputs")
	}
	if stateful {
		item[stateIn] = f.stateTensor(nil, stateIn)
	}
	if err := f.engine.Check(item); err != nil {
		return nil, err
	}
	return item, nil
}

// stateTensor returns the state input for one row: the session's state, or
// zeros for a new session or one whose state no longer fits the model.
func (f *Function) stateTensor(s []float32, idx int) model.Tensor {
	info := f.engine.Inputs()[idx]
	width := int64(1)
	for _, d := range info.Shape[1:] {
		width *= max(d, 1)
	}
	if int64(len(s)) != width {
		s = make([]float32, width)
	}
	shape := slices.Clone(info.Shape)
	shape[0] = 1
	for i := range shape {
		shape[i] = max(shape[i], 1)
	}
	return model.Tensor{Name: info.Name, DType: model.FP32, Shape: shape, F32: s}
}

// render turns the model's outputs into the reply's output: the intent and
// its scores for text, OIP tensors (less the carried state) otherwise.
func (f *Function) render(req turnRequest, outs []model.Tensor) (json.RawMessage, error) {
	if req.Text != "" && f.hf != nil && req.enc != nil {
		return f.hf.Render(req.Text, *req.enc, outs)
	}
	if req.Text != "" {
		probs := outs[f.text.probs].F32
		best := 0
		scores := make(map[string]float32, len(probs))
		for i, p := range probs {
			if p > probs[best] {
				best = i
			}
			scores[f.label(i)] = p
		}
		return json.Marshal(struct {
			Intent string             `json:"intent"`
			Scores map[string]float32 `json:"scores"`
		}{f.label(best), scores})
	}
	_, stateOut, stateful := f.engine.State()
	var tensors []oipTensorOut
	for i, t := range outs {
		if stateful && i == stateOut {
			continue
		}
		tensors = append(tensors, oipOut(t))
	}
	return json.Marshal(struct {
		Outputs []oipTensorOut `json:"outputs"`
	}{tensors})
}

func (f *Function) label(i int) string {
	if i < len(f.text.labels) && f.text.labels[i] != "" {
		return f.text.labels[i]
	}
	return fmt.Sprintf("class_%d", i)
}

// traceBatch records, after the fact, the turn's wait in the ring, the
// batch's state read, model run and state write as spans of the turn.
func (f *Function) traceBatch(ctx context.Context, queued time.Time, res result) {
	span := func(name string, from, to time.Time, attrs ...attribute.KeyValue) {
		if from.IsZero() {
			return
		}
		_, s := f.tracer.Start(ctx, name, trace.WithTimestamp(from), trace.WithAttributes(attrs...))
		s.End(trace.WithTimestamp(to))
	}
	first := res.ran
	if !res.getStart.IsZero() {
		first = res.getStart
	}
	span("sous.queue", queued, first)
	span("sous.state.get", res.getStart, res.getEnd, attribute.Int("sous.batch_size", res.batch))
	span("sous.state.save", res.saveStart, res.saveEnd, attribute.Int("sous.batch_size", res.batch))
	if res.ran.IsZero() {
		return
	}
	_, run := f.tracer.Start(ctx, "sous.run", trace.WithTimestamp(res.ran),
		trace.WithAttributes(attribute.Int("sous.batch_size", res.batch), attribute.String("sous.model", f.engine.Name())))
	run.End(trace.WithTimestamp(res.done))
}

// startTurn opens a turn's span under the caller's trace context, taken
// from the event's distributed-tracing extension or else the HTTP headers.
func (f *Function) startTurn(ctx context.Context, header http.Header, ev *event.Event) (context.Context, trace.Span) {
	carrier := propagation.MapCarrier{}
	if ev != nil {
		if tp, ok := ev.Extensions()["traceparent"].(string); ok {
			carrier["traceparent"] = tp
			if ts, ok := ev.Extensions()["tracestate"].(string); ok {
				carrier["tracestate"] = ts
			}
		}
	}
	if carrier["traceparent"] == "" {
		carrier["traceparent"] = header.Get("traceparent")
		carrier["tracestate"] = header.Get("tracestate")
	}
	ctx = telemetry.Propagator.Extract(ctx, carrier)
	return f.tracer.Start(ctx, "sous.turn", trace.WithSpanKind(trace.SpanKindServer))
}

// traceparent returns the W3C traceparent of ctx's span.
func traceparent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	telemetry.Propagator.Inject(ctx, carrier)
	return carrier["traceparent"]
}

func spanErr(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// errStateUnavailable: the store did not answer in time or at all.
var errStateUnavailable = errors.New("state store unavailable")

// stateErr classifies a failed state call: the caller's own end, or the
// store's unavailability (503).
func (f *Function) stateErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	f.log.Warn("state call failed", "op", op, "err", err.Error())
	return fmt.Errorf("%w: %s: %v", errStateUnavailable, op, err)
}

// sessionLocks serialises the turns of each session in arrival order.
type sessionLocks struct {
	mu sync.Mutex // guards m
	m  map[string]*sessionQueue
}

type sessionQueue struct {
	waiters []chan struct{} // closed to hand over the turn, in arrival order
	refs    int             // holder plus waiters
}

// lock waits for the session's earlier turns; ctx ending gives up the place
// in line. The returned function hands the turn to the next in line.
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

// checkSession refuses a session id outside 1-128 of A-Za-z0-9._:-.
func checkSession(id string) error {
	if !sessionID.MatchString(id) {
		return badRequest("session id %q: want 1-128 characters of A-Z a-z 0-9 . _ : -", truncate(id, 140))
	}
	return nil
}

// checkText refuses a turn's text over MaxText.
func checkText(text string) error {
	if len(text) > MaxText {
		return badRequest("text is %d bytes, the limit is %d", len(text), MaxText)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
