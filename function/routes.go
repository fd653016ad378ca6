package function

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/sous-ai/sous/function/model"
)

// CloudEvent types.
const (
	TypeTurn  = "ai.sous.turn"
	TypeReply = "ai.sous.turn.reply"
)

func (f *Function) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = f.httpError
	e.Use(f.measured)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		DisableStackAll: true,
		LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
			f.log.Error("panic in request", "route", c.Path(), "err", err.Error(), "stack", string(stack))
			return &statusError{http.StatusInternalServerError, "internal error"}
		},
	}))

	e.Use(f.daprToken)
	e.GET("/dapr/subscribe", f.handleSubscribe)

	work := e.Group("", f.admitted)
	work.POST("/events", f.handleDaprEvent)
	work.POST("/", f.handleCloudEvent)
	work.POST("/turn", f.handleTurn)
	work.POST("/v2/models/:name/infer", f.handleInfer)
	work.POST("/v1/chat/completions", f.handleChat)
	e.GET("/v1/models", f.handleModels)

	e.GET("/v2", f.handleServerMetadata)
	e.GET("/v2/models/:name", f.handleModelMetadata)
	e.GET("/v2/models/:name/ready", f.handleModelReady)
	e.GET("/v2/health/live", f.handleLive)
	e.GET("/v2/health/ready", f.handleReady)
	e.GET("/health/liveness", f.handleLive)
	e.GET("/health/readiness", f.handleReady)
	if f.metrics != nil {
		e.GET("/metrics", echo.WrapHandler(f.metrics.Handler()))
	}
	return e
}

// measured counts every answer by route and status, and times turns. It
// renders errors itself so that the status is known here.
func (f *Function) measured(next echo.HandlerFunc) echo.HandlerFunc {
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
		f.metrics.Request(route, code)
		if code == http.StatusOK && (route == "/" || route == "/turn") {
			f.metrics.Turn(time.Since(start))
		}
		return nil
	}
}

// admitted refuses work once draining has begun and counts the rest, so
// that a drain waits for every accepted turn.
func (f *Function) admitted(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// Work, not probes or scrapes, keeps a draining listener open.
		f.lastRequest.Store(time.Now().UnixNano())
		if !f.admit.enter() {
			return errShuttingDown
		}
		defer f.admit.leave()
		return next(c)
	}
}

// httpError renders every error as {"error": "..."} with its status; 503s
// carry Retry-After.
func (f *Function) httpError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var code int
	var msg, reason string
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code, msg = he.Code, fmt.Sprint(he.Message)
	} else {
		code, msg, reason = classify(err)
	}
	if code == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
		f.metrics.Rejected(reason)
	}
	// One line per failed request: never the body, never a header.
	level, detail := slog.LevelInfo, msg
	if code >= 500 {
		level, detail = slog.LevelWarn, err.Error() // the cause, for operators
	}
	session, _ := c.Get("session").(string)
	f.log.Log(c.Request().Context(), level, "request failed", "route", c.Path(), "session", session,
		"status", code, "reason", reason, "err", detail)
	if c.Request().Method == http.MethodHead {
		c.NoContent(code)
		return
	}
	c.JSON(code, map[string]string{"error": msg})
}

// readBody reads the request body up to the configured limit (413 beyond).
func (f *Function) readBody(c echo.Context) ([]byte, error) {
	r := c.Request()
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, f.cfg.MaxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, &statusError{http.StatusRequestEntityTooLarge, fmt.Sprintf("body over the limit of %d bytes", f.cfg.MaxBody)}
	}
	if err != nil {
		return nil, badRequest("reading body: %v", err)
	}
	return body, nil
}

func isJSON(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || mt == "text/json")
}

// turnBody is POST /turn's body and a turn event's data.
type turnBody struct {
	Session string        `json:"session"`
	ID      string        `json:"id,omitempty"`
	Text    *string       `json:"text"`
	Inputs  []oipTensorIn `json:"inputs"`
	genParams
}

func (b *turnBody) request() (turnRequest, error) {
	req := turnRequest{Session: b.Session}
	if b.genParams.any() {
		g := b.genParams
		req.gen = &g
	}
	if b.Text != nil {
		if strings.TrimSpace(*b.Text) == "" {
			return req, badRequest("text is empty")
		}
		req.Text = *b.Text
	}
	if b.Inputs != nil {
		ins, err := decodeInputs(b.Inputs)
		if err != nil {
			return req, err
		}
		req.Inputs, req.HasInputs = ins, true
	}
	return req, nil
}

// readJSON reads a JSON request body into v: 415 for another content
// type (route names the route in the message), 413 over the limit, 400 for
// bad JSON.
func (f *Function) readJSON(c echo.Context, route string, v any) error {
	if !isJSON(c.Request().Header.Get(echo.HeaderContentType)) {
		return &statusError{http.StatusUnsupportedMediaType, route + " takes application/json"}
	}
	body, err := f.readBody(c)
	if err != nil {
		return err
	}
	return decodeJSON(body, v)
}

func (f *Function) handleTurn(c echo.Context) error {
	var tb turnBody
	if err := f.readJSON(c, "POST /turn", &tb); err != nil {
		return err
	}
	req, err := tb.request()
	if err != nil {
		return err
	}
	if tb.ID != "" {
		req.Event = "turn#" + tb.ID
	}
	c.Set("session", req.Session)
	ctx, span := f.startTurn(c.Request().Context(), c.Request().Header, nil)
	defer span.End()
	if tb.Stream {
		return f.streamTurn(c, ctx, req)
	}
	reply, err := f.turn(ctx, req)
	if err != nil {
		spanErr(span, err)
		return err
	}
	c.Response().Header().Set("traceparent", traceparent(ctx))
	return c.JSON(http.StatusOK, reply)
}

func (f *Function) handleCloudEvent(c echo.Context) error {
	r := c.Request()
	body, err := f.readBody(c)
	if err != nil {
		return err
	}
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	ctx := r.Context()
	enc := msg.ReadEncoding()
	switch enc {
	case binding.EncodingUnknown:
		if r.Header.Get("ce-specversion") != "" {
			return badRequest("not a valid CloudEvent: unsupported ce-specversion %q", r.Header.Get("ce-specversion"))
		}
		return &statusError{http.StatusUnsupportedMediaType,
			"not a CloudEvent: send binary mode (ce-* headers) or Content-Type application/cloudevents+json or application/cloudevents-batch+json"}
	case binding.EncodingBatch:
		if !utf8.Valid(body) {
			return badRequest("body is not valid UTF-8")
		}
		events, err := binding.ToEvents(ctx, msg, msg.BodyReader)
		if err != nil {
			return badRequest("not a valid CloudEvents batch: %v", err)
		}
		replies, err := f.turnEvents(ctx, events)
		if err != nil {
			return err
		}
		out, err := json.Marshal(replies)
		if err != nil {
			return err
		}
		return c.Blob(http.StatusOK, event.ApplicationCloudEventsBatchJSON, out)
	}
	if enc == binding.EncodingStructured && !utf8.Valid(body) {
		return badRequest("body is not valid UTF-8")
	}
	ev, err := binding.ToEvent(ctx, msg)
	if err != nil {
		return badRequest("not a valid CloudEvent: %v", err)
	}
	req, err := f.eventRequest(ev, false)
	if err != nil {
		return err
	}
	c.Set("session", req.Session)
	ctx, span := f.startTurn(ctx, r.Header, ev)
	defer span.End()
	reply, err := f.turn(ctx, req)
	if err != nil {
		spanErr(span, err)
		return err
	}
	out := f.replyEvent(ctx, ev, reply)
	if enc == binding.EncodingStructured {
		ctx = binding.WithForceStructured(ctx)
	}
	// A 200 that carries an event is a reply: Knative routes it back to
	// the broker. Its type differs from the request's, so no trigger loop.
	return cehttp.WriteResponseWriter(ctx, binding.ToMessage(&out), http.StatusOK, c.Response())
}

// eventRequest validates a turn event and reads its data. anyType accepts
// events of other types (Dapr wraps a plain published payload in its own
// com.dapr.event.sent event).
func (f *Function) eventRequest(ev *event.Event, anyType bool) (turnRequest, error) {
	if err := ev.Validate(); err != nil {
		return turnRequest{}, badRequest("not a valid CloudEvent: %v", err)
	}
	if ev.Type() != TypeTurn && !anyType {
		return turnRequest{}, badRequest("event type %q: want %s", ev.Type(), TypeTurn)
	}
	if !isJSON(ev.DataContentType()) {
		return turnRequest{}, &statusError{http.StatusUnsupportedMediaType,
			fmt.Sprintf("event data content type %q: want application/json", ev.DataContentType())}
	}
	var tb turnBody
	if err := decodeJSON(ev.Data(), &tb); err != nil {
		return turnRequest{}, err
	}
	if tb.Session != "" && ev.Subject() != "" && tb.Session != ev.Subject() {
		return turnRequest{}, badRequest("subject %q and data session %q disagree", ev.Subject(), tb.Session)
	}
	if ev.Subject() != "" {
		tb.Session = ev.Subject()
	}
	if tb.Session == "" {
		return turnRequest{}, badRequest("no session: set the event's subject or data.session")
	}
	req, err := tb.request()
	if err != nil {
		return turnRequest{}, err
	}
	// A redelivered event (same source and id) is answered from the
	// transcript instead of taking a second turn.
	req.Event = ev.Source() + "#" + ev.ID()
	return req, nil
}

func (f *Function) replyEvent(ctx context.Context, req *event.Event, r Reply) event.Event {
	out := event.New()
	if tp := traceparent(ctx); tp != "" {
		out.SetExtension("traceparent", tp)
	}
	out.SetID(req.ID() + "/reply")
	out.SetSource("/sous/" + f.engine.Name())
	out.SetType(TypeReply)
	out.SetSubject(r.Session)
	out.SetTime(f.now())
	out.SetData(event.ApplicationJSON, r)
	return out
}

// turnEvents runs a batch of turn events: all are validated before any
// runs (one bad event fails the batch with 400, nothing run); events of one
// session run in batch order, sessions concurrently. If a turn fails the
// batch fails with that status; the turns that succeeded are in their
// transcripts, so a redelivery answers them without running them again.
func (f *Function) turnEvents(ctx context.Context, events []event.Event) ([]event.Event, error) {
	if len(events) == 0 {
		return nil, badRequest("empty CloudEvents batch")
	}
	reqs := make([]turnRequest, len(events))
	items := make([][]model.Tensor, len(events))
	bySession := map[string][]int{}
	var order []string
	for i := range events {
		req, err := f.eventRequest(&events[i], false)
		if err == nil {
			items[i], err = f.prepare(&req)
		}
		if err != nil {
			return nil, fmt.Errorf("event %d (id %q): %w", i, events[i].ID(), err)
		}
		reqs[i] = req
		if _, ok := bySession[req.Session]; !ok {
			order = append(order, req.Session)
		}
		bySession[req.Session] = append(bySession[req.Session], i)
	}

	replies := make([]event.Event, len(events))
	errs := make([]error, len(events))
	var wg sync.WaitGroup
	for _, s := range order {
		wg.Add(1)
		go func(idx []int) {
			defer wg.Done()
			for _, i := range idx {
				tctx, span := f.startTurn(ctx, nil, &events[i])
				r, err := f.runTurn(tctx, reqs[i], items[i])
				if err != nil {
					spanErr(span, err)
					span.End()
					errs[i] = err
					return // later turns of this session wait for the retry
				}
				replies[i] = f.replyEvent(tctx, &events[i], r)
				span.End()
			}
		}(bySession[s])
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("event %d (id %q): %w", i, events[i].ID(), err)
		}
	}
	return replies, nil
}

// daprToken requires APP_API_TOKEN, when set, of every request that comes
// from the sidecar: its subscription and delivery routes, and service
// invocations (which carry dapr-caller-app-id).
func (f *Function) daprToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if f.cfg.AppToken != "" {
			r := c.Request()
			fromDapr := r.URL.Path == "/events" || r.URL.Path == "/dapr/subscribe" || r.Header.Get("dapr-caller-app-id") != ""
			if fromDapr && subtle.ConstantTimeCompare([]byte(r.Header.Get("dapr-api-token")), []byte(f.cfg.AppToken)) != 1 {
				return &statusError{http.StatusUnauthorized, "missing or wrong dapr-api-token"}
			}
		}
		return next(c)
	}
}

type subscription struct {
	PubSubName string `json:"pubsubname"`
	Topic      string `json:"topic"`
	Route      string `json:"route"`
}

// handleSubscribe tells daprd which topic to deliver to POST /events.
func (f *Function) handleSubscribe(c echo.Context) error {
	return c.JSON(http.StatusOK, []subscription{{PubSubName: f.cfg.PubSub, Topic: f.cfg.Topic, Route: "/events"}})
}

// handleDaprEvent takes a pub/sub delivery and answers daprd's protocol:
// SUCCESS, RETRY for failures that may pass (5xx: overload, state store
// down, shutting down), DROP for input that will never succeed (4xx).
func (f *Function) handleDaprEvent(c echo.Context) error {
	err := f.daprEvent(c)
	if err == nil {
		return c.JSON(http.StatusOK, map[string]string{"status": "SUCCESS"})
	}
	code, msg, reason := classify(err)
	if code == http.StatusServiceUnavailable {
		f.metrics.Rejected(reason)
	}
	verdict := "RETRY"
	if code < 500 && code != http.StatusConflict {
		verdict = "DROP"
	}
	f.log.Warn("pub/sub delivery failed", "status", code, "verdict", verdict, "reason", reason, "err", err.Error())
	return c.JSON(http.StatusOK, map[string]string{"status": verdict, "error": msg})
}

func (f *Function) daprEvent(c echo.Context) error {
	r := c.Request()
	body, err := f.readBody(c)
	if err != nil {
		return err
	}
	if !utf8.Valid(body) {
		return badRequest("body is not valid UTF-8")
	}
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	if msg.ReadEncoding() == binding.EncodingUnknown {
		return &statusError{http.StatusUnsupportedMediaType, "want a CloudEvent (application/cloudevents+json)"}
	}
	ev, err := binding.ToEvent(r.Context(), msg)
	if err != nil {
		return badRequest("not a valid CloudEvent: %v", err)
	}
	req, err := f.eventRequest(ev, true)
	if err != nil {
		return err
	}
	ctx, span := f.startTurn(r.Context(), r.Header, ev)
	defer span.End()
	_, err = f.turn(ctx, req)
	spanErr(span, err)
	return err
}

func (f *Function) checkModel(c echo.Context) error {
	if name := c.Param("name"); name != f.engine.Name() {
		return &statusError{http.StatusNotFound, fmt.Sprintf("model %q not found; this server serves %q", name, f.engine.Name())}
	}
	return nil
}

func (f *Function) handleInfer(c echo.Context) error {
	if err := f.checkModel(c); err != nil {
		return err
	}
	var req oipRequest
	if err := f.readJSON(c, "infer", &req); err != nil {
		return err
	}
	if f.hf != nil && len(req.Inputs) == 1 && req.Inputs[0].Datatype == "BYTES" {
		return f.inferText(c, req)
	}
	ins, err := decodeInputs(req.Inputs)
	if err != nil {
		return err
	}
	item, err := f.engine.Order(ins)
	if err != nil {
		return err
	}
	if err := f.engine.Check(item); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, o := range req.Outputs {
		if !f.hasOutput(o.Name) {
			return badRequest("model %s has no output %q", f.engine.Name(), o.Name)
		}
		want[o.Name] = true
	}
	res, err := f.batcher.Submit(c.Request().Context(), job{inputs: item})
	if err == nil {
		err = res.err
	}
	if err != nil {
		return err
	}
	resp := oipResponse{ModelName: f.engine.Name(), ModelVersion: "1", ID: req.ID, Outputs: []oipTensorOut{}}
	for _, t := range res.outputs {
		if len(want) == 0 || want[t.Name] {
			resp.Outputs = append(resp.Outputs, oipOut(t))
		}
	}
	return c.JSON(http.StatusOK, resp)
}

func (f *Function) hasOutput(name string) bool {
	for _, o := range f.engine.Outputs() {
		if o.Name == name {
			return true
		}
	}
	return false
}

func (f *Function) handleServerMetadata(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"name": "sous", "version": Version, "extensions": []string{}})
}

type oipTensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func metas(infos []model.Info) []oipTensorMeta {
	out := make([]oipTensorMeta, len(infos))
	for i, in := range infos {
		out[i] = oipTensorMeta{in.Name, in.DType.String(), in.Shape}
	}
	return out
}

func (f *Function) handleModelMetadata(c echo.Context) error {
	if err := f.checkModel(c); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{
		"name":     f.engine.Name(),
		"versions": []string{"1"},
		"platform": "onnxruntime_onnx",
		"inputs":   metas(f.engine.Inputs()),
		"outputs":  metas(f.engine.Outputs()),
	})
}

func (f *Function) handleModelReady(c echo.Context) error {
	if err := f.checkModel(c); err != nil {
		return err
	}
	return f.handleReady(c)
}

func (f *Function) handleLive(c echo.Context) error { return c.NoContent(http.StatusOK) }

// handleReady answers 200 once the model is warm and the server runs, and
// 503 before that and while draining.
func (f *Function) handleReady(c echo.Context) error {
	if !f.ready.Load() || f.admit.draining() {
		return &statusError{http.StatusServiceUnavailable, "not ready"}
	}
	return c.NoContent(http.StatusOK)
}

// Version is sous's version, reported by GET /v2.
const Version = "0.1.0"
