package main

import (
	"bufio"
	"context"
	"fmt"
	"image/color"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// GenPoint is one generation measurement: concurrent sessions, each a
// closed-loop client streaming /turn replies of maxGenTokens tokens.
type GenPoint struct {
	Form       string  `json:"form"` // optimum (past/present) or gqa (GroupQueryAttention, shared buffer)
	Mode       string  `json:"mode"` // continuous (SOUS_MAX_BATCH=32) or one-at-a-time (1)
	Sessions   int     `json:"sessions"`
	TokensPerS float64 `json:"tokens_per_s"`
	Turns      int     `json:"turns"`
	TTFTp50ms  float64 `json:"ttft_p50_ms"`
	TTFTp99ms  float64 `json:"ttft_p99_ms"`
	TPOTp50ms  float64 `json:"tpot_p50_ms"`
	TPOTp99ms  float64 `json:"tpot_p99_ms"`
}

const maxGenTokens = 32

// genDuration is how long each generation point runs: BENCH_DURATION, but
// at least 10 s. At 32 sessions a point of 3 s holds a few dozen replies,
// most of them in the burst of prefills at its start, and its tokens/s
// says little about steady generation (a full make bench at 3 s gave 2.37
// for a build that gives 4.4-4.7 at 10 s).
func genDuration() time.Duration { return max(duration, 10*time.Second) }

// genRounds is how many times each generation point runs.
const genRounds = 2

// meanPoint is the mean of one point's rounds (turns summed).
func meanPoint(rounds []GenPoint) GenPoint {
	m := rounds[0]
	m.TokensPerS, m.TTFTp50ms, m.TTFTp99ms, m.TPOTp50ms, m.TPOTp99ms, m.Turns = 0, 0, 0, 0, 0, 0
	for _, r := range rounds {
		m.TokensPerS += r.TokensPerS / float64(len(rounds))
		m.TTFTp50ms += r.TTFTp50ms / float64(len(rounds))
		m.TTFTp99ms += r.TTFTp99ms / float64(len(rounds))
		m.TPOTp50ms += r.TPOTp50ms / float64(len(rounds))
		m.TPOTp99ms += r.TPOTp99ms / float64(len(rounds))
		m.Turns += r.Turns
	}
	return m
}

// genForms are the decoder forms benchmarked, by model directory name.
var genForms = []string{"optimum", "gqa"}

// generationCompare runs a test decoder (testmodels.DecoderForm) in each
// form, Optimum's and GroupQueryAttention's (same weights), with 1, 8 and
// 32 concurrent sessions, decode steps batched across sessions (continuous
// batching, SOUS_MAX_BATCH=32) against one sequence at a time
// (SOUS_MAX_BATCH=1), side by side in alternating rounds, and plots the
// rounds' mean tokens/s.
func (h *harness) generationCompare(root string) ([]GenPoint, error) {
	tok, err := os.ReadFile(filepath.Join(root, "function", "tokenizer", "testdata", "tokenizers", "all-minilm-l6-v2.json"))
	if err != nil {
		return nil, err
	}
	dir := h.TempDir()
	// 512 wide, 4 layers of 8 heads, the 30,522-token vocabulary: about
	// 100 MB of weights, more than the caches hold, as any real decoder.
	for _, f := range genForms {
		if err := testmodels.DecoderForm(dir, f, tok, 512, 4, 8, 8, f == "gqa"); err != nil {
			return nil, err
		}
	}
	var points []GenPoint
	for _, sessions := range []int{1, 8, 32} {
		// Rounds alternate the forms and modes, so that the machine's
		// drift falls on all of them alike; a point is the rounds' mean.
		rounds := map[string][]GenPoint{}
		for round := range genRounds {
			for _, f := range genForms {
				for _, mode := range []string{"continuous", "one-at-a-time"} {
					mb := "32"
					if mode == "one-at-a-time" {
						mb = "1"
					}
					env := []string{"SOUS_MODEL=" + filepath.Join(dir, f), "SOUS_STATE=memory", "SOUS_MAX_BATCH=" + mb}
					profile := ""
					if sessions == 32 && round == 0 && f == genForms[len(genForms)-1] && mode == "continuous" {
						profile = os.Getenv("BENCH_GEN_PROFILE")
					}
					p := h.startSousProfiled(profile, env...)
					g := streamLoad(p.url, sessions, genDuration())
					p.stop()
					g.Form, g.Mode, g.Sessions = f, mode, sessions
					rounds[f+mode] = append(rounds[f+mode], g)
					fmt.Printf("%-52s %8.0f tokens/s  TTFT p50 %7.1f p99 %7.1f ms  TPOT p50 %6.2f p99 %6.2f ms  (%d turns)\n",
						fmt.Sprintf("generation/%s/%s, %d sessions (round %d)", f, mode, sessions, round+1), g.TokensPerS, g.TTFTp50ms, g.TTFTp99ms, g.TPOTp50ms, g.TPOTp99ms, g.Turns)
				}
			}
		}
		for _, f := range genForms {
			for _, mode := range []string{"continuous", "one-at-a-time"} {
				points = append(points, meanPoint(rounds[f+mode]))
			}
		}
	}
	return points, nil
}

// streamLoad runs sessions closed-loop clients for d, each streaming /turn
// replies (greedy, maxGenTokens, a new session per turn so that prompts
// stay the same length). Tokens count when their event arrives within d
// (turns still running at the end are cut off there); time to first token
// is measured per turn from its request, time per output token from its
// first token to its last one received.
func streamLoad(url string, sessions int, d time.Duration) GenPoint {
	var tally genTally
	start := time.Now()
	deadline := start.Add(d)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	for c := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				body := fmt.Sprintf(`{"session":"gen-%d-%d","text":"hello there, can you help me with my order","max_tokens":%d,"stream":true}`, c, n, maxGenTokens)
				sent := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/turn", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				var first, last time.Time
				count := 0
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if sc.Text() == "event: token" {
						last = time.Now()
						if first.IsZero() {
							first = last
						}
						count++
					}
				}
				resp.Body.Close()
				tally.add(count, sent, first, last)
			}
		}()
	}
	wg.Wait()
	return tally.point(d)
}

// genTally gathers a streaming load's turns from its clients. Its
// methods may be called concurrently.
type genTally struct {
	mu            sync.Mutex
	tokens, turns int
	ttft, tpot    []float64
}

// add records one turn sent at sent whose count tokens arrived from
// first to last (first zero: none did, and only its tokens count).
func (g *genTally) add(count int, sent, first, last time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.tokens += count
	if first.IsZero() {
		return
	}
	g.turns++
	g.ttft = append(g.ttft, ms(first.Sub(sent)))
	if count > 1 {
		g.tpot = append(g.tpot, ms(last.Sub(first))/float64(count-1))
	}
}

// point is the tally over d.
func (g *genTally) point(d time.Duration) GenPoint {
	g.mu.Lock()
	defer g.mu.Unlock()
	return genPoint(g.tokens, g.turns, d, g.ttft, g.tpot)
}

// genPoint is a load's tokens/s over d and the p50 and p99 of its turns'
// times to first token and per output token (ms; sorted here).
func genPoint(tokens, turns int, d time.Duration, ttft, tpot []float64) GenPoint {
	sort.Float64s(ttft)
	sort.Float64s(tpot)
	return GenPoint{TokensPerS: float64(tokens) / d.Seconds(), Turns: turns,
		TTFTp50ms: quantile(ttft, 0.5), TTFTp99ms: quantile(ttft, 0.99), TPOTp50ms: quantile(tpot, 0.5), TPOTp99ms: quantile(tpot, 0.99)}
}

// plotGeneration writes tokens/s against concurrent sessions, continuous
// batching against one sequence at a time.
func plotGeneration(path string, points []GenPoint) error {
	p := plot.New()
	p.Title.Text = "sous: generated tokens/s (test decoder 512 wide, 4 layers; 2 vCPU)"
	p.X.Label.Text = "concurrent sessions"
	p.Y.Label.Text = "generated tokens/s"
	p.Legend.Top, p.Legend.Left = true, true
	for _, m := range []struct {
		form, mode, label string
		c                 color.RGBA
		dashed            bool
	}{
		{"optimum", "continuous", "continuous batching (Optimum past/present)", color.RGBA{R: 31, G: 119, B: 180, A: 255}, false},
		{"gqa", "continuous", "continuous batching (GroupQueryAttention, shared buffer)", color.RGBA{R: 44, G: 160, B: 44, A: 255}, false},
		{"optimum", "one-at-a-time", "one sequence at a time (Optimum)", color.RGBA{R: 214, G: 39, B: 40, A: 255}, true},
		{"gqa", "one-at-a-time", "one sequence at a time (GroupQueryAttention)", color.RGBA{R: 255, G: 127, B: 14, A: 255}, true},
	} {
		var xy plotter.XYs
		for _, pt := range points {
			if pt.Form == m.form && pt.Mode == m.mode {
				xy = append(xy, plotter.XY{X: float64(pt.Sessions), Y: pt.TokensPerS})
			}
		}
		if len(xy) == 0 {
			continue
		}
		if err := addLine(p, xy, m.label, m.c, m.dashed); err != nil {
			return err
		}
	}
	return p.Save(7*vg.Inch, 4*vg.Inch, path)
}

// reportGeneration prints the continuous-batching ratio at 32 sessions and
// plots the points.
func reportGeneration(points []GenPoint) error {
	by := map[string]GenPoint{}
	for _, p := range points {
		by[fmt.Sprint(p.Form, p.Mode, p.Sessions)] = p
	}
	for _, f := range genForms {
		for _, n := range []int{1, 8, 32} {
			c, o := by[fmt.Sprint(f, "continuous", n)], by[fmt.Sprint(f, "one-at-a-time", n)]
			goal := ""
			if n == 32 {
				goal = ">=4"
			}
			fmt.Printf("RATIO continuous_vs_one_at_a_time_tokens_per_s_%s_%d_sessions %.2f %s\n", f, n, c.TokensPerS/o.TokensPerS, goal)
		}
	}
	for _, n := range []int{1, 8, 32} {
		g, o := by[fmt.Sprint("gqa", "continuous", n)], by[fmt.Sprint("optimum", "continuous", n)]
		fmt.Printf("RATIO gqa_vs_optimum_continuous_tokens_per_s_%d_sessions %.2f\n", n, g.TokensPerS/o.TokensPerS)
	}
	path := env("BENCH_GEN_PLOT", "docs/generation.svg")
	if err := plotGeneration(path, points); err != nil {
		return err
	}
	fmt.Printf("wrote %s\n", path)
	return nil
}
