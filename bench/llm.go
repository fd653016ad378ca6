package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

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
}

// llmCompare builds the test LLM (testmodels.LLM) and serves each of its
// onnx-community variants in turn, one fresh process each, side by side in
// one run.
func (h *harness) llmCompare(root string) ([]LLMPoint, error) {
	dir := h.TempDir()
	if err := testmodels.LLM(dir, filepath.Join(root, ".cache", "llm-tokenizers", "qwen3")); err != nil {
		return nil, fmt.Errorf("the test LLM (make llm-tokenizers first): %w", err)
	}
	var points []LLMPoint
	for _, v := range testmodels.LLMVariants {
		p := h.startSous("SOUS_MODEL="+filepath.Join(dir, "llm"), "SOUS_MODEL_DTYPE="+v.DType, "SOUS_STATE=memory")
		pt := LLMPoint{DType: v.DType, RSSMB: rssMB(p.pid)}
		if st, err := os.Stat(filepath.Join(dir, "llm", v.File)); err == nil {
			pt.FileMB = float64(st.Size()) / 1e6
		}
		one := streamLoad(p.url, 1, genDuration())
		many := streamLoad(p.url, 32, genDuration())
		p.stop()
		pt.TokensPerS1, pt.TokensPer32 = one.TokensPerS, many.TokensPerS
		pt.TTFTp50ms32, pt.TPOTp50ms32 = many.TTFTp50ms, many.TPOTp50ms
		points = append(points, pt)
		fmt.Printf("llm/%-6s file %6.1f MB  RSS after load %6.1f MB  1 session %7.1f tokens/s  32 sessions %7.1f tokens/s (TTFT p50 %.0f ms, TPOT p50 %.1f ms)\n",
			pt.DType, pt.FileMB, pt.RSSMB, pt.TokensPerS1, pt.TokensPer32, pt.TTFTp50ms32, pt.TPOTp50ms32)
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
	return points, nil
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
