// Package telemetry defines sous's OpenTelemetry metrics and serves them in
// the Prometheus exposition format.
package telemetry

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Rejection reasons; each is exported from start at 0.
var Reasons = []string{"queue_full", "shutting_down", "state_unavailable", "expired"}

// LatencyBuckets (seconds) span a sub-millisecond model call to a
// multi-second state outage: roughly 1-2.5-5 steps from 50µs to 10s.
var LatencyBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// PlacementOutcomes are where a placed turn ran (SOUS_PLACEMENT=actors);
// each is exported from start at 0 when placement is on:
//   - owner: here, this pod owning the session;
//   - relayed: on the owner, relayed there from here;
//   - received: here, relayed in by another pod;
//   - fallback: here without being the owner (no owner known, or every
//     relay failed before the owner answered): a cache miss, not a loss.
var PlacementOutcomes = []string{"owner", "relayed", "received", "fallback"}

// BatchBuckets are powers of two up to 1024 items.
var BatchBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}

// Metrics records sous's measurements. Methods are safe for concurrent use.
// A nil *Metrics records nothing.
type Metrics struct {
	handler   http.Handler
	provider  *sdkmetric.MeterProvider
	batchSize metric.Int64Histogram
	queueWait metric.Float64Histogram
	inference metric.Float64Histogram
	turn      metric.Float64Histogram
	state     metric.Float64Histogram
	requests  metric.Int64Counter
	rejected  metric.Int64Counter
	tokens    metric.Int64Counter
	ttft      metric.Float64Histogram
	tpot      metric.Float64Histogram
	generated metric.Int64Counter
	prompt    metric.Int64Counter
	promptSrc [2]metric.AddOption // cache, computed
	tokenKind [2]metric.AddOption // real, padding
	reasonSet map[string]metric.AddOption
	placed    metric.Int64Counter
	placedSet map[string]metric.AddOption
	lookup    metric.Float64Histogram
	relayFail metric.Int64Counter
	stateOps  map[string]metric.RecordOption
}

// Params names what the metrics describe.
type Params struct {
	Model, Device string
	// QueueDepth reports the number of queued items when scraped.
	QueueDepth func() int
	// Generation, for a decoder model: the sequences being generated and
	// the share of the KV budget they hold, when scraped.
	ActiveSequences func() int
	KVUsage         func() float64
	// PrefixCacheBytes reports the bytes of KV the prefix cache holds.
	PrefixCacheBytes func() int64
	// Placement: session placement is on, so its counters are exported
	// from start.
	Placement bool
}

// New creates the instruments on a registry of their own.
func New(p Params) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(), otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
	if err != nil {
		return nil, err
	}
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	meter := provider.Meter("sous")
	m := &Metrics{
		handler:   promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		provider:  provider,
		reasonSet: map[string]metric.AddOption{},
		placedSet: map[string]metric.AddOption{},
		stateOps:  map[string]metric.RecordOption{},
	}
	seconds := func(name, desc string) metric.Float64Histogram {
		h, e := meter.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(LatencyBuckets...))
		if e != nil && err == nil {
			err = e
		}
		return h
	}
	m.queueWait = seconds("sous_queue_wait_seconds", "Time a turn waited in the batcher's ring before its batch ran.")
	m.inference = seconds("sous_inference_duration_seconds", "Duration of one batched ONNX Runtime call.")
	m.turn = seconds("sous_turn_duration_seconds", "Duration of a turn, request in to reply out.")
	m.state = seconds("sous_state_duration_seconds", "Duration of one state store call, by op.")
	m.ttft = seconds("sous_time_to_first_token_seconds", "Generated turns: from the turn's arrival at the engine to its first token.")
	m.tpot = seconds("sous_time_per_output_token_seconds", "Generated turns: mean time between output tokens after the first.")
	if m.generated, err = meter.Int64Counter("sous_generated_tokens", metric.WithDescription("Tokens generated.")); err != nil {
		return nil, err
	}
	if m.prompt, err = meter.Int64Counter("sous_prompt_tokens", metric.WithDescription(
		"Prompt tokens of generated turns, by source: KV from the prefix cache, or computed (prefilled).")); err != nil {
		return nil, err
	}
	m.promptSrc[0] = metric.WithAttributeSet(attribute.NewSet(attribute.String("source", "cache")))
	m.promptSrc[1] = metric.WithAttributeSet(attribute.NewSet(attribute.String("source", "computed")))
	if p.PrefixCacheBytes != nil {
		if _, err = meter.Int64ObservableGauge("sous_prefix_cache_bytes", metric.WithDescription("Bytes of KV the prefix cache holds (SOUS_PREFIX_CACHE_BYTES bounds it)."),
			metric.WithUnit("By"), metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(p.PrefixCacheBytes())
				return nil
			})); err != nil {
			return nil, err
		}
	}
	if p.ActiveSequences != nil {
		if _, err = meter.Int64ObservableGauge("sous_active_sequences", metric.WithDescription("Sequences being generated (prefilled, not finished)."),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				o.Observe(int64(p.ActiveSequences()))
				return nil
			})); err != nil {
			return nil, err
		}
	}
	if p.KVUsage != nil {
		if _, err = meter.Float64ObservableGauge("sous_kv_cache_usage_ratio", metric.WithDescription("Share of the KV budget (SOUS_KV_TOKENS) reserved by admitted sequences."),
			metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
				o.Observe(p.KVUsage())
				return nil
			})); err != nil {
			return nil, err
		}
	}
	if m.batchSize, err = meter.Int64Histogram("sous_batch_size", metric.WithDescription("Items in one ONNX Runtime call."),
		metric.WithExplicitBucketBoundaries(BatchBuckets...)); err != nil {
		return nil, err
	}
	if m.requests, err = meter.Int64Counter("sous_requests", metric.WithDescription("Requests answered, by route and status code.")); err != nil {
		return nil, err
	}
	if m.rejected, err = meter.Int64Counter("sous_rejected", metric.WithDescription("Requests refused with 503, by reason.")); err != nil {
		return nil, err
	}
	if m.tokens, err = meter.Int64Counter("sous_batch_tokens", metric.WithDescription(
		"Token positions in text batches of a model directory, by kind: real tokens, or padding to the batch's longest.")); err != nil {
		return nil, err
	}
	m.tokenKind[0] = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "real")))
	m.tokenKind[1] = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", "padding")))
	if _, err = meter.Int64ObservableGauge("sous_queue_depth", metric.WithDescription("Turns queued in the batcher's ring."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if p.QueueDepth != nil {
				o.Observe(int64(p.QueueDepth()))
			}
			return nil
		})); err != nil {
		return nil, err
	}
	info := metric.WithAttributes(attribute.String("model", p.Model), attribute.String("device", p.Device))
	if _, err = meter.Int64ObservableGauge("sous_model_info", metric.WithDescription("The served model and its device; always 1."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(1, info)
			return nil
		})); err != nil {
		return nil, err
	}
	for _, r := range Reasons {
		m.reasonSet[r] = metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r)))
		m.rejected.Add(context.Background(), 0, m.reasonSet[r])
	}
	m.lookup = seconds("sous_placement_lookup_duration_seconds", "Owner lookups: one call of the session actor through the sidecar, by whether it answered.")
	if m.placed, err = meter.Int64Counter("sous_placement_turns", metric.WithDescription(
		"Placed turns, by outcome: owner (ran here, its owner), relayed (handed to its owner), received (relayed in), fallback (ran here, no owner reachable).")); err != nil {
		return nil, err
	}
	if m.relayFail, err = meter.Int64Counter("sous_placement_relay_failures", metric.WithDescription(
		"Relays that failed before the owner answered (owner gone, draining or unreachable); each is retried on the next owner or served here.")); err != nil {
		return nil, err
	}
	for _, o := range PlacementOutcomes {
		m.placedSet[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o)))
		if p.Placement {
			m.placed.Add(context.Background(), 0, m.placedSet[o])
		}
	}
	if p.Placement {
		m.relayFail.Add(context.Background(), 0)
	}
	for _, op := range []string{"get", "save"} {
		m.stateOps[op] = metric.WithAttributeSet(attribute.NewSet(attribute.String("op", op)))
	}
	return m, err
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Shutdown stops the meter provider.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.provider.Shutdown(ctx) }

// Batch records one executor call of n items.
func (m *Metrics) Batch(n int) {
	if m != nil {
		m.batchSize.Record(context.Background(), int64(n))
	}
}

// QueueWait records an item's time in the ring.
func (m *Metrics) QueueWait(d time.Duration) {
	if m != nil {
		m.queueWait.Record(context.Background(), d.Seconds())
	}
}

// Inference records one ONNX Runtime call.
func (m *Metrics) Inference(d time.Duration) {
	if m != nil {
		m.inference.Record(context.Background(), d.Seconds())
	}
}

// Turn records one turn's duration.
func (m *Metrics) Turn(d time.Duration) {
	if m != nil {
		m.turn.Record(context.Background(), d.Seconds())
	}
}

// State records one state call; op is get or save.
func (m *Metrics) State(op string, d time.Duration) {
	if m != nil {
		m.state.Record(context.Background(), d.Seconds(), m.stateOps[op])
	}
}

// Request counts one answered request.
func (m *Metrics) Request(route string, code int) {
	if m != nil {
		m.requests.Add(context.Background(), 1, metric.WithAttributes(
			attribute.String("route", route), attribute.String("code", strconv.Itoa(code))))
	}
}

// Tokens counts one text batch's real and padding token positions.
func (m *Metrics) Tokens(real, padding int64) {
	if m != nil {
		m.tokens.Add(context.Background(), real, m.tokenKind[0])
		m.tokens.Add(context.Background(), padding, m.tokenKind[1])
	}
}

// Generated records one generation: time to its first token, mean time
// per later token, the tokens made, and its prompt's tokens, cached of
// them from the prefix cache.
func (m *Metrics) Generated(ttft, tpot time.Duration, tokens, prompt, cached int) {
	if m == nil {
		return
	}
	ctx := context.Background()
	if tokens > 0 {
		m.ttft.Record(ctx, ttft.Seconds())
	}
	if tokens > 1 {
		m.tpot.Record(ctx, tpot.Seconds())
	}
	m.generated.Add(ctx, int64(tokens))
	m.prompt.Add(ctx, int64(cached), m.promptSrc[0])
	m.prompt.Add(ctx, int64(prompt-cached), m.promptSrc[1])
}

// Rejected counts one 503 by reason.
func (m *Metrics) Rejected(reason string) {
	if m == nil {
		return
	}
	if opt, ok := m.reasonSet[reason]; ok {
		m.rejected.Add(context.Background(), 1, opt)
	}
}

// Placed counts one placed turn by outcome (one of PlacementOutcomes).
func (m *Metrics) Placed(outcome string) {
	if m == nil {
		return
	}
	if opt, ok := m.placedSet[outcome]; ok {
		m.placed.Add(context.Background(), 1, opt)
	}
}

// PlacementLookup records one owner lookup and whether it got an answer.
func (m *Metrics) PlacementLookup(d time.Duration, answered bool) {
	if m != nil {
		m.lookup.Record(context.Background(), d.Seconds(), metric.WithAttributes(attribute.Bool("answered", answered)))
	}
}

// RelayFailed counts one relay that failed before its owner answered.
func (m *Metrics) RelayFailed() {
	if m != nil {
		m.relayFail.Add(context.Background(), 1)
	}
}
