package openai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/api/sse"
	"github.com/sous-ai/sous/function/generate"
	"github.com/sous-ai/sous/function/turn"
)

// MaxPrompts bounds the prompts of one legacy completion request.
const MaxPrompts = 32

// MaxLegacyLogprobs bounds the legacy integer logprobs: the most likely
// alternatives the engine reports per token.
const MaxLegacyLogprobs = 20

// completionRequest is POST /v1/completions's body (OpenAI's legacy
// completions): every field that changes the answer is honoured or
// refused by name.
type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	MaxTokens     *int            `json:"max_tokens"`
	Temperature   *float64        `json:"temperature"`
	TopP          *float64        `json:"top_p"`
	N             *int            `json:"n"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Logprobs         *int            `json:"logprobs"`
	Echo             bool            `json:"echo"`
	Stop             json.RawMessage `json:"stop"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	BestOf           *int            `json:"best_of"`
	LogitBias        json.RawMessage `json:"logit_bias"`
	Seed             *uint64         `json:"seed"`
	Suffix           *string         `json:"suffix"`
	User             string          `json:"user"`
}

// completionFields are the fields read; user is accepted and ignored (a
// legacy completion continues no session).
var completionFields = []string{"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options",
	"logprobs", "echo", "stop", "presence_penalty", "frequency_penalty", "best_of", "logit_bias", "seed", "suffix", "user"}

// legacyMaxTokens is OpenAI's default max_tokens for legacy completions.
const legacyMaxTokens = 16

// prompts reads prompt: a string or a list of strings. Token id arrays
// are refused: ids meant for another tokenizer would be another prompt.
func (r *completionRequest) prompts() ([]string, error) {
	if len(r.Prompt) == 0 || string(r.Prompt) == "null" {
		return nil, turn.BadRequest("prompt: required (a string or a list of strings)")
	}
	var one string
	if json.Unmarshal(r.Prompt, &one) == nil {
		return []string{one}, nil
	}
	var list []json.RawMessage
	if json.Unmarshal(r.Prompt, &list) != nil {
		return nil, turn.BadRequest("prompt: want a string or a list of strings")
	}
	if len(list) == 0 || len(list) > MaxPrompts {
		return nil, turn.BadRequest("prompt: %d prompts, want 1 to %d", len(list), MaxPrompts)
	}
	out := make([]string, len(list))
	for i, v := range list {
		if json.Unmarshal(v, &out[i]) != nil {
			var n json.Number
			var ids []json.Number
			if json.Unmarshal(v, &n) == nil || json.Unmarshal(v, &ids) == nil {
				return nil, turn.BadRequest("prompt: token id arrays are not supported (send text: sous encodes it with the model's own tokenizer)")
			}
			return nil, turn.BadRequest("prompt[%d]: want a string", i)
		}
	}
	return out, nil
}

// gen checks the settings and returns them for each prompt's turn.
func (r *completionRequest) gen() (*turn.GenParams, int, error) {
	switch {
	case r.Suffix != nil && *r.Suffix != "":
		return nil, 0, turn.BadRequest("suffix: not supported by sous (text after the completion needs a fill-in-the-middle model)")
	case len(r.LogitBias) > 0 && string(r.LogitBias) != "null" && string(r.LogitBias) != "{}":
		return nil, 0, turn.BadRequest("logit_bias: not supported by sous")
	case r.Logprobs != nil && r.Stream:
		return nil, 0, turn.BadRequest("logprobs with stream: not supported by sous (ask without stream)")
	case r.Logprobs != nil && r.Echo:
		return nil, 0, turn.BadRequest("logprobs with echo: not supported by sous (the prompt's tokens have no log probabilities here)")
	case r.Logprobs != nil && (*r.Logprobs < 0 || *r.Logprobs > MaxLegacyLogprobs):
		return nil, 0, turn.BadRequest("logprobs %d: want 0 to %d", *r.Logprobs, MaxLegacyLogprobs)
	}
	n := 1
	if r.N != nil {
		if *r.N < 1 || *r.N > turn.MaxChoices {
			return nil, 0, turn.BadRequest("n %d: want 1 to %d", *r.N, turn.MaxChoices)
		}
		n = *r.N
	}
	if r.BestOf != nil && *r.BestOf != n {
		return nil, 0, turn.BadRequest("best_of %d: not supported by sous unless it equals n (%d): sous returns every choice it generates", *r.BestOf, n)
	}
	max := legacyMaxTokens
	if r.MaxTokens != nil {
		max = *r.MaxTokens
	}
	g := &turn.GenParams{MaxTokens: &max, Temperature: r.Temperature, TopP: r.TopP, Seed: r.Seed,
		FrequencyPenalty: r.FrequencyPenalty, PresencePenalty: r.PresencePenalty}
	if r.Logprobs != nil {
		g.Logprobs, g.TopLogprobs = true, r.Logprobs
	}
	if len(r.Stop) > 0 && string(r.Stop) != "null" {
		var one string
		if json.Unmarshal(r.Stop, &one) == nil {
			g.Stop = []string{one}
		} else if json.Unmarshal(r.Stop, &g.Stop) != nil {
			return nil, 0, turn.BadRequest("stop: a string or a list of strings")
		}
	}
	return g, n, nil
}

func (s *server) completions(c echo.Context) error {
	if !s.p.Generates {
		return s.fail(c, &edge.Error{Code: http.StatusNotFound, Msg: fmt.Sprintf("model %s does not generate: serve a decoder model directory", s.p.Model)})
	}
	if !edge.IsJSON(c.Request().Header.Get(echo.HeaderContentType)) {
		return s.fail(c, &edge.Error{Code: http.StatusUnsupportedMediaType, Msg: "POST /v1/completions takes application/json"})
	}
	if c.Request().Header.Get("X-Sous-Session") != "" {
		return s.fail(c, turn.BadRequest("X-Sous-Session: a legacy completion continues no session (use /v1/chat/completions)"))
	}
	body, err := edge.ReadBody(c, s.p.MaxBody)
	if err != nil {
		return s.fail(c, err)
	}
	var req completionRequest
	if err := decodeKnown(body, &req, completionFields); err != nil {
		return s.fail(c, err)
	}
	prompts, err := req.prompts()
	if err != nil {
		return s.fail(c, err)
	}
	g, n, err := req.gen()
	if err != nil {
		return s.fail(c, err)
	}
	id := "cmpl-" + fmt.Sprintf("%016x", rand.Uint64())
	created := time.Now().Unix()
	ctx, span := edge.StartTurn(c.Request().Context(), s.p.Tracer, c.Request().Header, nil)
	defer span.End()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var st *completionStream
	if req.Stream {
		st = &completionStream{s: sse.New(c), head: map[string]any{"id": id, "object": "text_completion", "created": created, "model": s.p.Model}}
	}
	// Every prompt is a turn of its own, all at once: the engine batches
	// their steps, and each prompt's n choices share its prefill.
	replies := make([]turn.Reply, len(prompts))
	errs := make([]error, len(prompts))
	// echoed says a streamed prompt's echo is sent: with its first piece,
	// so that a request refused before generating is an error answer,
	// not a stream. Written by the prompt's queue, read after its Close.
	echoed := make([]bool, len(prompts))
	echo := func(i int) {
		if req.Echo && !echoed[i] {
			echoed[i] = true
			st.chunk(i, prompts[i], nil)
		}
	}
	var wg sync.WaitGroup
	for i, p := range prompts {
		treq := turn.Request{Stateless: true, Raw: true, Text: p, Gen: g, Choices: n}
		var q *sse.Queue
		if st != nil {
			q = sse.NewQueue(func(piece string) { echo(i); st.chunk(i, piece, nil) })
			treq.OnText = q.Push
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], errs[i] = s.p.Turns.Do(ctx, treq)
			if q != nil {
				q.Close()
			}
			if errs[i] != nil {
				cancel() // the request fails whole
			}
		}()
	}
	wg.Wait()
	if err := firstErr(errs); err != nil {
		return s.failStream(c, span, st != nil && st.started(), func(b []byte) { st.send(b) }, err)
	}

	var choices []map[string]any
	promptTokens, completionTokens := 0, 0
	for i, r := range replies {
		var out turn.GenOutput
		json.Unmarshal(r.Output, &out)
		promptTokens += out.PromptTokens
		completionTokens += out.CompletionTokens
		gen, _ := r.Detail.(*turn.Generated)
		if gen == nil {
			return s.fail(c, fmt.Errorf("openai: completion %d came back without its choices", i))
		}
		for j, res := range gen.Choices {
			text := res.Text
			if req.Echo {
				text = prompts[i] + text
			}
			var lp any
			if req.Logprobs != nil {
				lp = s.legacyLogprobs(res.Logprobs)
			}
			choices = append(choices, map[string]any{"index": i*n + j, "text": text, "finish_reason": legacyFinish(res.Finish), "logprobs": lp})
		}
	}
	usage := map[string]any{"prompt_tokens": promptTokens, "completion_tokens": completionTokens, "total_tokens": promptTokens + completionTokens}
	if st != nil {
		for i, ch := range choices {
			echo(i / n)
			st.chunk(ch["index"].(int), "", ch["finish_reason"])
		}
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			st.event(map[string]any{"choices": []any{}, "usage": usage})
		}
		st.s.Event("", []byte("[DONE]"))
		return nil
	}
	return c.JSON(http.StatusOK, map[string]any{"id": id, "object": "text_completion", "created": created, "model": s.p.Model,
		"choices": choices, "usage": usage})
}

// firstErr is the first failure among errs that is not the cancellation
// it caused in the others.
func firstErr(errs []error) error {
	var canceled error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, context.Canceled):
			canceled = err
		default:
			return err
		}
	}
	return canceled
}

func legacyFinish(f string) string {
	if f == generate.FinishCancelled {
		return "stop"
	}
	return f
}

// legacyLogprobs lays a choice's log probabilities out in the legacy
// form: tokens, token_logprobs, top_logprobs (each token's alternatives
// and itself, token text to log probability) and text_offset (characters
// into the choice's text).
func (s *server) legacyLogprobs(lps []generate.Logprob) map[string]any {
	tokens, logprobs, offsets := []string{}, []float32{}, []int{}
	top := []map[string]float32{}
	at := 0
	for _, l := range lps {
		if slices.Contains(s.p.EOS, l.ID) {
			continue // not part of the text
		}
		tok := string(s.p.Tokens(l.ID))
		alts := map[string]float32{}
		for _, t := range l.Top {
			if k := string(s.p.Tokens(t.ID)); alts[k] == 0 {
				alts[k] = t.Logprob
			}
		}
		alts[tok] = l.Logprob
		tokens, logprobs, offsets, top = append(tokens, tok), append(logprobs, l.Logprob), append(offsets, at), append(top, alts)
		at += utf8.RuneCountInString(tok)
	}
	return map[string]any{"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": top, "text_offset": offsets}
}

// completionStream writes the legacy streaming form: data: {chunk} lines,
// each with one choice's text, from every prompt's writer (mu orders
// them), then data: [DONE].
type completionStream struct {
	mu   sync.Mutex // guards s
	s    *sse.Stream
	head map[string]any
}

func (st *completionStream) chunk(index int, text string, finish any) {
	st.event(map[string]any{"choices": []map[string]any{{"index": index, "text": text, "logprobs": nil, "finish_reason": finish}}})
}

func (st *completionStream) event(fields map[string]any) {
	for k, v := range st.head {
		fields[k] = v
	}
	b, _ := json.Marshal(fields)
	st.send(b)
}

// send writes one chunk of the stream.
func (st *completionStream) send(b []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.s.Event("", b)
}

func (st *completionStream) started() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.s.Started()
}
