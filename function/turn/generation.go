package turn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sous-ai/sous/function/generate"
	"github.com/sous-ai/sous/function/grammar"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/telemetry"
	"github.com/sous-ai/sous/function/toolcall"
)

// GenParams are a generated turn's settings, beside its text.
type GenParams struct {
	MaxTokens   *int     `json:"max_tokens,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	TopK        *int     `json:"top_k,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	Seed        *uint64  `json:"seed,omitempty"`
	Stop        []string `json:"stop,omitempty"`
	Stream      bool     `json:"stream,omitempty"`
	// Penalties on tokens already generated (-2 to 2, as OpenAI's).
	FrequencyPenalty *float64 `json:"frequency_penalty,omitempty"`
	PresencePenalty  *float64 `json:"presence_penalty,omitempty"`
	// Logprobs asks for each token's log probability, TopLogprobs (0-20)
	// for the most likely alternatives too.
	Logprobs    bool `json:"logprobs,omitempty"`
	TopLogprobs *int `json:"top_logprobs,omitempty"`
	// ResponseFormat is OpenAI's: {"type": "text"}, {"type":
	// "json_object"} or {"type": "json_schema", "json_schema": {"name",
	// "schema", "strict"}}; a JSON one is enforced by constrained
	// decoding.
	ResponseFormat json.RawMessage `json:"response_format,omitempty"`
	// Tools are OpenAI's tool definitions, a JSON list of {"type":
	// "function", "function": {"name", "description", "parameters"}},
	// rendered by the chat template; ToolChoice is "auto" (the default
	// with tools), "none", "required" or {"type": "function",
	// "function": {"name"}} (required and named are enforced by
	// constrained decoding); ParallelToolCalls (default true) allows
	// several calls in one reply.
	Tools             json.RawMessage `json:"tools,omitempty"`
	ToolChoice        json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
}

// Any reports whether any generation setting was given.
func (g *GenParams) Any() bool {
	return g.MaxTokens != nil || g.Temperature != nil || g.TopK != nil || g.TopP != nil || g.Seed != nil || g.Stop != nil || g.Stream ||
		g.FrequencyPenalty != nil || g.PresencePenalty != nil || g.Logprobs || g.TopLogprobs != nil || len(g.ResponseFormat) > 0 ||
		len(g.Tools) > 0 || len(g.ToolChoice) > 0 || g.ParallelToolCalls != nil
}

// MaxGenTokens bounds max_tokens.
const MaxGenTokens = 4096

// Params checks the settings and returns them for the engine.
func (g *GenParams) Params() (generate.Params, error) {
	p := generate.Params{MaxTokens: 64}
	if g.MaxTokens != nil {
		if *g.MaxTokens < 1 || *g.MaxTokens > MaxGenTokens {
			return p, BadRequest("max_tokens %d: want 1 to %d", *g.MaxTokens, MaxGenTokens)
		}
		p.MaxTokens = *g.MaxTokens
	}
	if g.Temperature != nil {
		if *g.Temperature < 0 || *g.Temperature > 10 {
			return p, BadRequest("temperature %g: want 0 (greedy) to 10", *g.Temperature)
		}
		p.Temperature = *g.Temperature
	}
	if g.TopK != nil {
		if *g.TopK < 0 {
			return p, BadRequest("top_k %d: want 0 (all) or more", *g.TopK)
		}
		p.TopK = *g.TopK
	}
	if g.TopP != nil {
		if *g.TopP <= 0 || *g.TopP > 1 {
			return p, BadRequest("top_p %g: want more than 0, at most 1", *g.TopP)
		}
		p.TopP = *g.TopP
	}
	if g.Seed != nil {
		p.Seed = *g.Seed
	}
	if len(g.Stop) > 8 {
		return p, BadRequest("stop: at most 8 strings")
	}
	for _, s := range g.Stop {
		if s == "" || len(s) > 256 {
			return p, BadRequest("stop strings must be 1-256 bytes")
		}
	}
	p.Stop = g.Stop
	for _, pen := range []struct {
		name string
		v    *float64
		to   *float64
	}{{"frequency_penalty", g.FrequencyPenalty, &p.FrequencyPenalty}, {"presence_penalty", g.PresencePenalty, &p.PresencePenalty}} {
		if pen.v != nil {
			if *pen.v < -2 || *pen.v > 2 {
				return p, BadRequest("%s %g: want -2 to 2", pen.name, *pen.v)
			}
			*pen.to = *pen.v
		}
	}
	if g.TopLogprobs != nil {
		if *g.TopLogprobs < 0 || *g.TopLogprobs > 20 {
			return p, BadRequest("top_logprobs %d: want 0 to 20", *g.TopLogprobs)
		}
		if !g.Logprobs {
			return p, BadRequest("top_logprobs needs logprobs: true")
		}
		p.TopLogprobs = *g.TopLogprobs
	}
	p.Logprobs = g.Logprobs
	return p, nil
}

// GenOutput is a generated turn's output.
type GenOutput struct {
	Text             string `json:"text"`
	FinishReason     string `json:"finish_reason"`
	PromptTokens     int    `json:"prompt_tokens"`
	CompletionTokens int    `json:"completion_tokens"`
	// CachedTokens are the prompt's tokens whose KV this pod's prefix
	// cache held (not prefilled again).
	CachedTokens int `json:"cached_tokens,omitempty"`
	// ToolCalls are the reply's calls of tools (Text is then the content
	// outside them, often ""; FinishReason "tool_calls").
	ToolCalls []prompt.ToolCall `json:"tool_calls,omitempty"`
}

// generateSettings are a checked generated turn's.
type generateSettings struct {
	params generate.Params
	// constraint is the response format's grammar bound to the model's
	// vocabulary (nil: free text), or a required tool call's; each choice
	// gets its own matcher.
	constraint *grammar.Constraint
	// tools are the request's tool definitions for the template (nil:
	// none), and parse whether replies are read for calls (not with
	// tool_choice none).
	tools json.RawMessage
	parse bool
	most  int // calls a reply may make (0: any; parallel_tool_calls false: 1)
}

// MaxChoices bounds Request.Choices.
const MaxChoices = 8

// Generated is a generated turn's detail beside its output, for the
// transport (not kept in the transcript): every choice's result, tokens
// and log probabilities included.
type Generated struct {
	Choices []generate.Result
	// Parsed are the choices read for tool calls, one per choice (nil
	// when no tools were offered).
	Parsed []Parsed
}

// Parsed is a reply read for tool calls: the content outside the calls,
// and the calls.
type Parsed struct {
	Content string
	Calls   []prompt.ToolCall
}

// generationRunner serves a decoder model directory: each turn one
// sequence of the decode engine, its prompt the session's transcript and
// the request's messages in the model's chat template.
type generationRunner struct {
	m       *model.Engine
	dir     *tasks.Model
	engine  *generate.Engine
	prompts prompt.Builder
	metrics *telemetry.Metrics
	// kvTokens is the engine's KV budget, for the error that a prompt
	// too long for it gets.
	kvTokens int
	// vocab is each token's bytes for constrained decoding, built on the
	// first structured request (a trie over the vocabulary: start-up need
	// not pay for it).
	vocabOnce sync.Once
	vocab     *grammar.Vocab
	vocabErr  error
	// toolFormat is how the model writes tool calls: SOUS_TOOL_PARSER, or
	// the chat template's ("": unknown, tools are refused).
	toolFormat toolcall.Format
}

// grammarVocab builds, once, the vocabulary as the grammar checks it:
// every id the logits cover, with the bytes it decodes to; special tokens
// are not text (never allowed), but the end-of-sequence ids end a value.
func (r *generationRunner) grammarVocab() (*grammar.Vocab, error) {
	r.vocabOnce.Do(func() {
		n := r.dir.Tok.VocabSize()
		for _, o := range r.m.Outputs() {
			if o.Name == "logits" && len(o.Shape) == 3 && o.Shape[2] > 0 {
				n = int(o.Shape[2])
			}
		}
		tokens := make([][]byte, n)
		for id := range n {
			if id < r.dir.Tok.VocabSize() && !r.dir.Tok.IsSpecial(int64(id)) {
				tokens[id] = r.dir.Tok.TokenBytes(int64(id))
			}
		}
		var eos []int
		for _, id := range r.dir.EOS {
			eos = append(eos, int(id))
		}
		r.vocab, r.vocabErr = grammar.NewVocab(tokens, eos)
	})
	return r.vocab, r.vocabErr
}

// maskCache is how many automaton states' masks a request's constraint
// keeps: a schema's walk revisits few.
const maskCache = 256

// responseFormat compiles a response format into a constraint (nil for
// text). Every schema the grammar cannot enforce is refused naming why.
func (r *generationRunner) responseFormat(raw json.RawMessage) (*grammar.Constraint, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var rf struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
			Strict *bool           `json:"strict"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(raw, &rf); err != nil {
		return nil, BadRequest("response_format: %v", err)
	}
	switch rf.Type {
	case "text":
		return nil, nil
	case "json_object", "json_schema":
	default:
		return nil, BadRequest("response_format type %q: want text, json_object or json_schema", rf.Type)
	}
	if err := r.checkGrammarTokenizer("response_format " + rf.Type); err != nil {
		return nil, err
	}
	var g *grammar.Grammar
	var err error
	switch rf.Type {
	case "json_object":
		g, err = grammar.CompileJSONObject(grammar.Options{})
	case "json_schema":
		if rf.JSONSchema == nil || len(rf.JSONSchema.Schema) == 0 {
			return nil, BadRequest("response_format json_schema: want json_schema.schema")
		}
		g, err = grammar.Compile(rf.JSONSchema.Schema, grammar.Options{})
	}
	if err != nil {
		return nil, BadRequest("response_format: %v", err)
	}
	return r.bind(g)
}

// checkGrammarTokenizer refuses constrained decoding (what names) on a
// tokenizer whose tokens' bytes do not concatenate into the text.
func (r *generationRunner) checkGrammarTokenizer(what string) error {
	if !r.dir.Tok.BytesConcatenate() {
		return BadRequest("%s: model %s's tokenizer (WordPiece) decodes with spaces of its own, which a grammar over its tokens cannot hold to; structured outputs need a byte-level, SentencePiece or Unigram tokenizer", what, r.m.Name())
	}
	return nil
}

// bind binds a grammar to the model's vocabulary.
func (r *generationRunner) bind(g *grammar.Grammar) (*grammar.Constraint, error) {
	v, err := r.grammarVocab()
	if err != nil {
		return nil, err
	}
	return grammar.NewConstraint(g, v, maskCache), nil
}

// NewGenerationRunner serves a decoder model through its engine; tools
// is the format its tool calls are read in ("": the chat template's).
func NewGenerationRunner(m *model.Engine, dir *tasks.Model, engine *generate.Engine, kvTokens int, tools toolcall.Format, metrics *telemetry.Metrics) Runner {
	if tools == "" && dir.Chat != nil {
		tools = toolcall.Detect(dir.Chat.Source())
	}
	return &generationRunner{m: m, dir: dir, engine: engine, metrics: metrics, kvTokens: kvTokens, toolFormat: tools,
		prompts: prompt.Builder{Template: dir.Chat, Encode: dir.Tok.IDs, Positions: dir.MaxLength}}
}

func (r *generationRunner) Batched() bool { return false }

func (r *generationRunner) Model() string { return r.m.Name() }

func (r *generationRunner) Check(req *Request) error {
	if (req.Text == "" && len(req.Messages) == 0) || req.HasInputs {
		return BadRequest("model %s generates from text: send text, not tensors", r.m.Name())
	}
	// The text's bound keeps transcripts small; a stateless request keeps
	// none (its bound is the body's and the model's positions).
	if err := checkText(req.Text); err != nil && !req.Stateless {
		return err
	}
	g := req.Gen
	if g == nil {
		g = &GenParams{}
	}
	p, err := g.Params()
	if err != nil {
		return err
	}
	if p.MaxTokens >= r.dir.MaxLength {
		return BadRequest("max_tokens %d: the model holds %d positions, prompt included", p.MaxTokens, r.dir.MaxLength)
	}
	if req.Choices < 0 || req.Choices > MaxChoices {
		return BadRequest("n %d: want 1 to %d", req.Choices, MaxChoices)
	}
	if req.Choices > 1 && req.OnText != nil {
		return BadRequest("n above 1 does not stream here; ask without stream")
	}
	p.OnText = req.OnText
	c, err := r.responseFormat(g.ResponseFormat)
	if err != nil {
		return err
	}
	settings := &generateSettings{params: p, constraint: c}
	if err := r.toolSettings(g, settings); err != nil {
		return err
	}
	if !req.Stateless {
		if req.saved, err = savedMessages(req.Messages); err != nil {
			return err
		}
		if len(req.saved) > MaxText {
			return BadRequest("the turn's messages are %d bytes, the limit is %d", len(req.saved), MaxText)
		}
	}
	req.gen = settings
	return nil
}

// Run generates each job's reply (the service hands it one job at a time;
// the engine batches the decode steps of every sequence in flight).
func (r *generationRunner) Run(ctx context.Context, jobs []*Job, out []Computed) error {
	for i, j := range jobs {
		var g *Generated
		out[i].Output, g, out[i].Err = r.generate(ctx, j)
		if g != nil {
			out[i].Detail = g
		}
	}
	return nil
}

func (r *generationRunner) generate(ctx context.Context, j *Job) (json.RawMessage, *Generated, error) {
	req := j.Req
	p := req.gen.params
	messages := req.Messages
	if messages == nil {
		messages = []prompt.Message{{Role: "user", Content: req.Text}}
	}
	var ids []int64
	var err error
	if req.Raw {
		ids, err = r.rawPrompt(req, p.MaxTokens)
	} else {
		ids, err = r.prompts.BuildTools(exchanges(j.Session.History), messages, req.gen.tools, p.MaxTokens)
	}
	switch {
	case errors.Is(err, prompt.ErrContextLength):
		return nil, nil, fmt.Errorf("%w: %v", ErrContextLength, err)
	case errors.Is(err, prompt.ErrTemplate):
		return nil, nil, BadRequest("%v", err)
	case err != nil:
		return nil, nil, err
	}
	if !req.Stateless {
		p.Session = req.Session
		p.Prev = transcriptVersion(j.Session.Turn, lastEvent(j.Session))
		p.Next = transcriptVersion(j.Session.Turn+1, req.Event)
	}
	ps := []generate.Params{p}
	for i := 1; i < req.Choices; i++ {
		c := p
		if c.Seed != 0 {
			c.Seed += uint64(i) // each choice its own draw, reproducibly
		}
		ps = append(ps, c)
	}
	if gc := req.gen.constraint; gc != nil {
		for i := range ps {
			ps[i].Constraint = gc.NewMatcher()
		}
	}
	var parser *toolcall.Parser
	if req.gen.parse {
		// The first choice's text is read for calls as it streams: its
		// content goes on, each call once complete; markup never shows.
		parser = r.toolFormat.NewParser(req.OnText, req.OnToolCall).Most(req.gen.most)
		ps[0].OnText = parser.Push
	}
	start := time.Now()
	first := make([]time.Time, len(ps))
	rs, err := r.engine.GenerateN(ctx, ids, ps, func(i int, _ int64) {
		if first[i].IsZero() {
			first[i] = time.Now()
		}
	})
	if errors.Is(err, generate.ErrTooLong) {
		return nil, nil, fmt.Errorf("%w: %v (SOUS_KV_TOKENS %d)", ErrContextLength, err, r.kvTokens)
	}
	if err != nil {
		return nil, nil, err
	}
	res := rs[0]
	if res.Finish == generate.FinishCancelled && ctx.Err() != nil {
		// The caller left; what was made is not a turn.
		return nil, nil, ctx.Err()
	}
	completion := 0
	for i, c := range rs {
		var tpot time.Duration
		if n := len(c.Tokens); n > 1 {
			tpot = time.Since(first[i]) / time.Duration(n-1)
		}
		r.metrics.Generated(first[i].Sub(start), tpot, len(c.Tokens), c.PromptTokens, c.CachedTokens)
		completion += len(c.Tokens)
	}
	// The first choice is the turn's: its text (and calls) are what the
	// transcript keeps; the usage counts every choice's tokens.
	o := GenOutput{Text: res.Text, FinishReason: res.Finish, PromptTokens: res.PromptTokens,
		CompletionTokens: completion, CachedTokens: res.CachedTokens}
	gen := &Generated{Choices: rs}
	if parser != nil {
		gen.Parsed = make([]Parsed, len(rs))
		for i, c := range rs {
			var pc Parsed
			if i == 0 {
				pc.Content, pc.Calls = parser.Finish()
			} else {
				p := r.toolFormat.NewParser(nil, nil).Most(req.gen.most)
				p.Push(c.Text)
				pc.Content, pc.Calls = p.Finish()
			}
			gen.Parsed[i] = pc
		}
		o.Text, o.ToolCalls = gen.Parsed[0].Content, gen.Parsed[0].Calls
		if len(o.ToolCalls) > 0 {
			o.FinishReason = FinishToolCalls
		}
	}
	out, err := json.Marshal(o)
	return out, gen, err
}

// FinishToolCalls is the finish reason of a reply that calls tools.
const FinishToolCalls = "tool_calls"

// exchanges reads a transcript's turns as the prompt's exchanges.
func exchanges(history []state.Turn) []prompt.Exchange {
	out := make([]prompt.Exchange, len(history))
	for i, h := range history {
		var g GenOutput
		json.Unmarshal(h.Output, &g)
		out[i] = prompt.Exchange{N: h.N, User: h.Text, Assistant: g.Text, ToolCalls: g.ToolCalls}
		if len(h.Messages) > 0 {
			json.Unmarshal(h.Messages, &out[i].In)
		}
	}
	return out
}

// savedMessages are the messages a turn's transcript entry keeps beside
// its reply: the request's own after its last assistant message, system
// ones aside (a tool loop's results, or the user's message); nil when that
// is one plain user message, which the entry's text holds.
func savedMessages(msgs []prompt.Message) (json.RawMessage, error) {
	from := 0
	for i, m := range msgs {
		if m.Role == "assistant" {
			from = i + 1
		}
	}
	var keep []prompt.Message
	for _, m := range msgs[from:] {
		if m.Role != "system" && m.Role != "developer" {
			keep = append(keep, m)
		}
	}
	if len(keep) == 0 || len(keep) == 1 && keep[0].Role == "user" && keep[0].ToolCallID == "" {
		return nil, nil
	}
	return json.Marshal(keep)
}

func lastEvent(s state.Session) string {
	if len(s.History) == 0 {
		return ""
	}
	return s.History[len(s.History)-1].Event
}
