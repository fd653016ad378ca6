package function

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

	"github.com/sous-ai/sous/function/chat"
	"github.com/sous-ai/sous/function/state"
)

// OpenAI-compatible chat completions (POST /v1/chat/completions, GET
// /v1/models) for agent frameworks, on a decoder model. Without a session
// the request's messages are the whole conversation; with X-Sous-Session
// (or the user field) the session's transcript from the store comes first
// and the new exchange is saved, so any pod continues it.

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model       string          `json:"model"`
	Messages    []chatMessage   `json:"messages"`
	MaxTokens   *int            `json:"max_tokens,omitempty"`
	Temperature *float64        `json:"temperature,omitempty"`
	TopP        *float64        `json:"top_p,omitempty"`
	Seed        *uint64         `json:"seed,omitempty"`
	Stop        json.RawMessage `json:"stop,omitempty"` // a string or a list of them
	Stream      bool            `json:"stream,omitempty"`
	N           *int            `json:"n,omitempty"`
	User        string          `json:"user,omitempty"`
}

// openAIError answers in OpenAI's error shape.
func openAIError(c echo.Context, code int, msg, typ string) error {
	return c.JSON(code, map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
}

func (f *Function) handleModels(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"object": "list", "data": []map[string]any{
		{"id": f.engine.Name(), "object": "model", "created": f.started.Unix(), "owned_by": "sous"}}})
}

func (f *Function) handleChat(c echo.Context) error {
	if f.gen == nil {
		return openAIError(c, http.StatusNotFound, fmt.Sprintf("model %s does not generate: serve a decoder model directory", f.engine.Name()), "invalid_request_error")
	}
	if !isJSON(c.Request().Header.Get(echo.HeaderContentType)) {
		return openAIError(c, http.StatusUnsupportedMediaType, "POST /v1/chat/completions takes application/json", "invalid_request_error")
	}
	body, err := f.readBody(c)
	if err != nil {
		code, msg, _ := classify(err)
		return openAIError(c, code, msg, "invalid_request_error")
	}
	// Not decodeJSON's strict form: OpenAI clients send fields sous does
	// not use (stream_options, logprobs, tools...).
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return openAIError(c, http.StatusBadRequest, "invalid JSON: "+err.Error(), "invalid_request_error")
	}
	g, user, err := req.settings()
	if err != nil {
		_, msg, _ := classify(err)
		return openAIError(c, http.StatusBadRequest, msg, "invalid_request_error")
	}
	session := c.Request().Header.Get("X-Sous-Session")
	if session == "" {
		session = req.User
	}
	id := "chatcmpl-" + fmt.Sprintf("%016x", rand.Uint64())
	created := time.Now().Unix()
	ctx, span := f.startTurn(c.Request().Context(), c.Request().Header, nil)
	defer span.End()

	var stream *chatStream
	var onText func(string)
	if req.Stream {
		stream = &chatStream{c: c, id: id, created: created, model: f.engine.Name()}
		onText = stream.piece
	}
	var out GenOutput
	if session == "" {
		params, err := f.genParams(g)
		var prompt []int64
		if err == nil {
			prompt, err = f.chatPrompt(nil, req.Messages, params.MaxTokens)
		}
		if err == nil {
			out, err = f.generateText(ctx, prompt, params, g.Stop, onText)
		}
		if err != nil {
			return stream.fail(c, err)
		}
	} else {
		r, err := f.generateTurn(ctx, turnRequest{Session: session, Text: user, gen: g, messages: req.Messages}, onText)
		if err != nil {
			return stream.fail(c, err)
		}
		json.Unmarshal(r.Output, &out)
		c.Response().Header().Set("X-Sous-Turn", fmt.Sprint(r.Turn))
	}
	finish := out.FinishReason
	if finish == "cancelled" {
		finish = "stop"
	}
	if stream != nil {
		return stream.end(finish)
	}
	return c.JSON(http.StatusOK, map[string]any{
		"id": id, "object": "chat.completion", "created": created, "model": f.engine.Name(),
		"choices": []map[string]any{{"index": 0, "message": chatMessage{Role: "assistant", Content: out.Text}, "finish_reason": finish}},
		"usage": map[string]any{"prompt_tokens": out.PromptTokens, "completion_tokens": out.CompletionTokens,
			"total_tokens":          out.PromptTokens + out.CompletionTokens,
			"prompt_tokens_details": map[string]int{"cached_tokens": out.CachedTokens}},
	})
}

// settings checks a chat request and returns its generation settings and
// the last user message (the turn's text).
func (r *chatRequest) settings() (*genParams, string, error) {
	if r.N != nil && *r.N != 1 {
		return nil, "", badRequest("n: only 1 is supported")
	}
	if len(r.Messages) == 0 {
		return nil, "", badRequest("messages: at least one is required")
	}
	user := ""
	for _, m := range r.Messages {
		switch m.Role {
		case "system", "user", "assistant", "developer":
		default:
			return nil, "", badRequest("messages: role %q is not one of system, developer, user, assistant", m.Role)
		}
		if m.Role == "user" {
			user = m.Content
		}
	}
	if strings.TrimSpace(user) == "" {
		return nil, "", badRequest("messages: no user message with content")
	}
	g := &genParams{MaxTokens: r.MaxTokens, Temperature: r.Temperature, TopP: r.TopP, Seed: r.Seed}
	if len(r.Stop) > 0 && string(r.Stop) != "null" {
		var one string
		if json.Unmarshal(r.Stop, &one) == nil {
			g.Stop = []string{one}
		} else if json.Unmarshal(r.Stop, &g.Stop) != nil {
			return nil, "", badRequest("stop: a string or a list of strings")
		}
	}
	if _, err := g.params(); err != nil {
		return nil, "", err
	}
	return g, user, nil
}

// chatPrompt renders the stored exchanges and the request's messages with
// the model's chat template (or "role: content" lines without one) and
// encodes them, leaving room for maxTokens. A transcript too long for the
// model's window loses its oldest exchanges in blocks of
// promptDropBlock turns, counted by turn number: the prompt then starts at
// the same exchange for several turns, so the prefix cache still serves
// them (dropping one exchange a turn would change the prompt's start
// every turn). A prompt still too long loses its oldest tokens.
func (f *Function) chatPrompt(history []state.Turn, messages []chatMessage, maxTokens int) ([]int64, error) {
	room := f.hf.MaxLength - maxTokens
	base := 0 // exchanges with turn numbers above base are in the prompt
	if len(history) > 0 {
		base = ceilTo(history[0].N-1, promptDropBlock)
	}
	for {
		ids, err := f.renderChat(history, base, messages)
		if err != nil {
			return nil, err
		}
		if room <= 0 || len(ids) <= room {
			return ids, nil
		}
		if len(history) == 0 || base >= history[len(history)-1].N {
			return ids[len(ids)-room:], nil
		}
		base += promptDropBlock
	}
}

// promptDropBlock is how many of the oldest exchanges a prompt too long
// for the window loses at a time.
const promptDropBlock = 4

func ceilTo(n, block int) int { return (n + block - 1) / block * block }

// renderChat renders the exchanges of history whose turn number is above
// base, then messages, and encodes them.
func (f *Function) renderChat(history []state.Turn, base int, messages []chatMessage) ([]int64, error) {
	var all []chat.Message
	for _, h := range history {
		if h.N <= base {
			continue
		}
		var out GenOutput
		json.Unmarshal(h.Output, &out)
		all = append(all, chat.Message{Role: "user", Content: h.Text}, chat.Message{Role: "assistant", Content: out.Text})
	}
	for _, m := range messages {
		role := m.Role
		if role == "developer" {
			role = "system"
		}
		all = append(all, chat.Message{Role: role, Content: m.Content})
	}
	var text string
	if f.hf.Chat != nil {
		var err error
		if text, err = f.hf.Chat.Render(all, true); err != nil {
			return nil, badRequest("%v", err)
		}
	} else {
		var b strings.Builder
		for _, m := range all {
			fmt.Fprintf(&b, "%s: %s ", m.Role, m.Content)
		}
		b.WriteString("assistant:")
		text = b.String()
	}
	return f.hf.Tok.IDs(text), nil
}

// chatStream writes OpenAI's streaming form: data: {chunk} lines, then
// data: [DONE]. Pieces arrive from the engine's loop, which must not wait
// on the client: a pieceQueue writes them.
type chatStream struct {
	c       echo.Context
	id      string
	created int64
	model   string
	started bool
	queue   *pieceQueue
}

func (s *chatStream) chunk(delta map[string]string, finish any) {
	b, _ := json.Marshal(map[string]any{"id": s.id, "object": "chat.completion.chunk", "created": s.created, "model": s.model,
		"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}}})
	fmt.Fprintf(s.c.Response(), "data: %s\n\n", b)
	s.c.Response().Flush()
}

func (s *chatStream) begin() {
	if !s.started {
		s.started = true
		w := s.c.Response()
		w.Header().Set(echo.HeaderContentType, "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		s.chunk(map[string]string{"role": "assistant"}, nil)
	}
}

func (s *chatStream) piece(text string) {
	if s.queue == nil {
		s.queue = newPieceQueue(func(p string) {
			s.begin()
			s.chunk(map[string]string{"content": p}, nil)
		})
	}
	s.queue.push(text)
}

func (s *chatStream) end(finish string) error {
	if s.queue != nil {
		s.queue.close()
	}
	s.begin()
	s.chunk(map[string]string{}, finish)
	fmt.Fprint(s.c.Response(), "data: [DONE]\n\n")
	s.c.Response().Flush()
	return nil
}

// fail answers an error: OpenAI's shape before the stream began, an error
// chunk after.
func (s *chatStream) fail(c echo.Context, err error) error {
	if s != nil && s.queue != nil {
		s.queue.close()
	}
	code, msg, _ := classify(err)
	typ := "invalid_request_error"
	if code >= 500 {
		typ = "server_error"
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	if s != nil && s.started {
		b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ}})
		fmt.Fprintf(c.Response(), "data: %s\n\n", b)
		return nil
	}
	if code == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	return openAIError(c, code, msg, typ)
}
