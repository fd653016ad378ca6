// Package openai serves OpenAI-compatible chat completions (POST
// /v1/chat/completions, GET /v1/models) for agent frameworks, on a decoder
// model. Without a session the request's messages are the whole
// conversation; with X-Sous-Session (or the user field) the session's
// transcript from the store comes first and the new exchange is saved, so
// any pod continues it. Errors come in OpenAI's shape, through the one
// renderer (counted and logged as every route's are).
package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/api/sse"
	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/turn"
)

// Turns runs turns: the turn service.
type Turns interface {
	Do(ctx context.Context, req turn.Request) (turn.Reply, error)
}

// Params are what the routes need.
type Params struct {
	Turns     Turns
	Model     string
	Generates bool // the served model generates; else chat is 404
	Renderer  *edge.Renderer
	Tracer    trace.Tracer
	MaxBody   int64
	Started   time.Time
}

type server struct{ p Params }

// Register adds chat completions to work (admitted only while serving) and
// the model list to e.
func Register(e *echo.Echo, work *echo.Group, p Params) {
	s := &server{p}
	work.POST("/v1/chat/completions", s.chat)
	e.GET("/v1/models", s.models)
}

type request struct {
	Model       string           `json:"model"`
	Messages    []prompt.Message `json:"messages"`
	MaxTokens   *int             `json:"max_tokens,omitempty"`
	Temperature *float64         `json:"temperature,omitempty"`
	TopP        *float64         `json:"top_p,omitempty"`
	Seed        *uint64          `json:"seed,omitempty"`
	Stop        json.RawMessage  `json:"stop,omitempty"` // a string or a list of them
	Stream      bool             `json:"stream,omitempty"`
	N           *int             `json:"n,omitempty"`
	User        string           `json:"user,omitempty"`
}

// errorBody is OpenAI's error shape.
func errorBody(code int, msg string) any {
	typ := "invalid_request_error"
	if code >= 500 {
		typ = "server_error"
	}
	return map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}}
}

func (s *server) fail(c echo.Context, err error) error {
	s.p.Renderer.RenderAs(c, err, errorBody)
	return nil
}

func (s *server) models(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"object": "list", "data": []map[string]any{
		{"id": s.p.Model, "object": "model", "created": s.p.Started.Unix(), "owned_by": "sous"}}})
}

func (s *server) chat(c echo.Context) error {
	if !s.p.Generates {
		return s.fail(c, &edge.Error{Code: http.StatusNotFound, Msg: fmt.Sprintf("model %s does not generate: serve a decoder model directory", s.p.Model)})
	}
	if !edge.IsJSON(c.Request().Header.Get(echo.HeaderContentType)) {
		return s.fail(c, &edge.Error{Code: http.StatusUnsupportedMediaType, Msg: "POST /v1/chat/completions takes application/json"})
	}
	body, err := edge.ReadBody(c, s.p.MaxBody)
	if err != nil {
		return s.fail(c, err)
	}
	// Not edge.DecodeJSON's strict form: OpenAI clients send fields sous
	// does not use (stream_options, logprobs, tools...).
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		return s.fail(c, turn.BadRequest("invalid JSON: %v", err))
	}
	treq, err := req.turn()
	if err != nil {
		return s.fail(c, err)
	}
	treq.Session = c.Request().Header.Get("X-Sous-Session")
	if treq.Session == "" {
		treq.Session = req.User
	}
	treq.Stateless = treq.Session == ""
	c.Set("session", treq.Session)
	id := "chatcmpl-" + fmt.Sprintf("%016x", rand.Uint64())
	created := time.Now().Unix()
	ctx, span := edge.StartTurn(c.Request().Context(), s.p.Tracer, c.Request().Header, nil)
	defer span.End()

	var st *stream
	if req.Stream {
		st = &stream{s: sse.New(c), id: id, created: created, model: s.p.Model}
		st.queue = sse.NewQueue(func(p string) {
			st.begin()
			st.chunk(map[string]string{"content": p}, nil)
		})
		treq.OnText = st.queue.Push
	}
	r, err := s.p.Turns.Do(ctx, treq)
	if st != nil {
		st.queue.Close()
	}
	if err != nil {
		edge.SpanErr(span, err)
		if st != nil && st.s.Started() {
			// The status is sent: the error is a chunk of the stream.
			if !errors.Is(err, context.Canceled) {
				_, msg, _ := s.p.Renderer.Record(c, err)
				code, _, _ := edge.Status(err)
				b, _ := json.Marshal(errorBody(code, msg))
				st.s.Event("", b)
			}
			return nil
		}
		return s.fail(c, err)
	}
	var out turn.GenOutput
	json.Unmarshal(r.Output, &out)
	if !treq.Stateless {
		c.Response().Header().Set("X-Sous-Turn", fmt.Sprint(r.Turn))
	}
	finish := out.FinishReason
	if finish == "cancelled" {
		finish = "stop"
	}
	if st != nil {
		st.begin()
		st.chunk(map[string]string{}, finish)
		st.s.Event("", []byte("[DONE]"))
		return nil
	}
	return c.JSON(http.StatusOK, map[string]any{
		"id": id, "object": "chat.completion", "created": created, "model": s.p.Model,
		"choices": []map[string]any{{"index": 0, "message": prompt.Message{Role: "assistant", Content: out.Text}, "finish_reason": finish}},
		"usage": map[string]any{"prompt_tokens": out.PromptTokens, "completion_tokens": out.CompletionTokens,
			"total_tokens":          out.PromptTokens + out.CompletionTokens,
			"prompt_tokens_details": map[string]int{"cached_tokens": out.CachedTokens}},
	})
}

// turn checks a chat request and returns the turn it asks for: its
// generation settings, its messages and the last user message (the turn's
// text).
func (r *request) turn() (turn.Request, error) {
	if r.N != nil && *r.N != 1 {
		return turn.Request{}, turn.BadRequest("n: only 1 is supported")
	}
	if len(r.Messages) == 0 {
		return turn.Request{}, turn.BadRequest("messages: at least one is required")
	}
	user := ""
	for _, m := range r.Messages {
		switch m.Role {
		case "system", "user", "assistant", "developer":
		default:
			return turn.Request{}, turn.BadRequest("messages: role %q is not one of system, developer, user, assistant", m.Role)
		}
		if m.Role == "user" {
			user = m.Content
		}
	}
	if strings.TrimSpace(user) == "" {
		return turn.Request{}, turn.BadRequest("messages: no user message with content")
	}
	g := &turn.GenParams{MaxTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP, Seed: r.Seed}
	if len(r.Stop) > 0 && string(r.Stop) != "null" {
		var one string
		if json.Unmarshal(r.Stop, &one) == nil {
			g.Stop = []string{one}
		} else if json.Unmarshal(r.Stop, &g.Stop) != nil {
			return turn.Request{}, turn.BadRequest("stop: a string or a list of strings")
		}
	}
	return turn.Request{Text: user, Gen: g, Messages: r.Messages}, nil
}

// stream writes OpenAI's streaming form: data: {chunk} lines, then
// data: [DONE].
type stream struct {
	s       *sse.Stream
	queue   *sse.Queue
	id      string
	created int64
	model   string
	began   bool
}

func (st *stream) chunk(delta map[string]string, finish any) {
	b, _ := json.Marshal(map[string]any{"id": st.id, "object": "chat.completion.chunk", "created": st.created, "model": st.model,
		"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}}})
	st.s.Event("", b)
}

// begin opens the stream with the assistant's role, once.
func (st *stream) begin() {
	if !st.began {
		st.began = true
		st.chunk(map[string]string{"role": "assistant"}, nil)
	}
}
