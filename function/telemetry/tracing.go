package telemetry

import (
	"context"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Propagator reads and writes W3C trace context (traceparent, tracestate),
// the format of the CloudEvents distributed-tracing extension too.
var Propagator = propagation.TraceContext{}

// NewTracerProvider returns sous's tracer provider. When the standard
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variable
// names a collector, spans are recorded (following the caller's sampling
// decision, sampling roots) and exported over OTLP/HTTP; shutdown flushes
// them. Otherwise nothing is recorded: the no-op tracer passes the caller's
// trace context through, so a reply still carries the caller's trace, at
// no cost.
func NewTracerProvider(ctx context.Context) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, err
	}
	sdk := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("sous"))),
		sdktrace.WithBatcher(exp),
	)
	return sdk, sdk.Shutdown, nil
}

// Tracer is the tracer sous's spans come from.
func Tracer(tp trace.TracerProvider) trace.Tracer { return tp.Tracer("github.com/sous-ai/sous") }
