package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/color"
	"log"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/sous-ai/sous/function/config"
	"github.com/sous-ai/sous/function/generate"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/model/onnxgen"
	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// LLMPoint is one variant of the test LLM (Qwen3's vocabulary) served by
// sous: tokens/s of streamed /turn replies at 1 and 32 concurrent
// sessions, and the process's resident memory once loaded.
type LLMPoint struct {
	DType       string  `json:"dtype"`
	FileMB      float64 `json:"file_mb"`
	RSSMB       float64 `json:"rss_after_load_mb"`
	TokensPerS1 float64 `json:"tokens_per_s_1_session"`
	TokensPer32 float64 `json:"tokens_per_s_32_sessions"`
	TTFTp50ms32 float64 `json:"ttft_p50_ms_32_sessions"`
	TPOTp50ms32 float64 `json:"tpot_p50_ms_32_sessions"`
	// Latency at 1, 8 and 32 sessions (8: fp32 and q4 only).
	Latency map[int]GenPoint `json:"latency"`
	// BandwidthFraction is batch-1 decode's weight traffic (1 / TPOT p50
	// at 1 session × the weight bytes a token reads) over the machine's
	// copy bandwidth measured in the same run.
	BandwidthFraction float64 `json:"batch1_bandwidth_fraction"`
}

// llmText is each session's message, as /turn and the chat route get it.
const llmText = "hello there, can you help me with my order"

// llmCompare builds the test LLM (testmodels.LLM) and serves each of its
// onnx-community variants in turn, one fresh process each, side by side in
// one run; then, on fp32, sous against one sequence at a time, its HTTP
// serving against the engine driven in-process, running sessions' time
// per token under a burst of long prompts, the prefill's last-position
// logits against every position's, and transformers.js serving the same
// requests.
func (h *harness) llmCompare(root string) ([]LLMPoint, error) {
	dir := h.TempDir()
	if err := testmodels.LLM(dir, filepath.Join(root, ".cache", "llm-tokenizers", "qwen3")); err != nil {
		return nil, fmt.Errorf("the test LLM (make llm-tokenizers first): %w", err)
	}
	llm := filepath.Join(dir, "llm")
	bw := memBandwidth()
	fmt.Printf("llm: memory bandwidth (copy of %d MiB, read + write) %.2f GB/s\n", bwBytes>>20, bw/1e9)
	var points []LLMPoint
	for _, v := range testmodels.LLMVariants {
		p := h.startSous("SOUS_MODEL="+llm, "SOUS_MODEL_DTYPE="+v.DType, "SOUS_STATE=memory")
		pt := LLMPoint{DType: v.DType, RSSMB: rssMB(p.pid), Latency: map[int]GenPoint{}}
		var weights float64
		if st, err := os.Stat(filepath.Join(llm, v.File)); err == nil {
			pt.FileMB = float64(st.Size()) / 1e6
			weights = float64(st.Size()) - embedBytes(v)
		}
		sessions := []int{1, 32}
		if v.DType == "fp32" || v.DType == "q4" {
			sessions = []int{1, 8, 32}
		}
		for _, n := range sessions {
			if prof := os.Getenv("BENCH_LLM_PROFILE"); prof != "" && n == 32 && v.DType == "fp32" {
				// A CPU profile of this point: sous restarted with pprof.
				p.stop()
				p = h.startSousProfiled(prof, "SOUS_MODEL="+llm, "SOUS_MODEL_DTYPE="+v.DType, "SOUS_STATE=memory")
			}
			g := streamLoad(p.url, n, genDuration())
			g.Form, g.Mode, g.Sessions = v.DType, "continuous", n
			pt.Latency[n] = g
			fmt.Printf("llm/%-6s %2d sessions %7.1f tokens/s  TTFT p50 %7.1f p99 %7.1f ms  TPOT p50 %6.2f p99 %6.2f ms  (%d turns)\n",
				v.DType, n, g.TokensPerS, g.TTFTp50ms, g.TTFTp99ms, g.TPOTp50ms, g.TPOTp99ms, g.Turns)
		}
		p.stop()
		one, many := pt.Latency[1], pt.Latency[32]
		pt.TokensPerS1, pt.TokensPer32 = one.TokensPerS, many.TokensPerS
		pt.TTFTp50ms32, pt.TPOTp50ms32 = many.TTFTp50ms, many.TPOTp50ms
		if one.TPOTp50ms > 0 && bw > 0 {
			pt.BandwidthFraction = 1000 / one.TPOTp50ms * weights / bw
		}
		points = append(points, pt)
		fmt.Printf("llm/%-6s file %6.1f MB  RSS after load %6.1f MB  1 session %7.1f tokens/s  32 sessions %7.1f tokens/s (TTFT p50 %.0f ms, TPOT p50 %.1f ms)\n",
			pt.DType, pt.FileMB, pt.RSSMB, pt.TokensPerS1, pt.TokensPer32, pt.TTFTp50ms32, pt.TPOTp50ms32)
		fmt.Printf("llm/%-6s batch 1: %.1f tokens/s × %.1f MB of weights read per token = %.2f GB/s\n",
			pt.DType, 1000/max(one.TPOTp50ms, 1e-9), weights/1e6, 1000/max(one.TPOTp50ms, 1e-9)*weights/1e9)
	}
	byType := map[string]LLMPoint{}
	for _, p := range points {
		byType[p.DType] = p
	}
	if f, q := byType["fp32"], byType["q4"]; f.RSSMB > 0 && q.RSSMB > 0 {
		fmt.Printf("RATIO llm_q4_vs_fp32_rss_after_load %.2f\n", q.RSSMB/f.RSSMB)
	}
	for _, p := range points {
		if p.TokensPerS1 > 0 {
			fmt.Printf("RATIO llm_%s_32_vs_1_session_tokens_per_s %.2f\n", p.DType, p.TokensPer32/p.TokensPerS1)
		}
	}
	for _, p := range points {
		goal := ""
		if p.DType == "fp32" {
			goal = " (goal >= 0.6)"
		}
		fmt.Printf("RATIO llm_batch1_bandwidth_fraction_%s %.2f%s\n", p.DType, p.BandwidthFraction, goal)
	}
	if err := plotLLMLatency(env("BENCH_LLM_PLOT", "docs/llm-latency.svg"), points); err != nil {
		return nil, err
	}

	// fp32, 32 sessions: decode steps batched across sessions against
	// one sequence at a time, and the chat route (streamed) against the
	// engine driven in a process of its own. Rounds alternate every side,
	// so that the machine's drift falls on all of them alike; each side
	// is its rounds' mean.
	fp32 := []string{"SOUS_MODEL=" + llm, "SOUS_MODEL_DTYPE=fp32", "SOUS_STATE=memory"}
	var cont, alone, chat, eng float64
	for round := range genRounds {
		p := h.startSous(fp32...)
		c := streamLoad(p.url, 32, genDuration())
		ch := chatLoad(p.url, 32, genDuration())
		p.stop()
		p = h.startSous(append(fp32, "SOUS_MAX_BATCH=1")...)
		a := streamLoad(p.url, 32, genDuration())
		p.stop()
		e, err := engineProcess(llm, "fp32")
		if err != nil {
			return nil, err
		}
		fmt.Printf("llm/fp32 32 sessions (round %d): continuous %7.1f tokens/s, one at a time %7.1f; /v1/chat/completions streamed %7.1f (TTFT p50 %.0f ms, TPOT p50 %.2f ms), engine in a process of its own %7.1f\n",
			round+1, c.TokensPerS, a.TokensPerS, ch.TokensPerS, ch.TTFTp50ms, ch.TPOTp50ms, e)
		n := float64(genRounds)
		cont, alone, chat, eng = cont+c.TokensPerS/n, alone+a.TokensPerS/n, chat+ch.TokensPerS/n, eng+e/n
	}
	if alone > 0 {
		fmt.Printf("RATIO llm_continuous_vs_one_at_a_time_tokens_per_s_32_sessions %.2f (goal >= 4)\n", cont/alone)
	}
	if eng > 0 {
		fmt.Printf("RATIO llm_serving_vs_engine_tokens_per_s_32_sessions %.2f (goal >= 0.9)\n", chat/eng)
	}

	// fp32: 16 running sessions, then 16 prompts of 512 tokens at once;
	// the prefill chunk swept, its default's ratio the one with a goal.
	long, err := longText(llm, 512)
	if err != nil {
		return nil, err
	}
	for _, chunk := range []int{0, 256, config.DefaultPrefillChunk} {
		p := h.startSous(append(fp32, "SOUS_PREFILL_CHUNK="+strconv.Itoa(chunk))...)
		steady := burstLoad(p.url, 16, 0, long, genDuration())
		burst := burstLoad(p.url, 16, 16, long, genDuration())
		p.stop()
		fmt.Printf("llm/fp32 SOUS_PREFILL_CHUNK=%d: 16 sessions' time between tokens p50 %.2f p99 %.2f ms steady, p50 %.2f p99 %.2f ms while 16 prompts of 512 tokens fill (their TTFT p50 %.0f, last %.0f ms)\n",
			chunk, steady.p50, steady.p99, burst.p50, burst.p99, burst.ttftP50, burst.ttftMax)
		if steady.p99 > 0 {
			name, goal := fmt.Sprintf("llm_tpot_p99_prefill_burst_vs_steady_chunk_%d", chunk), ""
			if chunk == config.DefaultPrefillChunk {
				name, goal = "llm_tpot_p99_prefill_burst_vs_steady", " (goal <= 2)"
			}
			fmt.Printf("RATIO %s %.2f%s\n", name, burst.p99/steady.p99, goal)
		}
	}

	// llm-fp16 (no num_logits_to_keep): a 512-token prompt's time to
	// first token through the graph derived at load against the graph as
	// exported, and the memory each session takes.
	d, err := derivedCompare(filepath.Join(dir, "llm-fp16"), 512)
	if err != nil {
		return nil, err
	}
	fmt.Printf("llm-fp16 TTFT of a 512-token prompt: derived graph (last position's logits) %.1f ms, as exported %.1f ms; RSS taken by the session: derived %.1f MB, as exported %.1f MB\n",
		ms(d.derived), ms(d.exported), d.derivedMB, d.exportedMB)
	fmt.Printf("RATIO llm_prefill_last_position_logits_speedup %.2f (goal >= 3)\n", d.exported.Seconds()/d.derived.Seconds())
	// fp32 through its own num_logits_to_keep: 1 (what sous feeds)
	// against 0 (every position's logits).
	last, all, err := prefillTimes(llm, 512)
	if err != nil {
		return nil, err
	}
	fmt.Printf("llm/fp32 prefill of 512 tokens: num_logits_to_keep 1 %.1f ms, 0 (every position) %.1f ms\n", ms(last), ms(all))
	fmt.Printf("RATIO llm_prefill_num_logits_to_keep_speedup %.2f\n", all.Seconds()/last.Seconds())

	// transformers.js serving the same 32 concurrent requests.
	tjs, err := h.transformersJS(root, llm, "fp32", 32, genDuration())
	if err != nil {
		return nil, err
	}
	fmt.Printf("llm/fp32 32 sessions: transformers.js (Node HTTP server around generate()) %7.1f tokens/s\n", tjs)
	if tjs > 0 {
		fmt.Printf("RATIO llm_sous_vs_transformersjs_tokens_per_s_32_sessions %.2f (goal >= 3)\n", chat/tjs)
	}
	return points, nil
}

// embedBytes is the bytes of v's token embedding table, which a decode
// step reads one row of (a Gather), not whole as it reads every other
// weight.
func embedBytes(v testmodels.LLMVariant) float64 {
	elem := 4.0
	switch {
	case v.Quant == "q8":
		elem = 1
	case v.Compute == onnxgen.Float16:
		elem = 2
	}
	return float64(testmodels.LLMVocab*testmodels.LLMHidden) * elem
}

// bwBytes is the size of memBandwidth's copy: far beyond the caches.
const bwBytes = 256 << 20

// memBandwidth is the machine's memory bandwidth, bytes/s: the best of a
// few copies of bwBytes, counting the bytes read and those written.
func memBandwidth() float64 {
	src, dst := make([]byte, bwBytes), make([]byte, bwBytes)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src) // touch every page first
	best := time.Duration(math.MaxInt64)
	for range 5 {
		start := time.Now()
		copy(dst, src)
		best = min(best, time.Since(start))
	}
	return 2 * bwBytes / best.Seconds()
}

// llmPrompt is the chat prompt of text for the model directory dir, as
// sous builds it: the chat template's rendering of one user message,
// tokenized.
func llmPrompt(m *tasks.Model, text string) ([]int64, error) {
	s, err := m.Chat.Render([]prompt.Message{{Role: "user", Content: text}}, true)
	if err != nil {
		return nil, err
	}
	return m.Tok.IDs(s), nil
}

// longText is a message whose chat prompt is about n tokens.
func longText(dir string, n int) (string, error) {
	m, err := tasks.OpenVariant(dir, tasks.TextGeneration, "", "fp32", "")
	if err != nil {
		return "", err
	}
	const sentence = "Please look up my order from last week, check where the parcel is and tell me when it will arrive. "
	text := ""
	for {
		ids, err := llmPrompt(m, text+sentence)
		if err != nil {
			return "", err
		}
		if len(ids) > n {
			return text, nil
		}
		text += sentence
	}
}

// chatLoad is streamLoad through /v1/chat/completions (streamed, usage
// included): tokens counted from each reply's usage, time to first token
// to its first content, time per output token from there to its last.
func chatLoad(url string, sessions int, d time.Duration) GenPoint {
	var tally genTally
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	body := fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"max_tokens":%d,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`, llmText, maxGenTokens)
	var wg sync.WaitGroup
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				sent := time.Now()
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				var first, last time.Time
				count, pieces := 0, 0
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					data, ok := strings.CutPrefix(sc.Text(), "data: ")
					if !ok || data == "[DONE]" {
						continue
					}
					var ch struct {
						Choices []struct {
							Delta map[string]string `json:"delta"`
						} `json:"choices"`
						Usage *struct {
							CompletionTokens int `json:"completion_tokens"`
						} `json:"usage"`
					}
					if json.Unmarshal([]byte(data), &ch) != nil {
						continue
					}
					if ch.Usage != nil {
						count = ch.Usage.CompletionTokens
					}
					if len(ch.Choices) > 0 && ch.Choices[0].Delta["content"] != "" {
						last = time.Now()
						if first.IsZero() {
							first = last
						}
						pieces++
					}
				}
				resp.Body.Close()
				if count == 0 {
					// Cut off at the deadline: its pieces arrived.
					count = pieces
				}
				tally.add(count, sent, first, last)
			}
		}()
	}
	wg.Wait()
	return tally.point(d)
}

// quantile is the p-quantile of sorted values (0 for none).
func quantile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// engineProcess runs engineLoad of 32 sessions in a fresh process of
// this binary (as sous runs in its own), and returns its tokens/s.
func engineProcess(dir, dtype string) (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, "-llm-engine", dir, dtype)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("engine process: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fmt.Println(strings.Join(lines[:len(lines)-1], "\n"))
	return strconv.ParseFloat(lines[len(lines)-1], 64)
}

// llmEngineChild is engineProcess's child: it prints the engine's
// batching, then its tokens/s alone on the last line.
func llmEngineChild(dir, dtype string) {
	r, err := engineLoad(dir, dtype, 32, genDuration())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%.1f\n", r)
}

// engineLoad drives the decode engine in this process as sous does
// (function.go's options, the default configuration), with sessions
// closed-loop callers of the chat route's prompt for d, and returns the
// tokens/s generated.
func engineLoad(dir, dtype string, sessions int, d time.Duration) (float64, error) {
	m, err := tasks.OpenVariant(dir, tasks.TextGeneration, "", dtype, "")
	if err != nil {
		return 0, err
	}
	ids, err := llmPrompt(m, llmText)
	if err != nil {
		return 0, err
	}
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		return 0, err
	}
	me, err := model.New(model.Params{Library: model.FindLibrary(), Model: m.File, Device: model.DeviceCPU, Workers: 1})
	if err != nil {
		return 0, err
	}
	defer me.Close()
	if err := m.Bind(me.Inputs(), me.Outputs()); err != nil {
		return 0, err
	}
	var steps, rows atomic.Int64
	e, err := generate.New(me, generate.Options{EOS: m.EOS, MaxBatch: cfg.MaxBatch, Queue: cfg.Queue, KVTokens: cfg.KVTokens,
		SharedKV: m.SharedKV, PrefixCacheBytes: cfg.PrefixCache, Decoder: m.Tok, PrefillChunk: cfg.PrefillChunk,
		OnStep: func(n int) { steps.Add(1); rows.Add(int64(n)) }})
	if err != nil {
		return 0, err
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	defer func() { stop(); <-done }()
	var tokens atomic.Int64
	load, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for load.Err() == nil {
				e.Generate(load, ids, generate.Params{MaxTokens: maxGenTokens, OnText: func(string) {}}, func(int64) {
					if load.Err() == nil {
						tokens.Add(1)
					}
				})
			}
		}()
	}
	wg.Wait()
	fmt.Printf("llm/%s engine in-process: %d decode steps, %.1f sequences a step\n", dtype, steps.Load(), float64(rows.Load())/float64(max(steps.Load(), 1)))
	return float64(tokens.Load()) / d.Seconds(), nil
}

// burst is what burstLoad saw.
type burst struct {
	p50, p99         float64 // running sessions' time between tokens, ms
	ttftP50, ttftMax float64 // the long prompts' time to first token, ms
}

// burstLoad runs sessions closed-loop clients streaming /turn replies for
// d and, with long > 0, sends long requests of text (one token each: their
// prefill is the point) at once a third of the way in. It returns the
// running sessions' time between consecutive tokens while the long
// prompts are filling (from their arrival until the last one's first
// token), or over the last two thirds of d without them.
func burstLoad(url string, sessions, long int, text string, d time.Duration) burst {
	var mu sync.Mutex
	type gap struct {
		at time.Time
		ms float64
	}
	var gaps []gap
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for c := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				body := fmt.Sprintf(`{"session":"run-%d-%d","text":%q,"max_tokens":64,"stream":true}`, c, n, llmText)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/turn", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					continue
				}
				var prev time.Time
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if sc.Text() != "event: token" {
						continue
					}
					now := time.Now()
					if !prev.IsZero() {
						mu.Lock()
						gaps = append(gaps, gap{now, ms(now.Sub(prev))})
						mu.Unlock()
					}
					prev = now
				}
				resp.Body.Close()
			}
		}()
	}
	from, to := start.Add(d/3), start.Add(d)
	var ttft []float64
	if long > 0 {
		time.Sleep(time.Until(from))
		var lw sync.WaitGroup
		for i := range long {
			lw.Add(1)
			go func() {
				defer lw.Done()
				body := fmt.Sprintf(`{"session":"long-%d","text":%q,"max_tokens":1}`, i, text)
				sent := time.Now()
				resp, err := http.Post(url+"/turn", "application/json", strings.NewReader(body))
				if err != nil {
					return
				}
				resp.Body.Close()
				mu.Lock()
				ttft = append(ttft, ms(time.Since(sent)))
				mu.Unlock()
			}()
		}
		lw.Wait()
		to = time.Now()
	}
	wg.Wait()
	var in []float64
	for _, g := range gaps {
		if g.at.After(from) && !g.at.After(to) {
			in = append(in, g.ms)
		}
	}
	sort.Float64s(in)
	sort.Float64s(ttft)
	b := burst{p50: quantile(in, 0.5), p99: quantile(in, 0.99), ttftP50: quantile(ttft, 0.5)}
	if len(ttft) > 0 {
		b.ttftMax = ttft[len(ttft)-1]
	}
	return b
}

// derived is what derivedCompare saw.
type derived struct {
	derived, exported     time.Duration // TTFT of the prompt, best of three
	derivedMB, exportedMB float64       // this process's RSS growth with the session loaded
}

// derivedCompare loads the decoder export in dir (one without
// num_logits_to_keep) as sous does, from the graph derived at load
// (tasks.LastPositionGraph), and as exported, one after the other in this
// process, and times an n-token prompt's first token through the engine
// with each.
func derivedCompare(dir string, n int) (derived, error) {
	var out derived
	m, err := tasks.OpenVariant(dir, tasks.TextGeneration, "", "", "")
	if err != nil {
		return out, err
	}
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = int64(1000 + i*37%90000)
	}
	run := func(last bool) (time.Duration, float64, error) {
		runtime.GC()
		debug.FreeOSMemory()
		before := rssMB(os.Getpid())
		p := model.Params{Library: model.FindLibrary(), Model: m.File, Device: model.DeviceCPU, Workers: 1}
		if last {
			data, why, err := tasks.LastPositionGraph(m.File)
			if err != nil || data == nil {
				return 0, 0, fmt.Errorf("%s: no derived graph (%s): %v", m.File, why, err)
			}
			p.Data, p.ExternalFolder, p.Name = data, filepath.Dir(m.File), "derived"
		}
		me, err := model.New(p)
		if err != nil {
			return 0, 0, err
		}
		defer me.Close()
		p.Data = nil
		runtime.GC()
		debug.FreeOSMemory()
		grew := rssMB(os.Getpid()) - before
		e, err := generate.New(me, generate.Options{EOS: m.EOS, SharedKV: m.SharedKV, LastPositionLogits: last})
		if err != nil {
			return 0, 0, err
		}
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { e.Run(ctx); close(done) }()
		defer func() { stop(); <-done }()
		best := time.Duration(math.MaxInt64)
		for range 3 {
			start := time.Now()
			if _, err := e.Generate(context.Background(), ids, generate.Params{MaxTokens: 1}, nil); err != nil {
				return 0, 0, err
			}
			best = min(best, time.Since(start))
		}
		return best, grew, nil
	}
	if out.exported, out.exportedMB, err = run(false); err != nil {
		return out, err
	}
	out.derived, out.derivedMB, err = run(true)
	return out, err
}

// prefillTimes times one prefill of an n-token prompt through the fp32
// graph, best of three, with num_logits_to_keep 1 and 0.
func prefillTimes(dir string, n int) (last, all time.Duration, err error) {
	m, err := tasks.OpenVariant(dir, tasks.TextGeneration, "", "fp32", "")
	if err != nil {
		return 0, 0, err
	}
	me, err := model.New(model.Params{Library: model.FindLibrary(), Model: m.File, Device: model.DeviceCPU, Workers: 1})
	if err != nil {
		return 0, 0, err
	}
	defer me.Close()
	ids, mask, pos := make([]int64, n), make([]int64, n), make([]int64, n)
	for i := range ids {
		ids[i], mask[i], pos[i] = int64(1000+i*37%90000), 1, int64(i)
	}
	run := func(keep int64) (time.Duration, error) {
		var ins []model.Tensor
		for _, in := range me.Inputs() {
			switch {
			case in.Name == "input_ids":
				ins = append(ins, model.Tensor{DType: model.INT64, Shape: []int64{1, int64(n)}, I64: ids})
			case in.Name == "attention_mask":
				ins = append(ins, model.Tensor{DType: model.INT64, Shape: []int64{1, int64(n)}, I64: mask})
			case in.Name == "position_ids":
				ins = append(ins, model.Tensor{DType: model.INT64, Shape: []int64{1, int64(n)}, I64: pos})
			case in.Name == "num_logits_to_keep":
				ins = append(ins, model.Tensor{DType: model.INT64, Shape: []int64{}, I64: []int64{keep}})
			case strings.HasPrefix(in.Name, "past_key_values."):
				ins = append(ins, model.Tensor{DType: model.FP32, Shape: []int64{1, in.Shape[1], 0, in.Shape[3]}, F32: []float32{}})
			default:
				return 0, fmt.Errorf("prefill: input %s not known", in.Name)
			}
		}
		best := time.Duration(math.MaxInt64)
		for range 3 {
			start := time.Now()
			if err := me.RunView(context.Background(), ins, func([]model.Tensor) error { return nil }); err != nil {
				return 0, err
			}
			best = min(best, time.Since(start))
		}
		return best, nil
	}
	if last, err = run(1); err != nil {
		return 0, 0, err
	}
	all, err = run(0)
	return last, all, err
}

// transformersJS serves dir's dtype variant with transformers.js
// (llm_transformersjs.js: a Node HTTP server around generate()) and
// drives it with sessions closed-loop clients for d; the requests in
// flight then are waited for, and the tokens/s is every reply's tokens
// over the time until the last one.
func (h *harness) transformersJS(root, dir, dtype string, sessions int, d time.Duration) (float64, error) {
	port := freePort()
	cmd := exec.Command("node", filepath.Join(root, "bench", "llm_transformersjs.js"), dir, dtype, strconv.Itoa(port))
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(root, ".cache", "npm-transformers", "node_modules"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("transformers.js (make transformers-js): %w", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		return 0, fmt.Errorf("transformers.js did not start: %q %v\n%s", line, err, stderr.String())
	}
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	body := fmt.Sprintf(`{"text":%q,"max_new_tokens":%d}`, llmText, maxGenTokens)
	var tokens atomic.Int64
	var end atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d {
				resp, err := http.Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					return
				}
				var r struct{ Tokens int64 }
				json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				tokens.Add(r.Tokens)
				end.Store(int64(time.Since(start)))
			}
		}()
	}
	wg.Wait()
	if end.Load() == 0 {
		return 0, fmt.Errorf("transformers.js answered nothing:\n%s", stderr.String())
	}
	return float64(tokens.Load()) / time.Duration(end.Load()).Seconds(), nil
}

// plotLLMLatency writes TTFT and TPOT p50/p99 against concurrent sessions
// for the fp32 and q4 variants.
func plotLLMLatency(path string, points []LLMPoint) error {
	p := plot.New()
	p.Title.Text = "sous: test LLM (151,669-token vocabulary), streamed /turn, 2 vCPU"
	p.X.Label.Text = "concurrent sessions"
	p.Y.Label.Text = "ms"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top, p.Legend.Left = true, true
	colors := map[string]color.RGBA{"fp32": {R: 31, G: 119, B: 180, A: 255}, "q4": {R: 214, G: 39, B: 40, A: 255}}
	for _, pt := range points {
		c, ok := colors[pt.DType]
		if !ok {
			continue
		}
		for _, m := range []struct {
			label  string
			y      func(GenPoint) float64
			dashed bool
		}{
			{"TTFT p50", func(g GenPoint) float64 { return g.TTFTp50ms }, false},
			{"TTFT p99", func(g GenPoint) float64 { return g.TTFTp99ms }, true},
			{"TPOT p50", func(g GenPoint) float64 { return g.TPOTp50ms }, false},
			{"TPOT p99", func(g GenPoint) float64 { return g.TPOTp99ms }, true},
		} {
			var xy plotter.XYs
			for _, n := range []int{1, 8, 32} {
				if g, ok := pt.Latency[n]; ok {
					xy = append(xy, plotter.XY{X: float64(n), Y: max(m.y(g), 0.01)})
				}
			}
			if err := addLine(p, xy, pt.DType+" "+m.label, c, m.dashed); err != nil {
				return err
			}
		}
	}
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return err
	}
	fmt.Printf("wrote %s\n", path)
	return nil
}

// rssMB is a process's resident memory (VmRSS), MB.
func rssMB(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1000
		}
	}
	return 0
}
