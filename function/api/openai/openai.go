// Package openai serves OpenAI-compatible chat completions (POST
// /v1/chat/completions, GET /v1/models) for agent frameworks, on a decoder
// model; legacy completions (POST /v1/completions, the prompt as it is);
// and embeddings (POST /v1/embeddings) on a feature-extraction model.
// Without a session a chat request's messages are the whole conversation;
// with X-Sous-Session (or the user field) the session's transcript from
// the store comes first and the new exchange is saved, so any pod
// continues it. Errors come in OpenAI's shape, through the one
// renderer (counted and logged as every route's are).
package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/api/sse"
	"github.com/sous-ai/sous/function/generate"
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
	// Tokens gives a token's bytes and EOS the end-of-sequence id, for
	// logprobs.
	Tokens func(id int64) []byte
	EOS    []int64
	// Embedder embeds text (POST /v1/embeddings); nil when the served
	// model does not (404). MaxBatch is the ring's batch size: an
	// embeddings request queues at most two batches of its texts at once.
	Embedder Embedder
	MaxBatch int
}

// Embedder embeds texts through the ring batcher: the turn service.
type Embedder interface {
	Embed(ctx context.Context, texts []string, window int) ([]turn.Embedded, error)
}

type server struct{ p Params }

// Register adds chat completions to work (admitted only while serving) and
// the model list to e.
func Register(e *echo.Echo, work *echo.Group, p Params) {
	s := &server{p}
	work.POST("/v1/chat/completions", s.chat)
	work.POST("/v1/completions", s.completions)
	work.POST("/v1/embeddings", s.embeddings)
	e.GET("/v1/models", s.models)
}

// errorBody is OpenAI's error shape.
func errorBody(code int, msg string, err error) any {
	typ := "invalid_request_error"
	if code >= 500 {
		typ = "server_error"
	}
	var ecode any
	if errors.Is(err, turn.ErrContextLength) {
		ecode = "context_length_exceeded"
	}
	return map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": ecode}}
}

func (s *server) fail(c echo.Context, err error) error {
	s.p.Renderer.RenderAs(c, err, errorBody)
	return nil
}

// failStream answers a streamed request's error: an error answer while
// nothing is sent yet; once the status is sent, a chunk of the stream
// carrying the error (send), and none for a client that left.
func (s *server) failStream(c echo.Context, span trace.Span, started bool, send func([]byte), err error) error {
	edge.SpanErr(span, err)
	if !started {
		return s.fail(c, err)
	}
	if !errors.Is(err, context.Canceled) {
		code, msg, _ := s.p.Renderer.Record(c, err)
		b, _ := json.Marshal(errorBody(code, msg, err))
		send(b)
	}
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
	req, err := decode(body)
	if err != nil {
		return s.fail(c, err)
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
		calls := 0 // written by the queue's writer alone
		st.queue = sse.NewQueue(func(p string) {
			st.begin()
			if p[0] == pieceText {
				st.chunk(map[string]any{"content": p[1:]}, nil, nil)
				return
			}
			// A call streams as OpenAI streams one: its id, type and name
			// first, then its arguments.
			var c prompt.ToolCall
			json.Unmarshal([]byte(p[1:]), &c)
			st.chunk(map[string]any{"tool_calls": []map[string]any{{"index": calls, "id": c.ID, "type": c.Type,
				"function": map[string]string{"name": c.Function.Name, "arguments": ""}}}}, nil, nil)
			st.chunk(map[string]any{"tool_calls": []map[string]any{{"index": calls,
				"function": map[string]string{"arguments": c.Function.Arguments}}}}, nil, nil)
			calls++
		})
		treq.OnText = func(s string) { st.queue.Push(string(pieceText) + s) }
		treq.OnToolCall = func(c prompt.ToolCall) {
			b, _ := json.Marshal(c)
			st.queue.Push(string(pieceCall) + string(b))
		}
	}
	r, err := s.p.Turns.Do(ctx, treq)
	if st != nil {
		st.queue.Close()
	}
	if err != nil {
		return s.failStream(c, span, st != nil && st.s.Started(), func(b []byte) { st.s.Event("", b) }, err)
	}
	var out turn.GenOutput
	json.Unmarshal(r.Output, &out)
	if !treq.Stateless {
		c.Response().Header().Set("X-Sous-Turn", fmt.Sprint(r.Turn))
	}
	usage := map[string]any{"prompt_tokens": out.PromptTokens, "completion_tokens": out.CompletionTokens,
		"total_tokens":          out.PromptTokens + out.CompletionTokens,
		"prompt_tokens_details": map[string]int{"cached_tokens": out.CachedTokens}}
	choices := s.choices(r, out, req.Logprobs)
	if st != nil {
		st.begin()
		// Headers went out with the first token, before the turn had its
		// number (it is fixed when the turn is saved): a session's last
		// chunk carries it instead of X-Sous-Turn.
		var ext map[string]any
		if !treq.Stateless {
			ext = map[string]any{"sous": map[string]any{"session": treq.Session, "turn": r.Turn}}
		}
		st.chunkWith(map[string]any{}, choices[0]["finish_reason"], choices[0]["logprobs"], ext)
		if req.includeUsage() {
			b, _ := json.Marshal(map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": s.p.Model,
				"choices": []any{}, "usage": usage})
			st.s.Event("", b)
		}
		st.s.Event("", []byte("[DONE]"))
		return nil
	}
	return c.JSON(http.StatusOK, map[string]any{
		"id": id, "object": "chat.completion", "created": created, "model": s.p.Model, "choices": choices, "usage": usage})
}

// choices lays out the reply's choices: the turn's, and with n the
// others, each with its logprobs when asked for.
func (s *server) choices(r turn.Reply, out turn.GenOutput, logprobs bool) []map[string]any {
	finish := func(f string) string {
		if f == "cancelled" {
			return "stop"
		}
		return f
	}
	g, _ := r.Detail.(*turn.Generated)
	if g == nil { // a redelivery: the transcript's reply alone
		return []map[string]any{{"index": 0, "message": replyMessage(out.Text, out.ToolCalls),
			"finish_reason": finish(out.FinishReason), "logprobs": nil}}
	}
	choices := make([]map[string]any, len(g.Choices))
	for i, res := range g.Choices {
		var lp any
		if logprobs {
			lp = map[string]any{"content": s.logprobs(res.Logprobs)}
		}
		text, calls, reason := res.Text, []prompt.ToolCall(nil), res.Finish
		if g.Parsed != nil {
			text, calls = g.Parsed[i].Content, g.Parsed[i].Calls
			if len(calls) > 0 {
				reason = turn.FinishToolCalls
			}
		}
		choices[i] = map[string]any{"index": i, "message": replyMessage(text, calls),
			"finish_reason": finish(reason), "logprobs": lp}
	}
	return choices
}

// Pieces of a stream's queue: text, or a call (its JSON).
const (
	pieceText = 't'
	pieceCall = 'c'
)

// replyMsg is a reply's message in OpenAI's shape: content null when the
// reply is calls alone.
type replyMsg struct {
	Role      string            `json:"role"`
	Content   *string           `json:"content"`
	ToolCalls []prompt.ToolCall `json:"tool_calls,omitempty"`
}

func replyMessage(text string, calls []prompt.ToolCall) replyMsg {
	m := replyMsg{Role: "assistant", ToolCalls: calls}
	if text != "" || len(calls) == 0 {
		m.Content = &text
	}
	return m
}

// tokenLogprob is one token's entry in OpenAI's logprobs.
type tokenLogprob struct {
	Token       string         `json:"token"`
	Logprob     float32        `json:"logprob"`
	Bytes       []int          `json:"bytes"`
	TopLogprobs []tokenLogprob `json:"top_logprobs"`
}

func (s *server) logprobs(lps []generate.Logprob) []tokenLogprob {
	entry := func(id int64, lp float32) tokenLogprob {
		b := s.p.Tokens(id)
		ints := make([]int, len(b))
		for i, c := range b {
			ints[i] = int(c)
		}
		return tokenLogprob{Token: string(b), Logprob: lp, Bytes: ints, TopLogprobs: []tokenLogprob{}}
	}
	out := make([]tokenLogprob, 0, len(lps))
	for _, l := range lps {
		if slices.Contains(s.p.EOS, l.ID) {
			continue // not part of the content
		}
		e := entry(l.ID, l.Logprob)
		for _, t := range l.Top {
			e.TopLogprobs = append(e.TopLogprobs, entry(t.ID, t.Logprob))
		}
		out = append(out, e)
	}
	return out
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

func (st *stream) chunk(delta map[string]any, finish, logprobs any) {
	st.chunkWith(delta, finish, logprobs, nil)
}

// chunkWith writes a chunk with ext's fields beside OpenAI's.
func (st *stream) chunkWith(delta map[string]any, finish, logprobs any, ext map[string]any) {
	m := map[string]any{"id": st.id, "object": "chat.completion.chunk", "created": st.created, "model": st.model,
		"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}}}
	for k, v := range ext {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	st.s.Event("", b)
}

// begin opens the stream with the assistant's role, once.
func (st *stream) begin() {
	if !st.began {
		st.began = true
		st.chunk(map[string]any{"role": "assistant"}, nil, nil)
	}
}
