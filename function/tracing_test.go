package function

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sous-ai/sous/internal/daprtest"
)

// A turn event carrying a traceparent (the CloudEvents distributed-tracing
// extension) is answered with a reply in the same trace, and the turn's
// spans are recorded under it.
func TestTraceContextFlowsThroughATurn(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	s := startServer(t, testConfig(t), WithTracerProvider(tp))

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	h := binaryHeaders("t1", "traced")
	h["ce-traceparent"] = "00-" + traceID + "-00f067aa0ba902b7-01"
	code, reply, body := s.post(t, "/", h, `{"text":"hello there"}`)
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	tp2 := reply.Get("ce-traceparent")
	if !strings.HasPrefix(tp2, "00-"+traceID+"-") || strings.Contains(tp2, "00f067aa0ba902b7") {
		t.Errorf("reply traceparent %q: want trace %s with sous's own span id", tp2, traceID)
	}

	// Structured mode: the extension is a JSON attribute.
	code, _, body = s.post(t, "/", map[string]string{"Content-Type": "application/cloudevents+json"},
		`{"specversion":"1.0","id":"t2","source":"/test","type":"ai.sous.turn","subject":"traced","traceparent":"00-`+traceID+`-00f067aa0ba902b7-01","data":{"text":"thanks"}}`)
	if code != http.StatusOK || !strings.Contains(string(body), `"traceparent":"00-`+traceID) {
		t.Errorf("structured reply lacks the trace: %d %s", code, body)
	}

	var names []string
	for _, span := range exp.GetSpans() {
		if span.SpanContext.TraceID().String() != traceID {
			continue
		}
		names = append(names, span.Name)
		if span.Name == "sous.run" {
			found := false
			for _, a := range span.Attributes {
				if a.Key == "sous.batch_size" && a.Value.AsInt64() >= 1 {
					found = true
				}
			}
			if !found {
				t.Errorf("sous.run span without sous.batch_size: %v", span.Attributes)
			}
		}
	}
	sort.Strings(names)
	want := "[sous.queue sous.queue sous.run sous.run sous.state.get sous.state.get sous.state.save sous.state.save sous.turn sous.turn]"
	if got := fmt.Sprint(names); got != want {
		t.Errorf("spans in the trace: %s, want %s", got, want)
	}
}

// Each failed request is one log line with its session, status and reason,
// and no request body.
func TestFailedRequestIsLoggedWithoutBody(t *testing.T) {
	var logs daprtest.LogBuffer
	s := startServer(t, testConfig(t), WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))), WithStore(downStore{}))
	code, _, _ := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"}, `{"session":"logged","text":"my secret words"}`)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", code)
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"request failed"`) {
			line = l
		}
	}
	for _, want := range []string{`"session":"logged"`, `"status":503`, `"reason":"state_unavailable"`, `"route":"/turn"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %s", line, want)
		}
	}
	if strings.Contains(logs.String(), "secret words") {
		t.Error("the request body was logged")
	}
}
