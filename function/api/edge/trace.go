package edge

import (
	"context"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/function/telemetry"
)

// StartTurn opens a turn's span under the caller's trace context, taken
// from the event's distributed-tracing extension (ev may be nil) or else
// the HTTP headers.
func StartTurn(ctx context.Context, tracer trace.Tracer, header http.Header, ev *event.Event) (context.Context, trace.Span) {
	carrier := propagation.MapCarrier{}
	if ev != nil {
		if tp, ok := ev.Extensions()["traceparent"].(string); ok {
			carrier["traceparent"] = tp
			if ts, ok := ev.Extensions()["tracestate"].(string); ok {
				carrier["tracestate"] = ts
			}
		}
	}
	if carrier["traceparent"] == "" && header != nil {
		carrier["traceparent"] = header.Get("traceparent")
		carrier["tracestate"] = header.Get("tracestate")
	}
	ctx = telemetry.Propagator.Extract(ctx, carrier)
	return tracer.Start(ctx, "sous.turn", trace.WithSpanKind(trace.SpanKindServer))
}

// Traceparent returns the W3C traceparent of ctx's span.
func Traceparent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	telemetry.Propagator.Inject(ctx, carrier)
	return carrier["traceparent"]
}

// SpanErr records a failed turn on its span.
func SpanErr(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}
