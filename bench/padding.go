package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// paddingWords are one token each in the test models' vocabulary.
var paddingWords = strings.Fields("the order was late and my refund is not here yet please help me with this account today")

// mixedTexts returns n texts of 2 to 254 words (4 to 256 tokens with [CLS]
// and [SEP]), lengths uniform, reproducibly.
func mixedTexts(n int) []string {
	r := rand.New(rand.NewPCG(3, 3))
	out := make([]string, n)
	for i := range out {
		k := 2 + r.IntN(253)
		w := make([]string, k)
		for j := range w {
			w[j] = paddingWords[r.IntN(len(paddingWords))]
		}
		out[i] = strings.Join(w, " ")
	}
	return out
}

// paddingCompare saturates a model directory (the test embedder with a
// per-token stack of 4 layers 256 wide) with mixed-length text, batches
// grouped by length and in arrival order, two rounds each, alternating;
// it returns each order's mean, with its padding waste from sous's
// sous_batch_tokens_total and its mean batch from sous_batch_size.
func (h *harness) paddingCompare(root string) (length, arrival Point, err error) {
	tok, err := os.ReadFile(filepath.Join(root, "function", "tokenizer", "testdata", "tokenizers", "all-minilm-l6-v2.json"))
	if err != nil {
		return length, arrival, err
	}
	dir := h.TempDir()
	if err := testmodels.Bench(dir, tok, 256, 4); err != nil {
		return length, arrival, err
	}
	texts := mixedTexts(4096)
	body := func(i int64) []byte {
		b, _ := json.Marshal(map[string]string{"text": texts[i%int64(len(texts))]})
		return b
	}
	sums := map[string]*Point{"length": &length, "arrival": &arrival}
	const rounds = 2
	for round := range rounds {
		for _, order := range []string{"length", "arrival"} {
			env := []string{"SOUS_MODEL=" + filepath.Join(dir, "feature-extraction-bench"), "SOUS_STATE=memory", "SOUS_BATCH_ORDER=" + order}
			p := h.startSous(env...)
			r := h.saturate(fmt.Sprintf("padding/order=%s (round %d)", order, round+1), env, p.url, body, 64)
			m, err := scrape(p.url)
			p.stop()
			if err != nil {
				return length, arrival, err
			}
			waste := m[`sous_batch_tokens_total{kind="padding"}`] / (m[`sous_batch_tokens_total{kind="padding"}`] + m[`sous_batch_tokens_total{kind="real"}`])
			batch := m["sous_batch_size_sum"] / m["sous_batch_size_count"]
			fmt.Printf("%-52s padding %.1f%% of token positions, mean batch %.1f\n", "", 100*waste, batch)
			s := sums[order]
			s.Name, s.Throughput = "padding/order="+order, s.Throughput+r.Throughput/rounds
			s.P50ms, s.P99ms = s.P50ms+r.P50ms/rounds, s.P99ms+r.P99ms/rounds
			s.PadWaste, s.MeanBatch = s.PadWaste+waste/rounds, s.MeanBatch+batch/rounds
		}
	}
	h.points = append(h.points, length, arrival)
	return length, arrival, nil
}

// scrape reads sous's /metrics into series → value.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out, sc.Err()
}

func printPadding(length, arrival Point) {
	fmt.Printf("RATIO length_aware_vs_arrival_throughput %.2f (mixed lengths 4-256 tokens)\n", length.Throughput/arrival.Throughput)
	fmt.Printf("padding waste (pad tokens / all token positions): length-aware %.1f%%, arrival order %.1f%%; mean batch %.1f vs %.1f items; p50 %.1f vs %.1f ms, p99 %.1f vs %.1f ms\n",
		100*length.PadWaste, 100*arrival.PadWaste, length.MeanBatch, arrival.MeanBatch, length.P50ms, arrival.P50ms, length.P99ms, arrival.P99ms)
}
