package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// ChoicesPoint is one way of asking for four replies to one prompt: one
// chat completion with n=4, or four requests at once.
type ChoicesPoint struct {
	Mode         string  `json:"mode"` // n4 or 4_requests
	TokensPerS   float64 `json:"tokens_per_s"`
	Replies      int     `json:"replies"`
	PromptTokens int     `json:"prompt_tokens"`
}

// choicesMaxTokens is each reply's length: short beside the prompt, as
// an agent's n choices of a classification or a tool call are, so that
// the prefill the choices share is most of the work.
const choicesMaxTokens = 16

// choicesPrompt is a long prompt, the same for every request: about 220
// tokens with the template's, near the test decoder's 256 positions.
var choicesPrompt = strings.Repeat("please look at my order history for the last three months and tell me which parcels are late ", 11)

// choicesCompare serves the test decoder (512 wide, 4 layers, as the
// generation phase's) and measures generated tokens/s of four replies to
// one prompt asked as one request with n=4 (the prompt prefilled once, its
// KV shared by the four sequences) against four requests at once (four
// prefills), greedy and stateless, one group in flight at a time, in
// alternating rounds on the same process.
func (h *harness) choicesCompare(root string) (n4, separate ChoicesPoint, err error) {
	tok, err := os.ReadFile(filepath.Join(root, "function", "tokenizer", "testdata", "tokenizers", "all-minilm-l6-v2.json"))
	if err != nil {
		return n4, separate, err
	}
	dir := h.TempDir()
	if err := testmodels.DecoderSized(dir, "choices", tok, 512, 4, 8); err != nil {
		return n4, separate, err
	}
	p := h.startSous("SOUS_MODEL="+filepath.Join(dir, "choices"), "SOUS_STATE=memory")
	defer p.stop()
	// Warm up first: the first runs of each shape pay for allocation.
	for _, mode := range []string{"n4", "4_requests"} {
		if _, err := choicesLoad(p.url, mode, time.Second); err != nil {
			return n4, separate, err
		}
	}
	rounds := map[string][]ChoicesPoint{}
	for round := range genRounds {
		for _, mode := range []string{"n4", "4_requests"} {
			pt, err := choicesLoad(p.url, mode, genDuration())
			if err != nil {
				return n4, separate, err
			}
			rounds[mode] = append(rounds[mode], pt)
			fmt.Printf("%-52s %8.1f tokens/s  (%d replies, %d prompt tokens)\n",
				fmt.Sprintf("choices/%s (round %d)", mode, round+1), pt.TokensPerS, pt.Replies, pt.PromptTokens)
		}
	}
	mean := func(ps []ChoicesPoint) ChoicesPoint {
		m := ChoicesPoint{Mode: ps[0].Mode, PromptTokens: ps[0].PromptTokens}
		for _, p := range ps {
			m.TokensPerS += p.TokensPerS / float64(len(ps))
			m.Replies += p.Replies
		}
		return m
	}
	return mean(rounds["n4"]), mean(rounds["4_requests"]), nil
}

// choicesLoad asks for groups of four replies, one group at a time, for
// d, and counts the completion tokens of the groups that finished.
func choicesLoad(url, mode string, d time.Duration) (ChoicesPoint, error) {
	pt := ChoicesPoint{Mode: mode}
	ask := func(n int) (completion, prompt, replies int, err error) {
		body, _ := json.Marshal(map[string]any{"messages": []map[string]string{{"role": "user", "content": choicesPrompt}},
			"max_tokens": choicesMaxTokens, "temperature": 0, "n": n})
		resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
		if err != nil {
			return 0, 0, 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r struct {
			Choices []json.RawMessage `json:"choices"`
			Usage   struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(b, &r); err != nil || resp.StatusCode != http.StatusOK || len(r.Choices) != n {
			return 0, 0, 0, fmt.Errorf("choices/%s: %d choices (want %d): %d %s", mode, len(r.Choices), n, resp.StatusCode, b)
		}
		return r.Usage.CompletionTokens, r.Usage.PromptTokens, len(r.Choices), nil
	}
	tokens := 0
	start := time.Now()
	for time.Since(start) < d {
		switch mode {
		case "n4":
			c, p, n, err := ask(4)
			if err != nil {
				return pt, err
			}
			tokens, pt.PromptTokens, pt.Replies = tokens+c, p, pt.Replies+n
		default:
			var wg sync.WaitGroup
			var mu sync.Mutex
			var first error
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, p, n, err := ask(1)
					mu.Lock()
					defer mu.Unlock()
					if err != nil && first == nil {
						first = err
					}
					tokens, pt.PromptTokens, pt.Replies = tokens+c, p, pt.Replies+n
				}()
			}
			wg.Wait()
			if first != nil {
				return pt, first
			}
		}
	}
	pt.TokensPerS = float64(tokens) / time.Since(start).Seconds()
	return pt, nil
}

// reportChoices prints the ratio of the two ways.
func reportChoices(n4, separate ChoicesPoint) {
	if separate.TokensPerS > 0 {
		fmt.Printf("RATIO n4_vs_4_requests_tokens_per_s %.2f >=1.3\n", n4.TokensPerS/separate.TokensPerS)
	}
}
