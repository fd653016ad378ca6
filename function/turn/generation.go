package turn

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/sous-ai/sous/function/generate"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/telemetry"
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
}

// Any reports whether any generation setting was given.
func (g *GenParams) Any() bool {
	return g.MaxTokens != nil || g.Temperature != nil || g.TopK != nil || g.TopP != nil || g.Seed != nil || g.Stop != nil || g.Stream
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
}

// generateSettings are a checked generated turn's.
type generateSettings struct {
	params generate.Params
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
}

// NewGenerationRunner serves a decoder model through its engine.
func NewGenerationRunner(m *model.Engine, dir *tasks.Model, engine *generate.Engine, kvTokens int, metrics *telemetry.Metrics) Runner {
	return &generationRunner{m: m, dir: dir, engine: engine, metrics: metrics, kvTokens: kvTokens,
		prompts: prompt.Builder{Template: dir.Chat, Encode: dir.Tok.IDs, Positions: dir.MaxLength}}
}

func (r *generationRunner) Batched() bool { return false }

func (r *generationRunner) Model() string { return r.m.Name() }

func (r *generationRunner) Check(req *Request) error {
	if req.Text == "" || req.HasInputs {
		return BadRequest("model %s generates from text: send text, not tensors", r.m.Name())
	}
	if err := checkText(req.Text); err != nil {
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
	p.OnText = req.OnText
	req.gen = &generateSettings{params: p}
	return nil
}

// Run generates each job's reply (the service hands it one job at a time;
// the engine batches the decode steps of every sequence in flight).
func (r *generationRunner) Run(ctx context.Context, jobs []*Job, out []Computed) error {
	for i, j := range jobs {
		out[i].Output, out[i].Err = r.generate(ctx, j)
	}
	return nil
}

func (r *generationRunner) generate(ctx context.Context, j *Job) (json.RawMessage, error) {
	req := j.Req
	p := req.gen.params
	messages := req.Messages
	if messages == nil {
		messages = []prompt.Message{{Role: "user", Content: req.Text}}
	}
	ids, err := r.prompts.Build(exchanges(j.Session.History), messages, p.MaxTokens)
	if errors.Is(err, prompt.ErrTemplate) {
		return nil, BadRequest("%v", err)
	}
	if err != nil {
		return nil, err
	}
	if !req.Stateless {
		p.Session = req.Session
		p.Prev = transcriptVersion(j.Session.Turn, lastEvent(j.Session))
		p.Next = transcriptVersion(j.Session.Turn+1, req.Event)
	}
	start := time.Now()
	var first time.Time
	res, err := r.engine.Generate(ctx, ids, p, func(int64) {
		if first.IsZero() {
			first = time.Now()
		}
	})
	if errors.Is(err, generate.ErrTooLong) {
		return nil, BadRequest("%v (SOUS_KV_TOKENS %d)", err, r.kvTokens)
	}
	if err != nil {
		return nil, err
	}
	if res.Finish == generate.FinishCancelled && ctx.Err() != nil {
		// The caller left; what was made is not a turn.
		return nil, ctx.Err()
	}
	var tpot time.Duration
	if n := len(res.Tokens); n > 1 {
		tpot = time.Since(first) / time.Duration(n-1)
	}
	r.metrics.Generated(first.Sub(start), tpot, len(res.Tokens), res.PromptTokens, res.CachedTokens)
	return json.Marshal(GenOutput{Text: res.Text, FinishReason: res.Finish, PromptTokens: res.PromptTokens,
		CompletionTokens: len(res.Tokens), CachedTokens: res.CachedTokens})
}

// exchanges reads a transcript's turns as the prompt's exchanges.
func exchanges(history []state.Turn) []prompt.Exchange {
	out := make([]prompt.Exchange, len(history))
	for i, h := range history {
		var g GenOutput
		json.Unmarshal(h.Output, &g)
		out[i] = prompt.Exchange{N: h.N, User: h.Text, Assistant: g.Text}
	}
	return out
}

func lastEvent(s state.Session) string {
	if len(s.History) == 0 {
		return ""
	}
	return s.History[len(s.History)-1].Event
}
