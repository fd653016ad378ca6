// Package cloudevents serves turns as CloudEvents over HTTP (POST /): an
// event of type ai.sous.turn in binary, structured or batched mode,
// answered with a reply event (ai.sous.turn.reply) in the same mode, so a
// Knative Broker routes it on. The turn's data is the JSON that POST /turn
// takes too (TurnBody).
package cloudevents

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/api/oip"
	"github.com/sous-ai/sous/function/turn"
)

// CloudEvent types.
const (
	TypeTurn  = "ai.sous.turn"
	TypeReply = "ai.sous.turn.reply"
)

// TurnBody is POST /turn's body and a turn event's data.
type TurnBody struct {
	Session string         `json:"session"`
	ID      string         `json:"id,omitempty"`
	Text    *string        `json:"text"`
	Inputs  []oip.TensorIn `json:"inputs"`
	turn.GenParams
}

// Request is the turn the body asks for.
func (b *TurnBody) Request() (turn.Request, error) {
	req := turn.Request{Session: b.Session}
	if b.GenParams.Any() {
		g := b.GenParams
		req.Gen = &g
	}
	if b.Text != nil {
		if strings.TrimSpace(*b.Text) == "" {
			return req, turn.BadRequest("text is empty")
		}
		req.Text = *b.Text
	}
	if b.Inputs != nil {
		ins, err := oip.DecodeInputs(b.Inputs)
		if err != nil {
			return req, err
		}
		req.Inputs, req.HasInputs = ins, true
	}
	return req, nil
}

// Turns runs turns: the turn service.
type Turns interface {
	Check(req *turn.Request) error
	Run1(ctx context.Context, req turn.Request) (turn.Reply, error)
}

// Params are what the route needs.
type Params struct {
	Turns   Turns
	Model   string // the served model's name, in the reply's source
	Tracer  trace.Tracer
	MaxBody int64
	Now     func() time.Time
}

// Handler serves POST /.
type Handler struct{ p Params }

// New returns the handler.
func New(p Params) *Handler { return &Handler{p} }

// Serve answers one request: a turn per event.
func (h *Handler) Serve(c echo.Context) error {
	r := c.Request()
	body, err := edge.ReadBody(c, h.p.MaxBody)
	if err != nil {
		return err
	}
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	ctx := r.Context()
	enc := msg.ReadEncoding()
	switch enc {
	case binding.EncodingUnknown:
		if r.Header.Get("ce-specversion") != "" {
			return turn.BadRequest("not a valid CloudEvent: unsupported ce-specversion %q", r.Header.Get("ce-specversion"))
		}
		return &edge.Error{Code: http.StatusUnsupportedMediaType,
			Msg: "not a CloudEvent: send binary mode (ce-* headers) or Content-Type application/cloudevents+json or application/cloudevents-batch+json"}
	case binding.EncodingBatch:
		if !utf8.Valid(body) {
			return turn.BadRequest("body is not valid UTF-8")
		}
		events, err := binding.ToEvents(ctx, msg, msg.BodyReader)
		if err != nil {
			return turn.BadRequest("not a valid CloudEvents batch: %v", err)
		}
		replies, err := h.batch(ctx, events)
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
		return turn.BadRequest("body is not valid UTF-8")
	}
	ev, err := binding.ToEvent(ctx, msg)
	if err != nil {
		return turn.BadRequest("not a valid CloudEvent: %v", err)
	}
	req, err := EventRequest(ev, false)
	if err == nil {
		err = h.p.Turns.Check(&req)
	}
	if err != nil {
		return err
	}
	c.Set("session", req.Session)
	ctx, span := edge.StartTurn(ctx, h.p.Tracer, r.Header, ev)
	defer span.End()
	reply, err := h.p.Turns.Run1(ctx, req)
	if err != nil {
		edge.SpanErr(span, err)
		return err
	}
	out := h.reply(ctx, ev, reply)
	if enc == binding.EncodingStructured {
		ctx = binding.WithForceStructured(ctx)
	}
	// A 200 that carries an event is a reply: Knative routes it back to
	// the broker. Its type differs from the request's, so no trigger loop.
	return cehttp.WriteResponseWriter(ctx, binding.ToMessage(&out), http.StatusOK, c.Response())
}

// EventRequest validates a turn event and reads its data. anyType accepts
// events of other types (Dapr wraps a plain published payload in its own
// com.dapr.event.sent event).
func EventRequest(ev *event.Event, anyType bool) (turn.Request, error) {
	if err := ev.Validate(); err != nil {
		return turn.Request{}, turn.BadRequest("not a valid CloudEvent: %v", err)
	}
	if ev.Type() != TypeTurn && !anyType {
		return turn.Request{}, turn.BadRequest("event type %q: want %s", ev.Type(), TypeTurn)
	}
	if !edge.IsJSON(ev.DataContentType()) {
		return turn.Request{}, &edge.Error{Code: http.StatusUnsupportedMediaType,
			Msg: fmt.Sprintf("event data content type %q: want application/json", ev.DataContentType())}
	}
	var tb TurnBody
	if err := edge.DecodeJSON(ev.Data(), &tb); err != nil {
		return turn.Request{}, err
	}
	if tb.Session != "" && ev.Subject() != "" && tb.Session != ev.Subject() {
		return turn.Request{}, turn.BadRequest("subject %q and data session %q disagree", ev.Subject(), tb.Session)
	}
	if ev.Subject() != "" {
		tb.Session = ev.Subject()
	}
	if tb.Session == "" {
		return turn.Request{}, turn.BadRequest("no session: set the event's subject or data.session")
	}
	req, err := tb.Request()
	if err != nil {
		return turn.Request{}, err
	}
	// A redelivered event (same source and id) is answered from the
	// transcript instead of taking a second turn.
	req.Event = ev.Source() + "#" + ev.ID()
	return req, nil
}

func (h *Handler) reply(ctx context.Context, req *event.Event, r turn.Reply) event.Event {
	out := event.New()
	if tp := edge.Traceparent(ctx); tp != "" {
		out.SetExtension("traceparent", tp)
	}
	out.SetID(req.ID() + "/reply")
	out.SetSource("/sous/" + h.p.Model)
	out.SetType(TypeReply)
	out.SetSubject(r.Session)
	out.SetTime(h.p.Now())
	out.SetData(event.ApplicationJSON, r)
	return out
}

// batch runs a batch of turn events: all are checked before any runs (one
// bad event fails the batch with 400, nothing run); events of one session
// run in batch order, sessions concurrently. If a turn fails the batch
// fails with its error; the turns that succeeded are in their
// transcripts, so a redelivery answers them without running them again.
func (h *Handler) batch(ctx context.Context, events []event.Event) ([]event.Event, error) {
	if len(events) == 0 {
		return nil, turn.BadRequest("empty CloudEvents batch")
	}
	reqs := make([]turn.Request, len(events))
	bySession := map[string][]int{}
	var order []string
	for i := range events {
		req, err := EventRequest(&events[i], false)
		if err == nil {
			err = h.p.Turns.Check(&req)
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
				tctx, span := edge.StartTurn(ctx, h.p.Tracer, nil, &events[i])
				r, err := h.p.Turns.Run1(tctx, reqs[i])
				if err != nil {
					edge.SpanErr(span, err)
					span.End()
					errs[i] = err
					return // later turns of this session wait for the retry
				}
				replies[i] = h.reply(tctx, &events[i], r)
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
