// Package function is sous's Knative function: the echo routes, the
// CloudEvents handling and the turn pipeline that loads a session, runs the
// model through the batcher and saves the session again.
package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sous-ai/sous/batching"
	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/generate"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/telemetry"
)

// job is one turn's model input; result is its output and the size of the
// batch it ran in.
type job struct {
	session string       // "" for stateless OIP calls
	turn    *turnRequest // nil for stateless OIP calls
	inputs  []model.Tensor
}

// tokens is a job's sequence length: dimension 1 of its first input (the
// token ids of a model directory's text turn).
func (j job) tokens() int64 {
	if len(j.inputs) == 0 || len(j.inputs[0].Shape) < 2 {
		return 1
	}
	return j.inputs[0].Shape[1]
}

type result struct {
	outputs []model.Tensor
	batch   int
	// ran and done bound the batch's ONNX Runtime call; get and save the
	// batch's state calls: for traces.
	ran, done          time.Time
	getStart, getEnd   time.Time
	saveStart, saveEnd time.Time
	// A turn's outcome: its reply, or why it failed (ErrConflict: redo).
	reply Reply
	err   error
}

// Executor runs one batch of jobs; tests wrap it to inject faults.
type Executor = batching.Executor[job, result]

// Option sets an optional part of a Function.
type Option func(*options)

type options struct {
	store       state.Store
	logger      *slog.Logger
	wrapExec    func(Executor) Executor
	now         func() time.Time
	tp          trace.TracerProvider
	noTelemetry bool
}

// withoutTelemetry turns metrics and traces off; benchmarks use it to
// measure what telemetry costs.
func withoutTelemetry() Option { return func(o *options) { o.noTelemetry = true } }

// WithTracerProvider replaces the tracer provider (default: one that
// exports over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithStore replaces the state store chosen by the configuration.
func WithStore(s state.Store) Option { return func(o *options) { o.store = s } }

// WithLogger sets the logger; default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithExecutorWrapper wraps the model executor, e.g. to inject faults in
// tests.
func WithExecutorWrapper(w func(Executor) Executor) Option {
	return func(o *options) { o.wrapExec = w }
}

// Function serves one model. Create it with New, then call Serve.
type Function struct {
	cfg     Config
	log     *slog.Logger
	engine  *model.Engine
	batcher *batching.Batcher[job, result]
	store   state.Store
	locks   sessionLocks
	// turns counts turns in progress: waiting for their session, queued or
	// running. Beyond turnLimit a turn is refused like a full ring.
	turns     atomic.Int64
	turnLimit int64
	text      *textModel // nil if the model does not take text
	// hf, when SOUS_MODEL is a model directory, encodes text turns with the
	// model's tokenizer and shapes their outputs (text is then nil).
	hf *tasks.Model
	// gen, for a decoder model directory, generates replies.
	gen *generate.Engine
	// onInputs, set by tests, sees the input ids of each text turn of a
	// model directory as the model gets them.
	onInputs func(ids []int64)
	echo     *echo.Echo
	now      func() time.Time
	metrics  *telemetry.Metrics
	// modelSlots bounds concurrent ONNX Runtime calls to Workers.
	modelSlots chan struct{}
	tracer     trace.Tracer
	// stopTracing flushes and stops the tracer provider sous made.
	stopTracing func(context.Context) error
	// closeStore releases the store's connection, if it has one.
	closeStore func()

	ready atomic.Bool
	admit admission
	// lastRequest is when the latest request arrived (Unix ns): after
	// SIGTERM the listener stays open until requests stop coming.
	lastRequest atomic.Int64
	started     time.Time
}

// textModel is what the text pipeline needs of a model: its token input,
// its label names and its probability output.
type textModel struct {
	tokens int // index of the token input
	probs  int // index of the probability output
	labels []string
}

// New loads and warms the model and builds the routes. The model is ready
// when New returns; Serve then serves it.
func New(cfg Config, opts ...Option) (*Function, error) {
	o := options{logger: slog.Default(), now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	f := &Function{cfg: cfg, log: o.logger, now: o.now, started: o.now()}

	p := model.Params{Library: cfg.Library, Device: cfg.Device, Workers: cfg.Workers, Logger: o.logger}
	if p.Library == "" {
		p.Library = model.FindLibrary()
	}
	var err error
	dir := cfg.Model
	if cfg.Model == demo.ChatName { // a folder named chat is ./chat
		// The bundled chat model: its directory written out for the
		// loaders, removed once they have read it.
		if dir, err = demo.WriteChat(); err != nil {
			return nil, err
		}
		defer os.RemoveAll(filepath.Dir(dir))
	}
	switch {
	case cfg.Model == "":
		p.Data, p.Name = demo.ONNX, demo.Name
	case tasks.IsDir(dir):
		if f.hf, err = tasks.Open(dir, cfg.Task, cfg.Aggregation); err != nil {
			return nil, err
		}
		p.Model, p.Name = f.hf.File, f.hf.Name
	default:
		p.Model = cfg.Model
	}
	if f.engine, err = model.New(p); err != nil {
		return nil, err
	}
	if f.hf != nil {
		if err := f.hf.Bind(f.engine.Inputs(), f.engine.Outputs()); err != nil {
			f.engine.Close()
			return nil, err
		}
		o.logger.Info("model directory", "model", f.hf.Name, "task", f.hf.Task, "max_length", f.hf.MaxLength,
			"labels", len(f.hf.Labels), "context_turns", cfg.ContextTurns)
	} else {
		f.text = textModelOf(f.engine)
	}
	if o.noTelemetry {
		o.tp = noop.NewTracerProvider()
	}
	if o.tp == nil {
		tp, shutdown, err := telemetry.NewTracerProvider(context.Background())
		if err != nil {
			f.engine.Close()
			return nil, fmt.Errorf("tracing: %w", err)
		}
		o.tp, f.stopTracing = tp, shutdown
	}
	f.tracer = telemetry.Tracer(o.tp)
	if f.hf != nil && f.hf.Task == tasks.TextGeneration {
		if f.gen, err = generate.New(f.engine, generate.Options{EOS: f.hf.EOS, MaxBatch: cfg.MaxBatch, KVTokens: cfg.KVTokens, SharedKV: f.hf.SharedKV,
			PrefixCacheBytes: cfg.PrefixCache,
			Tracer:           f.tracer}); err != nil {
			f.engine.Close()
			return nil, err
		}
		o.logger.Info("decode engine", "engine", f.gen.String(), "kv_tokens", cfg.KVTokens, "prefix_cache_bytes", cfg.PrefixCache)
	}

	f.store = o.store
	if f.store == nil {
		switch {
		case cfg.State == "dapr" || (cfg.State == "auto" && cfg.DaprAvailable):
			d, err := state.NewDapr(state.DaprParams{Address: cfg.DaprAddress, Store: cfg.StateStore, Token: cfg.DaprToken, Batch: state.BatchWrite(cfg.StateBulk)})
			if err != nil {
				f.engine.Close()
				return nil, err
			}
			// Bounded wait: the sidecar starts beside us and may be slower.
			wctx, cancel := context.WithTimeout(context.Background(), cfg.DaprWait)
			err = d.Wait(wctx)
			cancel()
			if err != nil {
				d.Close()
				f.engine.Close()
				return nil, fmt.Errorf("%w (DAPR_GRPC_PORT/DAPR_GRPC_ENDPOINT %s, SOUS_DAPR_WAIT %s)", err, cfg.DaprAddress, cfg.DaprWait)
			}
			f.store, f.closeStore = d, d.Close
			o.logger.Info("state store: dapr", "sidecar", cfg.DaprAddress, "store", cfg.StateStore)
		default:
			f.store = state.NewMemory(nil)
			o.logger.Info("state store: embedded memory (sessions live in this process only)")
		}
	}

	if !cfg.BatchState {
		f.store = state.PerCall{Store: f.store}
	}
	exec := Executor(f.execute)
	if o.wrapExec != nil {
		exec = o.wrapExec(exec)
	}
	if !o.noTelemetry {
		tp := telemetry.Params{
			Model: f.engine.Name(), Device: f.engine.Device(),
			QueueDepth: func() int { return f.batcher.Len() },
		}
		if f.gen != nil {
			tp.QueueDepth = f.gen.Waiting
			tp.ActiveSequences, tp.KVUsage = f.gen.Active, f.gen.KVUsage
			tp.PrefixCacheBytes = func() int64 { return f.gen.CacheStats().Bytes }
		}
		f.metrics, err = telemetry.New(tp)
		if err != nil {
			f.engine.Close()
			return nil, fmt.Errorf("telemetry: %w", err)
		}
	}
	f.modelSlots = make(chan struct{}, cfg.Workers)
	executors := cfg.Workers
	if f.closeStore != nil {
		// A remote store: one more batch in flight than model slots, so
		// that its state calls overlap the model's run.
		executors++
	}
	f.turnLimit = int64(cfg.Queue + cfg.MaxBatch*executors)
	bp := batching.Params{
		Capacity:     cfg.Queue,
		MaxBatch:     cfg.MaxBatch,
		MaxDelay:     cfg.MaxDelay,
		Workers:      executors,
		DrainTimeout: cfg.DrainTimeout,
	}
	var bopts []batching.Option
	if f.hf != nil {
		// A batch of text costs its padded token count.
		bp.MaxCost = int64(cfg.MaxBatchTokens)
		bopts = append(bopts, batching.WithCost(func(j job) int64 { return j.tokens() }),
			batching.WithPadding(cfg.BatchOrder == "length"))
	}
	f.batcher = batching.New(bp, exec, append(bopts, batching.WithHooks(batching.Hooks{
		Batch: f.metrics.Batch,
		Wait:  f.metrics.QueueWait,
		// An expired item's request is counted once, as its handler
		// answers it (reason expired).
	}))...)

	// A decoder's first call is its own warm-up: Warm's zero rows do not
	// fit its past/present shapes.
	if f.gen == nil {
		if err := f.engine.Warm(context.Background(), cfg.MaxBatch); err != nil {
			f.engine.Close()
			return nil, fmt.Errorf("model: warm-up: %w", err)
		}
	}
	f.echo = f.routes()
	return f, nil
}

func textModelOf(e *model.Engine) *textModel {
	if e.Metadata("sous.tokenizer") != demo.Tokenizer {
		return nil
	}
	tm := &textModel{tokens: -1, probs: -1}
	for i, in := range e.Inputs() {
		if in.Name == "tokens" && in.DType == model.INT64 && len(in.Shape) == 2 {
			tm.tokens = i
		}
	}
	for i, out := range e.Outputs() {
		if out.Name == "probs" && out.DType == model.FP32 && len(out.Shape) == 2 {
			tm.probs = i
		}
	}
	if tm.tokens < 0 || tm.probs < 0 {
		return nil
	}
	tm.labels = strings.Split(e.Metadata("sous.labels"), ",")
	return tm
}

// execute is the batcher's executor: the batch's state in one read and
// one write, and one ONNX Runtime call (in one of Workers model slots, so
// that with a remote store one batch's state I/O overlaps another's run).
func (f *Function) execute(ctx context.Context, in []job, out []result) error {
	return f.executeTurns(ctx, in, out, func(need []int) ([][]model.Tensor, error) {
		items := make([][]model.Tensor, len(need))
		var real, longest int64
		for k, i := range need {
			items[k] = in[i].inputs
			if f.hf != nil {
				n := in[i].tokens()
				real, longest = real+n, max(longest, n)
				if f.onInputs != nil && in[i].turn != nil {
					f.onInputs(items[k][0].I64)
				}
			}
		}
		if f.hf != nil {
			f.metrics.Tokens(real, int64(len(need))*longest-real)
		}
		select {
		case f.modelSlots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-f.modelSlots }()
		start := time.Now()
		res, err := f.engine.Run(ctx, items)
		f.metrics.Inference(time.Since(start))
		return res, err
	})
}

// waitQuiet returns once no work request has arrived for DrainQuiet since
// the later of signalled (Unix ns) and the latest request, or at deadline.
func (f *Function) waitQuiet(signalled int64, deadline <-chan time.Time) {
	for {
		quiet := time.Duration(time.Now().UnixNano() - max(signalled, f.lastRequest.Load()))
		if quiet >= f.cfg.DrainQuiet {
			return
		}
		select {
		case <-time.After(f.cfg.DrainQuiet - quiet):
		case <-deadline:
			return
		}
	}
}

// Handler returns the HTTP handler serving every route.
func (f *Function) Handler() http.Handler { return f.echo }

// Serve serves on ln until ctx is done, then drains: new requests get 503,
// accepted turns complete (within Config.DrainTimeout), the batcher drains,
// and Serve returns nil.
func (f *Function) Serve(ctx context.Context, ln net.Listener) error {
	defer f.engine.Close()
	if f.closeStore != nil {
		defer f.closeStore()
	}
	if f.stopTracing != nil {
		defer f.stopTracing(context.Background())
	}
	batchCtx, stopBatcher := context.WithCancel(context.Background())
	batcherDone := make(chan error, 1)
	go func() { batcherDone <- f.batcher.Run(batchCtx) }()
	genDone := make(chan struct{})
	if f.gen != nil {
		go func() { f.gen.Run(batchCtx); close(genDone) }()
	} else {
		close(genDone)
	}

	srv := &http.Server{Handler: f.echo, ReadHeaderTimeout: 10 * time.Second}
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	f.ready.Store(true)
	f.log.Info("serving", "addr", ln.Addr().String(), "model", f.engine.Name(), "device", f.engine.Device(),
		"start_to_ready_ms", f.now().Sub(f.started).Milliseconds())

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveDone:
		f.log.Error("server stopped", "err", err)
	}

	// Drain: refuse new turns, let accepted ones finish, then close.
	f.ready.Store(false)
	f.log.Info("draining", "timeout", f.cfg.DrainTimeout.String())
	deadline := time.After(f.cfg.DrainTimeout)
	signalled := time.Now().UnixNano()
	select {
	case <-f.admit.close():
	case <-deadline:
		f.log.Warn("drain timeout: turns still running")
	}
	// Keep the listener open (new turns get 503 + Retry-After) until no
	// request has come for DrainQuiet since the signal: a proxy in front (Knative's
	// queue-proxy) may still forward a few after the signal, and a closed
	// listener would make those 502s instead of answers to retry.
	f.waitQuiet(signalled, deadline)
	// Every admitted turn has been answered; what is left are idle
	// connections and ones that never sent a request (Shutdown would wait
	// 5s for those), so close after a short grace.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if srv.Shutdown(shutdownCtx) != nil {
		srv.Close()
	}
	stopBatcher()
	<-batcherDone
	<-genDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	f.log.Info("stopped")
	return err
}

// admission counts requests in progress and, once closed, admits no more.
// The zero value admits.
type admission struct {
	mu     sync.Mutex // guards n, closed, zero
	n      int
	closed bool
	zero   chan struct{}
}

// enter admits a request unless draining has begun.
func (a *admission) enter() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	a.n++
	return true
}

func (a *admission) leave() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n--
	if a.closed && a.n == 0 {
		close(a.zero)
	}
}

// close stops admission and returns a channel closed once every admitted
// request has left.
func (a *admission) close() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.closed = true
		a.zero = make(chan struct{})
		if a.n == 0 {
			close(a.zero)
		}
	}
	return a.zero
}

func (a *admission) draining() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}
