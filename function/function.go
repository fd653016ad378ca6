// Package function is sous's Knative function: the wiring only. New reads
// the model once and chooses what serves it (a turn runner, and for a
// decoder the decode engine), builds the state store, the turn service and
// the HTTP edge; Serve serves until its context ends, then drains.
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sous-ai/sous/batching"
	"github.com/sous-ai/sous/function/api"
	"github.com/sous-ai/sous/function/api/placement"
	"github.com/sous-ai/sous/function/config"
	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/generate"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/telemetry"
	"github.com/sous-ai/sous/function/toolcall"
	"github.com/sous-ai/sous/function/turn"
)

// Config is the validated configuration (package config reads it).
type Config = config.Config

// Executor runs one batch of turns; tests wrap it to inject faults.
type Executor = turn.Executor

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

// WithExecutorWrapper wraps the batch executor, e.g. to inject faults in
// tests.
func WithExecutorWrapper(w func(Executor) Executor) Option {
	return func(o *options) { o.wrapExec = w }
}

// Function serves one model. Create it with New, then call Serve.
type Function struct {
	cfg     Config
	log     *slog.Logger
	engine  *model.Engine
	turns   *turn.Service
	gen     *generate.Engine // a decoder's; nil otherwise
	echo    *echo.Echo
	now     func() time.Time
	metrics *telemetry.Metrics
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

// New loads and warms the model and builds the routes. The model is ready
// when New returns; Serve then serves it.
func New(cfg Config, opts ...Option) (_ *Function, err error) {
	o := options{logger: slog.Default(), now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	f := &Function{cfg: cfg, log: o.logger, now: o.now, started: o.now()}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	p := model.Params{Library: cfg.Library, Device: cfg.Device, Workers: cfg.Workers, Logger: o.logger}
	if p.Library == "" {
		p.Library = model.FindLibrary()
	}
	var dir *tasks.Model
	lastOnly := false // the decoder's graph was derived to give the last position's logits only
	path := cfg.Model
	if cfg.Model == demo.ChatName { // a folder named chat is ./chat
		// The bundled chat model: its directory written out for the
		// loaders, removed once they have read it.
		if path, err = demo.WriteChat(); err != nil {
			return nil, err
		}
		defer os.RemoveAll(filepath.Dir(path))
	}
	switch {
	case cfg.Model == "":
		p.Data, p.Name = demo.ONNX, demo.Name
	case tasks.IsDir(path):
		if dir, err = tasks.OpenVariant(path, cfg.Task, cfg.Aggregation, cfg.ModelDType, cfg.ModelFile); err != nil {
			return nil, err
		}
		o.logger.Info("model file", "file", dir.File, "dtype", dir.Variant.DType, "chosen_by", dir.Variant.Source)
		p.Model, p.Name = dir.File, dir.Name
		derived, why, err := tasks.LastPositionGraph(dir.File)
		switch {
		case err != nil:
			return nil, err
		case derived != nil:
			// One session, of the derived graph; external data is read
			// from beside the user's file, nothing written there.
			p.Data, p.ExternalFolder, lastOnly = derived, filepath.Dir(dir.File), true
			o.logger.Info("decoder: logits at the last position only (a Slice before the output projection, derived in memory)", "file", dir.File)
		case why != "":
			o.logger.Info("decoder runs as exported: its prefill computes logits at every prompt position", "file", dir.File, "reason", why)
		}
	default:
		p.Model = cfg.Model
	}
	if f.engine, err = model.New(p); err != nil {
		return nil, err
	}
	closers = append(closers, func() { f.engine.Close() })
	if dir != nil {
		if err := dir.Bind(f.engine.Inputs(), f.engine.Outputs()); err != nil {
			return nil, err
		}
		o.logger.Info("model directory", "model", dir.Name, "task", dir.Task, "max_length", dir.MaxLength,
			"labels", len(dir.Labels), "context_turns", cfg.ContextTurns)
	}
	if o.noTelemetry {
		o.tp = noop.NewTracerProvider()
	}
	if o.tp == nil {
		tp, shutdown, err := telemetry.NewTracerProvider(context.Background())
		if err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
		o.tp, f.stopTracing = tp, shutdown
	}
	tracer := telemetry.Tracer(o.tp)
	generates := dir != nil && dir.Task == tasks.TextGeneration
	if generates {
		chunk := cfg.PrefillChunk
		if chunk > 0 && dir.Variant.DynamicQuant {
			// One activation scale per call: a prompt prefilled in chunks
			// would not be the prompt prefilled whole.
			o.logger.Info("prefill chunks off: the graph quantizes activations per call (DynamicQuantizeLinear), so prompts are prefilled whole", "model", dir.File, "SOUS_PREFILL_CHUNK", chunk)
			chunk = 0
		}
		if f.gen, err = generate.New(f.engine, generate.Options{EOS: dir.EOS, MaxBatch: cfg.MaxBatch, Queue: cfg.Queue,
			KVTokens: cfg.KVTokens, SharedKV: dir.SharedKV, PrefixCacheBytes: cfg.PrefixCache, Decoder: dir.Tok,
			PrefillChunk: chunk, LastPositionLogits: lastOnly, Tracer: tracer}); err != nil {
			return nil, err
		}
		o.logger.Info("decode engine", "engine", f.gen.String(), "kv_tokens", cfg.KVTokens, "prefix_cache_bytes", cfg.PrefixCache, "prefill_chunk", chunk)
	}

	store := o.store
	if store == nil {
		if store, f.closeStore, err = openStore(cfg, o.logger); err != nil {
			return nil, err
		}
		if f.closeStore != nil {
			closers = append(closers, f.closeStore)
		}
	}
	if !cfg.BatchState {
		store = state.PerCall{Store: store}
	}
	if !o.noTelemetry {
		tp := telemetry.Params{Model: f.engine.Name(), Device: f.engine.Device(), QueueDepth: func() int { return f.turns.Queued() },
			Placement: cfg.Placement == "actors"}
		if f.gen != nil {
			tp.QueueDepth = f.gen.Waiting
			tp.ActiveSequences, tp.KVUsage = f.gen.Active, f.gen.KVUsage
			tp.PrefixCacheBytes = func() int64 { return f.gen.CacheStats().Bytes }
		}
		if f.metrics, err = telemetry.New(tp); err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
	}

	// The kind of model served is chosen here, once: one runner.
	slots := make(turn.Slots, cfg.Workers)
	var runner turn.Runner
	switch {
	case generates:
		runner = turn.NewGenerationRunner(f.engine, dir, f.gen, cfg.KVTokens, toolcall.Format(cfg.ToolParser), f.metrics)
	case dir != nil:
		runner = turn.NewTextRunner(f.engine, dir, cfg.ContextTurns, slots, f.metrics)
	default:
		runner = turn.NewTensorRunner(f.engine, slots, f.metrics)
	}
	executors := cfg.Workers
	if f.closeStore != nil {
		// A remote store: one more batch in flight than model slots, so
		// that its state calls overlap the model's run.
		executors++
	}
	tp := turn.Params{
		Runner: runner, Store: store, History: cfg.History, SessionTTL: cfg.SessionTTL, StateTimeout: cfg.StateTimeout,
		Batching: batching.Params{Capacity: cfg.Queue, MaxBatch: cfg.MaxBatch, MaxDelay: cfg.MaxDelay, Workers: executors,
			DrainTimeout: cfg.DrainTimeout},
		Limit:    int64(cfg.Queue + cfg.MaxBatch*executors),
		WrapExec: o.wrapExec, Metrics: f.metrics, Tracer: tracer, Log: o.logger, Now: o.now,
	}
	if dir != nil {
		// A batch of text costs its padded token count.
		tp.Batching.MaxCost = int64(cfg.MaxBatchTokens)
		tp.Cost, tp.Padded, tp.Grouped = turn.Cost, true, cfg.BatchOrder == "length"
	}
	f.turns = turn.New(tp)

	// A decoder's first call is its own warm-up: Warm's zero rows do not
	// fit its past/present shapes.
	if f.gen == nil {
		if err := f.engine.Warm(context.Background(), cfg.MaxBatch); err != nil {
			return nil, fmt.Errorf("model: warm-up: %w", err)
		}
	}
	var place *placement.Placement
	if cfg.Placement == "actors" {
		if !generates {
			return nil, fmt.Errorf("SOUS_PLACEMENT=actors: model %s does not generate (placement moves generation turns, whose KV a pod keeps)", f.engine.Name())
		}
		addr := cfg.PlacementAddress
		if addr == "" {
			addr = placement.HostAddress(cfg.Port)
		}
		if place, err = placement.New(placement.Params{ActorType: cfg.PlacementActor, Address: addr, Dapr: cfg.DaprHTTP,
			DaprToken: cfg.DaprToken, IdleTimeout: cfg.SessionTTL, MaxBody: cfg.MaxBody, Log: o.logger, Tracer: tracer,
			Metrics: f.metrics, Now: o.now}); err != nil {
			return nil, err
		}
		o.logger.Info("session placement: dapr actors", "actor_type", cfg.PlacementActor, "address", addr, "sidecar", cfg.DaprHTTP)
	}
	f.echo = api.New(api.Params{
		Turns: f.turns, Model: f.engine, Dir: dir, Generates: generates, Metrics: f.metrics, Tracer: tracer,
		Log: o.logger, Now: o.now, Started: f.started, MaxBody: cfg.MaxBody, MaxBatch: cfg.MaxBatch,
		PubSub: cfg.PubSub, Topic: cfg.Topic, AppToken: cfg.AppToken,
		Ready: func() bool { return f.ready.Load() && !f.admit.draining() },
		Enter: f.enter, Placement: place,
	})
	return f, nil
}

// openStore connects the state store the configuration names: Dapr's
// (waiting a bounded while for the sidecar, which starts beside us and
// may be slower), or the embedded memory store.
func openStore(cfg Config, log *slog.Logger) (state.Store, func(), error) {
	if cfg.State == "dapr" || (cfg.State == "auto" && cfg.DaprAvailable) {
		d, err := state.NewDapr(state.DaprParams{Address: cfg.DaprAddress, Store: cfg.StateStore, Token: cfg.DaprToken,
			Batch: state.BatchWrite(cfg.StateBulk)})
		if err != nil {
			return nil, nil, err
		}
		wctx, cancel := context.WithTimeout(context.Background(), cfg.DaprWait)
		err = d.Wait(wctx)
		cancel()
		if err != nil {
			d.Close()
			return nil, nil, fmt.Errorf("%w (DAPR_GRPC_PORT/DAPR_GRPC_ENDPOINT %s, SOUS_DAPR_WAIT %s)", err, cfg.DaprAddress, cfg.DaprWait)
		}
		log.Info("state store: dapr", "sidecar", cfg.DaprAddress, "store", cfg.StateStore)
		return d, d.Close, nil
	}
	log.Info("state store: embedded memory (sessions live in this process only)")
	return state.NewMemory(nil), nil, nil
}

// enter admits a work request unless draining has begun; work keeps a
// draining listener open.
func (f *Function) enter() (func(), bool) {
	f.lastRequest.Store(time.Now().UnixNano())
	if !f.admit.enter() {
		return nil, false
	}
	return f.admit.leave, true
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
	go func() { batcherDone <- f.turns.Run(batchCtx) }()
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
