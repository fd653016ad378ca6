// Package turn runs conversation turns, whichever transport brought them
// (CloudEvents, plain JSON, pub/sub, chat completions): it knows no HTTP.
// A turn is decoded at the edge into a Request; Service.Do checks it, keeps
// each session's turns in arrival order, reads the session's transcript,
// answers a redelivered request from it, computes the turn (a Runner: the
// kind of model served, chosen once at start), appends the exchange, trims
// the transcript and saves it conditionally on the ETag read, redoing the
// turn on the newer transcript when another pod took the turn number
// first. That one path serves every kind of turn: batched ones (one state
// read, one model run and one state write per batch of turns) and
// generated ones (one sequence of the decode engine, which batches their
// steps itself). Errors are sentinels with a retry verdict (errors.go);
// status codes are the edge's.
package turn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/batching"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/telemetry"
	"github.com/sous-ai/sous/function/tokenizer"
)

// Request is one turn, however it arrived.
type Request struct {
	// Session names the conversation: 1-128 of A-Za-z0-9._:-. "" with
	// Stateless: no conversation (the store is not touched).
	Session   string
	Stateless bool
	// Event identifies the request for redelivery (a CloudEvent's source
	// and id, or a /turn id); "" gets a random key.
	Event string
	Text  string
	// Inputs are tensors (the Open Inference Protocol's), used when Text
	// is "" and HasInputs.
	Inputs    []model.Tensor
	HasInputs bool
	// Gen are generation settings, nil if none were given.
	Gen *GenParams
	// Messages, for a chat completion, are the request's messages: the
	// prompt is the stored transcript, then these (Text is the last user
	// one).
	Messages []prompt.Message
	// Raw, for a legacy completion, says Text is the whole prompt: encoded
	// as it is (special tokens written in it become their ids), without
	// the chat template. Stateless only.
	Raw bool
	// Choices is how many replies to generate (OpenAI's n; 0 or 1: one).
	// The first is the turn's.
	Choices int
	// OnText, if set, gets a generated reply's text as it grows (pieces
	// that are final), from the engine's loop: it must not block. With
	// tools the text is the content outside the calls, and OnToolCall
	// gets each call once complete (the same rules).
	OnText     func(string)
	OnToolCall func(prompt.ToolCall)

	// Set by Check.
	inputs []model.Tensor      // the model inputs of a batched turn
	enc    *tokenizer.Encoding // the text's encoding, a model directory's
	gen    *generateSettings   // a generated turn's settings
	saved  json.RawMessage     // the messages the transcript keeps beside Text
}

// Reply is a turn's answer: a reply event's data, and /turn's body.
type Reply struct {
	Session   string          `json:"session"`
	Turn      int             `json:"turn"`
	Output    json.RawMessage `json:"output"`
	Model     string          `json:"model"`
	BatchSize int             `json:"batch_size"`
	// Detail is the runner's detail (Computed.Detail); nil for a
	// redelivery answered from the transcript.
	Detail any `json:"-"`
}

// MaxText bounds a turn's text: the bound keeps stored transcripts small.
const MaxText = 8 << 10

var sessionID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// CheckSession refuses a session id outside 1-128 of A-Za-z0-9._:-.
func CheckSession(id string) error {
	if !sessionID.MatchString(id) {
		return BadRequest("session id %q: want 1-128 characters of A-Z a-z 0-9 . _ : -", truncate(id, 140))
	}
	return nil
}

func checkText(text string) error {
	if len(text) > MaxText {
		return BadRequest("text is %d bytes, the limit is %d", len(text), MaxText)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// maxConflicts bounds how often a turn is redone after losing an ETag race
// (each after a jittered backoff of up to 64 ms): enough for a session
// that several pods serve at once under load.
const maxConflicts = 32

// Job is one item of a batch: a turn, or a stateless call (Req.Stateless).
// Executors see jobs; wrap one with Params.WrapExec (tests inject faults).
type Job struct {
	Req *Request
	// Inputs are the model inputs of a batched item (its session's state,
	// and with context turns its encoding, are filled in once the session
	// is read).
	Inputs []model.Tensor
	// Session is the item's session as read (zero for a stateless call).
	Session state.Session
}

// Outcome is a job's result.
type Outcome struct {
	// Computed is what the runner made of the job.
	Computed
	// Batch is the size of the model run the job was part of.
	Batch int
	reply Reply
	err   error
	times spans
}

// Computed is a runner's result for one job.
type Computed struct {
	// Output is a turn's output (its JSON in the reply and the transcript).
	Output json.RawMessage
	// State is the session's recurrent state after the turn (stateful
	// models).
	State []float32
	// Tensors are a stateless tensor call's outputs.
	Tensors []model.Tensor
	// Value is a stateless text call's result (a model directory's task).
	Value tasks.Output
	// Detail is what the runner says beside the output for the transport
	// alone (a generated turn's *Generated), not kept in the transcript.
	Detail any
	// Err fails this job alone.
	Err error
}

// Executor runs one batch of jobs (batching's executor form).
type Executor = batching.Executor[*Job, Outcome]

// Runner computes turns for one kind of model. It is chosen once, at
// start (NewTensorRunner, NewTextRunner, NewGenerationRunner).
type Runner interface {
	// Check validates a request before it waits for anything and
	// prepares what Run needs. Its errors are the caller's
	// (ErrBadRequest, model.ErrInput).
	Check(req *Request) error
	// Run computes a batch of jobs whose sessions were read, filling
	// out[i] for jobs[i]; an error fails the whole batch.
	Run(ctx context.Context, jobs []*Job, out []Computed) error
	// Batched says whether jobs go through the ring batcher (one model
	// run per batch) or run one at a time (the decode engine batches
	// them itself).
	Batched() bool
	// Model is the served model's name.
	Model() string
}

// Params configure a Service.
type Params struct {
	Runner Runner
	Store  state.Store
	// History is how many turns a transcript keeps; SessionTTL the
	// sliding expiry of each save; StateTimeout bounds each state call.
	History      int
	SessionTTL   time.Duration
	StateTimeout time.Duration
	// Batching configures the ring batcher of a batched runner; Cost and
	// Padded set its cost per job (a model directory's padded tokens).
	Batching batching.Params
	Cost     func(*Job) int64
	Padded   bool
	Grouped  bool
	// Limit bounds the turns in progress (waiting for their session,
	// queued or running): beyond it a turn is refused at once.
	Limit int64
	// WrapExec, if set, wraps the batch executor (tests inject faults).
	WrapExec func(Executor) Executor
	Metrics  *telemetry.Metrics // nil: none
	Tracer   trace.Tracer
	Log      *slog.Logger
	Now      func() time.Time
}

// Service runs turns. Do may be called concurrently; Run runs its batcher.
type Service struct {
	p       Params
	runner  Runner
	batcher *batching.Batcher[*Job, Outcome] // nil for an unbatched runner
	locks   sessionLocks
	// turns counts turns in progress: waiting for their session, queued or
	// running.
	turns atomic.Int64
}

// New builds a Service around p.Runner.
func New(p Params) *Service {
	if p.Now == nil {
		p.Now = time.Now
	}
	s := &Service{p: p, runner: p.Runner}
	if p.Runner.Batched() {
		exec := Executor(s.execute)
		if p.WrapExec != nil {
			exec = p.WrapExec(exec)
		}
		opts := []batching.Option{batching.WithHooks(batching.Hooks{Batch: p.Metrics.Batch, Wait: p.Metrics.QueueWait})}
		if p.Cost != nil {
			opts = append(opts, batching.WithCost(p.Cost))
		}
		if p.Padded {
			opts = append(opts, batching.WithPadding(p.Grouped))
		}
		s.batcher = batching.New(p.Batching, exec, opts...)
	}
	return s
}

// Run runs the batcher until ctx ends, then drains it (every accepted turn
// completes or fails). Without a batcher it returns at once.
func (s *Service) Run(ctx context.Context) error {
	if s.batcher == nil {
		return nil
	}
	return s.batcher.Run(ctx)
}

// Queued is the number of jobs waiting in the batcher's ring.
func (s *Service) Queued() int {
	if s.batcher == nil {
		return 0
	}
	return s.batcher.Len()
}

// InProgress is the number of turns in progress.
func (s *Service) InProgress() int64 { return s.turns.Load() }

// Check validates a turn before it runs (a CloudEvents batch checks every
// event before running any).
func (s *Service) Check(req *Request) error {
	if !req.Stateless {
		if err := CheckSession(req.Session); err != nil {
			return err
		}
	}
	return s.runner.Check(req)
}

// Do checks and runs one turn.
func (s *Service) Do(ctx context.Context, req Request) (Reply, error) {
	if err := s.Check(&req); err != nil {
		return Reply{}, err
	}
	return s.Run1(ctx, req)
}

// Run1 runs a turn that Check accepted: in its session's order, redone
// after a lost ETag race on the session as it is now.
func (s *Service) Run1(ctx context.Context, req Request) (Reply, error) {
	if req.Event == "" {
		req.Event = keyOf(ctx)
	}
	if req.Event == "" {
		// Every turn carries a key, so that a redo after a save whose
		// outcome was unclear finds its own write instead of running twice.
		req.Event = "req#" + strconv.FormatUint(rand.Uint64(), 36)
	}
	release, err := s.admit(ctx, req)
	if err != nil {
		return Reply{}, err
	}
	defer release()
	for attempt := 0; ; attempt++ {
		queued := time.Now()
		job := &Job{Req: &req, Inputs: req.inputs}
		res, err := s.submit(ctx, job)
		if err != nil {
			return Reply{}, err
		}
		s.trace(ctx, queued, res)
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

type keyContext struct{}

// WithKey returns ctx carrying a request's key (an HTTP Idempotency-Key):
// the redelivery key of a turn run under it that names none of its own
// (a CloudEvent's source and id, a /turn id come first), so that the same
// request sent again, to this pod or another, is answered from the
// transcript instead of taking a second turn.
func WithKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, keyContext{}, key)
}

func keyOf(ctx context.Context) string {
	if k, ok := ctx.Value(keyContext{}).(string); ok && k != "" {
		return "key#" + k
	}
	return ""
}

// submit runs one job: through the batcher, or alone.
func (s *Service) submit(ctx context.Context, job *Job) (Outcome, error) {
	if s.batcher != nil {
		return s.batcher.Submit(ctx, job)
	}
	out := make([]Outcome, 1)
	if err := s.execute(ctx, []*Job{job}, out); err != nil {
		return Outcome{}, err
	}
	return out[0], nil
}

// admit counts a turn in progress and takes its session's turn lock
// (turns of one session run one at a time, in arrival order). A turn
// waiting behind its session's earlier turn holds a place as surely as one
// in the ring: both count, so that the limit bounds every waiting turn and
// a hot session is refused instead of growing a line.
func (s *Service) admit(ctx context.Context, req Request) (release func(), err error) {
	if s.turns.Add(1) > s.p.Limit {
		s.turns.Add(-1)
		return nil, batching.ErrFull
	}
	if req.Stateless {
		return func() { s.turns.Add(-1) }, nil
	}
	unlock, err := s.locks.lock(ctx, req.Session)
	if err != nil {
		s.turns.Add(-1)
		return nil, err
	}
	return func() { unlock(); s.turns.Add(-1) }, nil
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

// Infer runs a stateless tensor call (the Open Inference Protocol's):
// tensors in the model's input order, batched with every other call.
func (s *Service) Infer(ctx context.Context, inputs []model.Tensor) ([]model.Tensor, error) {
	req := Request{Stateless: true, Inputs: inputs, HasInputs: true}
	if err := s.runner.Check(&req); err != nil {
		return nil, err
	}
	res, err := s.submitStateless(ctx, &req)
	return res.Tensors, err
}

// InferText runs a stateless text call of a model directory: each text
// encoded and batched like a turn, each its task's result.
func (s *Service) InferText(ctx context.Context, text string) (tasks.Output, error) {
	req := Request{Stateless: true, Text: text}
	if err := s.runner.Check(&req); err != nil {
		return nil, err
	}
	res, err := s.submitStateless(ctx, &req)
	return res.Value, err
}

func (s *Service) submitStateless(ctx context.Context, req *Request) (Outcome, error) {
	res, err := s.submit(ctx, &Job{Req: req, Inputs: req.inputs})
	if err == nil {
		err = res.err
	}
	return res, err
}

// execute is the one transcript path, for a batch of jobs: their sessions
// read in one call, redeliveries answered from their transcripts, the
// runner's one run for the rest, the exchanges appended and the sessions
// written back in one call, conditionally on the ETags read. A job whose
// save lost its ETag race gets state.ErrConflict (Run1 redoes it).
func (s *Service) execute(ctx context.Context, in []*Job, out []Outcome) error {
	var turns []int
	var ids []string
	for i, j := range in {
		if !j.Req.Stateless {
			turns = append(turns, i)
			ids = append(ids, j.Req.Session)
		}
	}
	entries := make([]state.Entry, len(in))
	var sp spans
	if len(ids) > 0 {
		sp.getStart = time.Now()
		sctx, cancel := context.WithTimeout(ctx, s.p.StateTimeout)
		got, err := s.p.Store.GetBulk(sctx, ids)
		cancel()
		sp.getEnd = time.Now()
		s.p.Metrics.State("get", sp.getEnd.Sub(sp.getStart))
		for k, i := range turns {
			if err != nil {
				entries[i].Err = err
			} else {
				entries[i] = got[k]
			}
		}
	}

	// Which jobs need the runner: stateless calls, and turns whose session
	// was read and that are not redeliveries.
	var need []*Job
	var needIdx []int
	for i, j := range in {
		out[i].times = sp
		if !j.Req.Stateless {
			if e := entries[i].Err; e != nil {
				out[i].err = s.stateErr(ctx, "get", e)
				continue
			}
			if h := findEvent(entries[i].Session.History, j.Req.Event); h != nil {
				out[i].reply = Reply{Session: j.Req.Session, Turn: h.N, Output: h.Output, Model: s.runner.Model(), BatchSize: h.BatchSize}
				continue
			}
			j.Session = entries[i].Session
		}
		need = append(need, j)
		needIdx = append(needIdx, i)
	}
	if len(need) == 0 {
		return nil
	}
	computed := make([]Computed, len(need))
	sp.ran = time.Now()
	err := s.runner.Run(ctx, need, computed)
	sp.done = time.Now()
	if err != nil {
		return err
	}

	var saves []state.SaveItem
	var saved []int
	for k, i := range needIdx {
		j, c := in[i], computed[k]
		out[i].Computed, out[i].Batch = c, len(need)
		out[i].times.ran, out[i].times.done = sp.ran, sp.done
		if c.Err != nil {
			out[i].err = c.Err
			continue
		}
		if j.Req.Stateless {
			out[i].reply = Reply{Output: c.Output, Model: s.runner.Model(), BatchSize: len(need), Detail: c.Detail}
			continue
		}
		next := s.next(j.Session, j.Req, c, len(need))
		out[i].reply = Reply{Session: j.Req.Session, Turn: next.Turn, Output: c.Output, Model: s.runner.Model(), BatchSize: len(need), Detail: c.Detail}
		saves = append(saves, state.SaveItem{ID: j.Req.Session, Session: next, ETag: entries[i].ETag})
		saved = append(saved, i)
	}
	if len(saves) == 0 {
		return nil
	}
	saveStart := time.Now()
	sctx, cancel := context.WithTimeout(ctx, s.p.StateTimeout)
	errs := s.p.Store.SaveBulk(sctx, saves, s.p.SessionTTL)
	cancel()
	saveEnd := time.Now()
	s.p.Metrics.State("save", saveEnd.Sub(saveStart))
	for k, i := range saved {
		out[i].times.saveStart, out[i].times.saveEnd = saveStart, saveEnd
		if err := errs[k]; err != nil {
			out[i].reply = Reply{}
			if errors.Is(err, state.ErrConflict) {
				out[i].err = err
			} else {
				out[i].err = s.stateErr(ctx, "save", err)
			}
		}
	}
	return nil
}

// next is the session after a turn: its number taken, the exchange
// appended to a copy of the transcript, trimmed to History.
func (s *Service) next(sess state.Session, req *Request, c Computed, batch int) state.Session {
	next := state.Session{Version: 1, Turn: sess.Turn + 1, State: c.State}
	next.History = append(slices.Clone(sess.History), state.Turn{
		N: next.Turn, Event: req.Event, Text: req.Text, Messages: req.saved, Output: c.Output, BatchSize: batch, At: s.p.Now().UTC(),
	})
	if over := len(next.History) - s.p.History; over > 0 {
		next.History = next.History[over:]
	}
	return next
}

// transcriptVersion names a version of a session's transcript for the
// prefix cache: its turn number and the event of its last turn. Dapr's
// save does not return the new ETag, but the version a turn's exchange is
// saved as is known before saving (its number and event); another pod's
// turn changes it.
func transcriptVersion(turn int, lastEvent string) string {
	if lastEvent == "" {
		return fmt.Sprint(turn)
	}
	return fmt.Sprint(turn, "/", lastEvent)
}

func findEvent(history []state.Turn, event string) *state.Turn {
	for i := range history {
		if history[i].Event == event {
			return &history[i]
		}
	}
	return nil
}

// stateErr classifies a failed state call: the caller's own end, or the
// store's unavailability.
func (s *Service) stateErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.p.Log.Warn("state call failed", "op", op, "err", err.Error())
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, op, err)
}

// spans are a job's times in its batch: state read, run, state write.
type spans struct {
	getStart, getEnd   time.Time
	ran, done          time.Time
	saveStart, saveEnd time.Time
}

// trace records, after the fact, the turn's wait in the ring, the batch's
// state read, model run and state write as spans of the turn.
func (s *Service) trace(ctx context.Context, queued time.Time, res Outcome) {
	t := res.times
	span := func(name string, from, to time.Time, attrs ...attribute.KeyValue) {
		if from.IsZero() {
			return
		}
		_, sp := s.p.Tracer.Start(ctx, name, trace.WithTimestamp(from), trace.WithAttributes(attrs...))
		sp.End(trace.WithTimestamp(to))
	}
	first := t.ran
	if !t.getStart.IsZero() {
		first = t.getStart
	}
	if s.batcher != nil {
		span("sous.queue", queued, first)
	}
	span("sous.state.get", t.getStart, t.getEnd, attribute.Int("sous.batch_size", res.Batch))
	span("sous.state.save", t.saveStart, t.saveEnd, attribute.Int("sous.batch_size", res.Batch))
	if t.ran.IsZero() || s.batcher == nil {
		return // a generated turn's prefill and steps have spans of their own
	}
	span("sous.run", t.ran, t.done, attribute.Int("sous.batch_size", res.Batch), attribute.String("sous.model", s.runner.Model()))
}
