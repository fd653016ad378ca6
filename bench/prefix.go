package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// prefixTurns is the turn of a conversation whose time to first token the
// prefix cache comparison measures.
const prefixTurns = 10

// PrefixPoint is the time to first token of turn prefixTurns of
// conversations, with or without the prefix cache.
type PrefixPoint struct {
	Cache         bool    `json:"cache"`
	Conversations int     `json:"conversations"`
	TTFTp50ms     float64 `json:"ttft_p50_ms"`
	TTFTmaxms     float64 `json:"ttft_max_ms"`
	PromptTokens  int     `json:"prompt_tokens"` // of the last conversation's turn 10
	CachedTokens  int     `json:"cached_tokens"`
}

// prefixCompare runs conversations of prefixTurns turns, one at a time,
// against sous serving the generation benchmark's decoder (Optimum's
// form) with the prefix cache (the default SOUS_PREFIX_CACHE_BYTES) and
// without it (0), alternating, and reports the time to first token of
// each conversation's last turn: with the cache only that turn's message
// is prefilled, without it the whole transcript.
func (h *harness) prefixCompare(root string, conversations int) ([2]PrefixPoint, error) {
	tok, err := os.ReadFile(filepath.Join(root, "function", "tokenizer", "testdata", "tokenizers", "all-minilm-l6-v2.json"))
	if err != nil {
		return [2]PrefixPoint{}, err
	}
	// Without the tokenizer's truncation (256) the window is the decoder's
	// 512 positions, which turn 10 fits: a transcript cut at the front
	// changes the prompt's first tokens every turn, and no cache helps.
	var tj map[string]any
	if err := json.Unmarshal(tok, &tj); err != nil {
		return [2]PrefixPoint{}, err
	}
	tj["truncation"] = nil
	tok, _ = json.Marshal(tj)
	dir := h.TempDir()
	if err := testmodels.DecoderForm(dir, "optimum", tok, 512, 4, 8, 8, false); err != nil {
		return [2]PrefixPoint{}, err
	}
	var pts [2]PrefixPoint
	ttft := [2][]float64{}
	for c := range conversations {
		for i, cache := range []bool{true, false} {
			env := []string{"SOUS_MODEL=" + filepath.Join(dir, "optimum"), "SOUS_STATE=memory"}
			if !cache {
				env = append(env, "SOUS_PREFIX_CACHE_BYTES=0")
			}
			p := h.startSous(env...)
			var last prefixTurn
			for turn := 1; turn <= prefixTurns; turn++ {
				last, err = streamedTurn(p.url, fmt.Sprintf("conv-%d", c), fmt.Sprintf("and what about item %d of my order?", turn))
				if err != nil {
					p.stop()
					return pts, err
				}
			}
			p.stop()
			ttft[i] = append(ttft[i], last.ttft)
			pts[i] = PrefixPoint{Cache: cache, Conversations: c + 1, PromptTokens: last.prompt, CachedTokens: last.cached}
		}
	}
	for i := range pts {
		sort.Float64s(ttft[i])
		pts[i].TTFTp50ms, pts[i].TTFTmaxms = ttft[i][len(ttft[i])/2], ttft[i][len(ttft[i])-1]
		fmt.Printf("%-52s TTFT p50 %7.1f max %7.1f ms  (%d-token prompt, %d from the cache)\n",
			fmt.Sprintf("prefix cache %v, turn %d", map[bool]string{true: "on", false: "off"}[pts[i].Cache], prefixTurns),
			pts[i].TTFTp50ms, pts[i].TTFTmaxms, pts[i].PromptTokens, pts[i].CachedTokens)
	}
	fmt.Printf("RATIO prefix_cache_ttft_turn_%d_off_vs_on %.2f\n", prefixTurns, pts[1].TTFTp50ms/pts[0].TTFTp50ms)
	return pts, nil
}

type prefixTurn struct {
	ttft           float64 // ms
	prompt, cached int
}

// streamedTurn runs one /turn of session, streamed, greedy, 8 tokens, and
// returns its time to first token and its token counts.
func streamedTurn(url, session, text string) (prefixTurn, error) {
	body := fmt.Sprintf(`{"session":%q,"text":%q,"max_tokens":8,"stream":true}`, session, text)
	sent := time.Now()
	resp, err := http.Post(url+"/turn", "application/json", strings.NewReader(body))
	if err != nil {
		return prefixTurn{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return prefixTurn{}, fmt.Errorf("/turn: %s", resp.Status)
	}
	var r prefixTurn
	event := ""
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
			if event == "token" && r.ttft == 0 {
				r.ttft = ms(time.Since(sent))
			}
		case strings.HasPrefix(line, "data: ") && event == "done":
			var done struct {
				Output struct {
					PromptTokens int `json:"prompt_tokens"`
					CachedTokens int `json:"cached_tokens"`
				} `json:"output"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &done); err != nil {
				return r, err
			}
			r.prompt, r.cached = done.Output.PromptTokens, done.Output.CachedTokens
		}
	}
	return r, sc.Err()
}
