package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sous-ai/sous/function/grammar"
	"github.com/sous-ai/sous/function/tasks/testmodels"
	"github.com/sous-ai/sous/function/tokenizer"
)

// structuredSchema is the benchmark's response format: bounded, so that
// the random-weight test LLM closes it within its budget of tokens, with
// the keywords agents' schemas use most (nested object, enum, integer
// range, bounded string and array, a nullable field).
const structuredSchema = `{"type":"object","properties":{
 "name":{"type":"string","maxLength":12},
 "age":{"type":"integer","minimum":0,"maximum":120},
 "mood":{"enum":["happy","sad","calm"]},
 "tags":{"type":"array","items":{"type":"string","maxLength":6},"maxItems":3},
 "address":{"type":"object","properties":{"city":{"type":"string","maxLength":10},"zip":{"anyOf":[{"type":"integer","minimum":10000,"maximum":99999},{"type":"null"}]}},"required":["city","zip"],"additionalProperties":false}
},"required":["name","age","mood","tags","address"],"additionalProperties":false}`

// StructuredPoint is one side of the structured-outputs comparison: 32
// closed-loop sessions streaming /turn replies of the test LLM, every turn
// constrained by structuredSchema or none.
type StructuredPoint struct {
	Constrained bool    `json:"constrained"`
	TokensPerS  float64 `json:"tokens_per_s"`
	Turns       int     `json:"turns"`
	Stopped     int     `json:"finish_stop"`
	Valid       int     `json:"valid"`
	TPOTp50ms   float64 `json:"tpot_p50_ms"`
	Tokens      int     `json:"tokens"`
}

// structuredMaxTokens is every turn's budget: the schema's longest
// instance is about 60 tokens of Qwen3's vocabulary.
const structuredMaxTokens = 96

// structuredCompare serves the test LLM (fp32) and runs 32 sessions free
// and constrained in alternating rounds, then measures the grammar's mask
// at the 151k-token vocabulary in this process.
func (h *harness) structuredCompare(root string) error {
	qwen := filepath.Join(root, ".cache", "llm-tokenizers", "qwen3")
	dir := h.TempDir()
	if err := testmodels.LLM(dir, qwen); err != nil {
		return fmt.Errorf("the test LLM (make llm-tokenizers first): %w", err)
	}
	schema, err := jsonschema.UnmarshalJSON(strings.NewReader(structuredSchema))
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("bench.json", schema); err != nil {
		return err
	}
	validator, err := c.Compile("bench.json")
	if err != nil {
		return err
	}
	p := h.startSous("SOUS_MODEL="+filepath.Join(dir, "llm"), "SOUS_STATE=memory")
	defer p.stop()
	var free, constrained []StructuredPoint
	for round := range genRounds {
		for _, on := range []bool{false, true} {
			pt := structuredLoad(p.url, 32, structuredTurns, on, validator)
			fmt.Printf("%-52s %8.0f tokens/s  TPOT p50 %6.2f ms  %d turns (%.0f tokens each), %d finished stop, %d valid\n",
				fmt.Sprintf("structured/constrained=%v, 32 sessions (round %d)", on, round+1), pt.TokensPerS, pt.TPOTp50ms, pt.Turns, float64(pt.Tokens)/float64(max(pt.Turns, 1)), pt.Stopped, pt.Valid)
			if on {
				constrained = append(constrained, pt)
			} else {
				free = append(free, pt)
			}
		}
	}
	mean := func(ps []StructuredPoint) float64 {
		s := 0.0
		for _, p := range ps {
			s += p.TokensPerS / float64(len(ps))
		}
		return s
	}
	fmt.Printf("RATIO constrained_vs_free_tokens_per_s_32_sessions %.2f >=0.8\n", mean(constrained)/mean(free))
	return maskTimes(qwen)
}

// structuredTurns is how many turns each session runs per point: a fixed
// amount of work timed to its end, so that no turn is cut off (a
// constrained turn ends sooner than a free one, and a cut at a deadline
// would count the two kinds differently).
const structuredTurns = 3

// structuredLoad runs sessions closed-loop clients, each streaming turns
// /turn replies of structuredMaxTokens, constrained or not, a new session
// per turn; tokens/s is all turns' tokens over the time until the last
// ends. A turn's tokens are the completion_tokens of its "done" event (the
// token events carry text, and a token that completes no character yet
// sends none); its text is checked against the schema by a validator that
// is not sous's.
func structuredLoad(url string, sessions, turns int, constrained bool, v *jsonschema.Schema) StructuredPoint {
	format := ""
	if constrained {
		format = `,"response_format":{"type":"json_schema","json_schema":{"name":"person","strict":true,"schema":` + structuredSchema + `}}`
	}
	var mu sync.Mutex
	pt := StructuredPoint{Constrained: constrained}
	var tpot []float64
	tokens := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < turns && ctx.Err() == nil; n++ {
				body := fmt.Sprintf(`{"session":"structured-%v-%d-%d","text":"describe a person as JSON","max_tokens":%d,"temperature":1,"seed":%d,"stream":true%s}`,
					constrained, c, n, structuredMaxTokens, c*1000+n+1, format)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/turn", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				var first time.Time
				var done []byte
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(nil, 1<<20)
				last := ""
				for sc.Scan() {
					line := sc.Text()
					if line == "event: token" && first.IsZero() {
						first = time.Now()
					}
					if data, ok := strings.CutPrefix(line, "data: "); ok && last == "event: done" {
						done = []byte(data)
					}
					last = line
				}
				end := time.Now()
				resp.Body.Close()
				var reply struct {
					Output struct {
						Text             string `json:"text"`
						FinishReason     string `json:"finish_reason"`
						CompletionTokens int    `json:"completion_tokens"`
					} `json:"output"`
				}
				if done == nil || json.Unmarshal(done, &reply) != nil {
					continue
				}
				o := reply.Output
				mu.Lock()
				pt.Turns++
				tokens += o.CompletionTokens
				if o.FinishReason == "stop" {
					pt.Stopped++
				}
				if inst, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(o.Text))); err == nil && v.Validate(inst) == nil {
					pt.Valid++
				}
				if o.CompletionTokens > 1 && !first.IsZero() {
					tpot = append(tpot, ms(end.Sub(first))/float64(o.CompletionTokens-1))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	pt.Tokens = tokens
	pt.TokensPerS = float64(tokens) / time.Since(start).Seconds()
	slices.Sort(tpot)
	pt.TPOTp50ms = quantile(tpot, 0.5)
	return pt
}

// maskTimes measures the grammar's work per decode step at Qwen3's
// vocabulary, in this process, as the engine does it: a full mask
// (FillMask) of the state each step is in, along random walks through
// structuredSchema's automaton that pick a random allowed token each step.
// The first walks meet states whose masks are not cached yet (cold); the
// p99 over all steps includes them.
func maskTimes(qwen string) error {
	tok, err := tokenizer.Load(filepath.Join(qwen, "tokenizer.json"))
	if err != nil {
		return err
	}
	tokens := make([][]byte, tok.VocabSize())
	for id := range tokens {
		if !tok.IsSpecial(int64(id)) {
			tokens[id] = tok.TokenBytes(int64(id))
		}
	}
	var eos []int
	if id, ok := tok.EOS(); ok {
		eos = append(eos, int(id))
	}
	vocab, err := grammar.NewVocab(tokens, eos)
	if err != nil {
		return err
	}
	g, err := grammar.Compile([]byte(structuredSchema), grammar.Options{})
	if err != nil {
		return err
	}
	// As many cached masks as a request's constraint keeps in sous.
	con := grammar.NewConstraint(g, vocab, 256)
	rng := rand.New(rand.NewPCG(1, 2))
	mask := make([]uint64, vocab.MaskWords())
	var steps, steady []float64
	for walk := range 64 {
		m := con.NewMatcher()
		for step := 0; step < structuredMaxTokens && !m.Done(); step++ {
			t0 := time.Now()
			m.FillMask(mask)
			us := float64(time.Since(t0).Nanoseconds()) / 1e3
			steps = append(steps, us)
			if walk >= 8 {
				steady = append(steady, us)
			}
			var allowed []int
			for i, w := range mask {
				for ; w != 0; w &= w - 1 {
					allowed = append(allowed, i*64+bits.TrailingZeros64(w))
				}
			}
			if len(allowed) == 0 {
				break
			}
			id := allowed[rng.IntN(len(allowed))]
			if slices.Contains(eos, id) {
				break
			}
			if err := m.Accept(id); err != nil {
				return fmt.Errorf("mask allowed token %d that Accept refused: %w", id, err)
			}
		}
	}
	slices.Sort(steps)
	slices.Sort(steady)
	q := quantile
	fmt.Printf("structured/mask per step at %d tokens: p50 %.1f µs  p99 %.1f µs  (%d steps over 64 random walks); after the first 8 walks p50 %.1f µs  p99 %.1f µs\n",
		vocab.Size(), q(steps, 0.5), q(steps, 0.99), len(steps), q(steady, 0.5), q(steady, 0.99))
	return nil
}
