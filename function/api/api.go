// Package api is sous's HTTP edge: the echo router, its middleware (every
// answer counted by route and status, panics recovered, work refused once
// draining), the one error renderer (package edge: status codes live
// under this folder only), and the routes, one package per protocol:
// cloudevents (POST /), dapr (pub/sub and its token), oip (the Open
// Inference Protocol), openai (chat and legacy completions, embeddings),
// with POST /turn, the plain JSON form, here. Each decodes a request into
// a turn, hands it to the turn service and encodes the reply.
package api

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/function/api/cloudevents"
	"github.com/sous-ai/sous/function/api/dapr"
	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/api/oip"
	"github.com/sous-ai/sous/function/api/openai"
	"github.com/sous-ai/sous/function/api/placement"
	"github.com/sous-ai/sous/function/api/sse"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/telemetry"
	"github.com/sous-ai/sous/function/turn"
)

// Version is sous's version, reported by GET /v2.
const Version = "0.1.0"

// Params are what the edge serves and reports to.
type Params struct {
	Turns *turn.Service
	Model *model.Engine
	// Dir is the model directory served (nil for an .onnx file);
	// Generates says the model is a decoder.
	Dir       *tasks.Model
	Generates bool
	Metrics   *telemetry.Metrics // nil: none (and no /metrics)
	Tracer    trace.Tracer
	Log       *slog.Logger
	Now       func() time.Time
	Started   time.Time
	MaxBody   int64
	MaxBatch  int
	// PubSub, Topic and AppToken are Dapr's (see package dapr).
	PubSub, Topic, AppToken string
	// Ready reports readiness: the model warm, serving, not draining.
	Ready func() bool
	// Enter admits a work request unless draining has begun; leave ends
	// it. Work, not probes or scrapes, is admitted and counted.
	Enter func() (leave func(), ok bool)
	// Placement, if set, places the generation routes' turns on their
	// sessions' owners (SOUS_PLACEMENT=actors); nil serves every turn
	// where it lands.
	Placement *placement.Placement
}

// New builds the router.
func New(p Params) *echo.Echo {
	r := &edge.Renderer{Log: p.Log, Rejected: p.Metrics.Rejected}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = func(err error, c echo.Context) { r.Render(c, err) }
	e.Use(measured(p.Metrics))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			p.Log.Error("panic in request", "route", c.Path(), "err", err.Error(), "stack", string(stack))
			return &edge.Error{Code: http.StatusInternalServerError, Msg: "internal error"}
		},
	}))
	work := e.Group("", admitted(p.Enter), keyed)
	// The generation routes: placed on their sessions' owners when
	// placement is on (after admission: a draining pod refuses rather
	// than relays, and its drain waits for its relays).
	gen := work
	if p.Placement != nil {
		p.Placement.Register(e, work)
		gen = e.Group("", admitted(p.Enter), keyed, p.Placement.Middleware)
	}
	dapr.Register(e, gen, dapr.Params{Turns: p.Turns, Renderer: r, Tracer: p.Tracer, MaxBody: p.MaxBody,
		PubSub: p.PubSub, Topic: p.Topic, AppToken: p.AppToken})
	ce := cloudevents.New(cloudevents.Params{Turns: p.Turns, Model: p.Model.Name(), Tracer: p.Tracer, MaxBody: p.MaxBody, Now: p.Now})
	gen.POST("/", ce.Serve)
	t := &turnRoute{turns: p.Turns, tracer: p.Tracer, maxBody: p.MaxBody, generates: p.Generates, model: p.Model.Name()}
	gen.POST("/turn", t.serve)
	oip.Register(e, work, oip.Params{Turns: p.Turns, Model: p.Model, Dir: p.Dir, Version: Version,
		MaxBatch: p.MaxBatch, MaxBody: p.MaxBody, Ready: p.Ready})
	op := openai.Params{Turns: p.Turns, Model: p.Model.Name(), Generates: p.Generates,
		Renderer: r, Tracer: p.Tracer, MaxBody: p.MaxBody, Started: p.Started}
	if p.Generates {
		op.Tokens = func(id int64) []byte { return p.Dir.Tok.AppendDecoded(nil, id) }
		op.EOS = p.Dir.EOS
	}
	if p.Turns.Embeds() {
		op.Embedder, op.MaxBatch = p.Turns, p.MaxBatch
	}
	// Routes without a session (completions, embeddings) pass the
	// placement middleware untouched.
	openai.Register(e, gen, op)
	ready := func(c echo.Context) error {
		if !p.Ready() {
			return &edge.Error{Code: http.StatusServiceUnavailable, Msg: "not ready"}
		}
		return c.NoContent(http.StatusOK)
	}
	e.GET("/health/liveness", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.GET("/health/readiness", ready)
	if p.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(p.Metrics.Handler()))
	}
	return e
}

// measured counts every answer by route and status, and times turns. It
// renders errors itself so that the status is known here.
func measured(m *telemetry.Metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			if err := next(c); err != nil {
				c.Error(err)
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			code := c.Response().Status
			m.Request(route, code)
			if code == http.StatusOK && (route == "/" || route == "/turn") {
				m.Turn(time.Since(start))
			}
			return nil
		}
	}
}

// admitted refuses work once draining has begun and counts the rest, so
// that a drain waits for every accepted request.
func admitted(enter func() (func(), bool)) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			leave, ok := enter()
			if !ok {
				return turn.ErrShuttingDown
			}
			defer leave()
			return next(c)
		}
	}
}

// keyed makes a request's Idempotency-Key its turns' redelivery key
// (where they name none of their own): the same request sent again, to
// any pod, is answered from the transcript instead of taking a second
// turn.
func keyed(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		k := r.Header.Get(placement.HeaderKey)
		if k == "" {
			return next(c)
		}
		if len(k) > 256 || strings.IndexFunc(k, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			return turn.BadRequest("%s: want 1-256 printable ASCII characters", placement.HeaderKey)
		}
		c.SetRequest(r.WithContext(turn.WithKey(r.Context(), k)))
		return next(c)
	}
}

// turnRoute serves POST /turn: the turn as plain JSON (Knative URL
// callers, Dapr service invocation), or with "stream": true as server-sent
// events.
type turnRoute struct {
	turns     *turn.Service
	tracer    trace.Tracer
	maxBody   int64
	generates bool
	model     string
}

func (t *turnRoute) serve(c echo.Context) error {
	var tb cloudevents.TurnBody
	if err := edge.ReadJSON(c, "POST /turn", t.maxBody, &tb); err != nil {
		return err
	}
	req, err := tb.Request()
	if err != nil {
		return err
	}
	if tb.ID != "" {
		req.Event = "turn#" + tb.ID
	}
	c.Set("session", req.Session)
	ctx, span := edge.StartTurn(c.Request().Context(), t.tracer, c.Request().Header, nil)
	defer span.End()
	if tb.Stream {
		return t.stream(c, ctx, req)
	}
	reply, err := t.turns.Do(ctx, req)
	if err != nil {
		edge.SpanErr(span, err)
		return err
	}
	c.Response().Header().Set("traceparent", edge.Traceparent(ctx))
	return c.JSON(http.StatusOK, reply)
}

// stream answers a streamed /turn: a "token" event per piece of text as it
// is generated ({"text": "..."}), then one "done" event carrying the same
// JSON a plain /turn answers. An error before the first event is an
// ordinary error answer; after it, an "error" event ({"error": "..."}).
func (t *turnRoute) stream(c echo.Context, ctx context.Context, req turn.Request) error {
	if !t.generates {
		return turn.BadRequest("stream: model %s does not generate", t.model)
	}
	s := sse.New(c)
	event := func(name string, v any) {
		b, _ := json.Marshal(v)
		s.Event(name, b)
	}
	q := sse.NewQueue(func(p string) { event("token", map[string]string{"text": p}) })
	req.OnText = q.Push
	reply, err := t.turns.Do(ctx, req)
	q.Close()
	if err != nil {
		if !s.Started() {
			return err
		}
		_, msg, _ := edge.Status(err)
		event("error", map[string]string{"error": msg})
		return nil
	}
	event("done", reply)
	return nil
}
