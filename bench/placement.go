package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sous-ai/sous/function/api/placement"
	"github.com/sous-ai/sous/function/tasks/testmodels"
	"github.com/sous-ai/sous/internal/daprtest"
)

// Session placement (BENCH_ONLY=placement): three pods (sous + daprd)
// over one Redis, conversations sent round-robin to them, with placement
// on (SOUS_PLACEMENT=actors) and off, side by side in one run.
const (
	placeSessions = 12
	placeTurns    = 6
	placePods     = 3
	hopPairs      = 3 // per session: one turn to its owner, one through another pod
)

// PlacementPoint is one model's conversations with placement on or off:
// the share of prompt tokens that came from a pod's prefix cache and the
// time to first token, of turns 2..placeTurns.
type PlacementPoint struct {
	Model       string  `json:"model"`
	Placement   bool    `json:"placement"`
	CachedShare float64 `json:"cached_share"`
	TTFTp50ms   float64 `json:"ttft_p50_ms"`
	TTFTp99ms   float64 `json:"ttft_p99_ms"`
	Owners      int     `json:"owners"` // pods that served turns 2..N of a session, summed over sessions
}

// HopPoint is what the relay costs: latency of a turn sent to its
// session's owner against one sent to another pod (relayed), in pairs,
// and of an owner lookup (the actor call through the sidecars).
type HopPoint struct {
	Model                  string
	DirectP50, DirectP99   float64 // ms, a turn sent to its owner
	RelayedP50, RelayedP99 float64 // ms, a turn sent to another pod
	AddedP50, AddedP99     float64 // ms, relayed less direct
	LookupP50, LookupP99   float64 // ms, an owner lookup
}

func (h *harness) placementCompare(root string) error {
	llm := filepath.Join(root, "testdata", "models", "llm")
	if _, err := os.Stat(filepath.Join(llm, "config.json")); err != nil {
		dir := h.TempDir()
		if err := testmodels.LLM(dir, filepath.Join(root, ".cache", "llm-tokenizers", "qwen3")); err != nil {
			return fmt.Errorf("the test LLM (make llm-tokenizers first): %w", err)
		}
		llm = filepath.Join(dir, "llm")
	}
	redis := daprtest.StartRedis(h)
	pl := daprtest.StartPlacement(h)
	var points []PlacementPoint
	var hops []HopPoint
	for _, m := range []struct{ name, env string }{{"chat", "SOUS_MODEL=chat"}, {"llm", "SOUS_MODEL=" + llm}} {
		for _, on := range []bool{true, false} {
			pods := h.placedPods(redis, pl, on, m.env, "SOUS_HISTORY=64")
			pt := placeConversations(pods, m.name, on)
			if on {
				hop, err := hopCost(pods, m.name)
				if err != nil {
					return err
				}
				hops = append(hops, hop)
			}
			for _, p := range pods {
				p.stop()
			}
			points = append(points, pt)
			fmt.Printf("placement/%-4s %-3s cached share of prompt tokens (turns 2-%d) %.2f  TTFT p50 %7.1f p99 %7.1f ms  pods per session %.2f\n",
				m.name, map[bool]string{true: "on", false: "off"}[on], placeTurns, pt.CachedShare, pt.TTFTp50ms, pt.TTFTp99ms, float64(pt.Owners)/placeSessions)
		}
	}
	text, err := h.textTurnLatency()
	if err != nil {
		return err
	}
	for _, hp := range hops {
		fmt.Printf("placement/%-4s hop: direct p50 %.2f p99 %.2f ms, relayed p50 %.2f p99 %.2f ms: added p50 %.2f p99 %.2f ms; owner lookup p50 %.2f p99 %.2f ms\n",
			hp.Model, hp.DirectP50, hp.DirectP99, hp.RelayedP50, hp.RelayedP99, hp.AddedP50, hp.AddedP99, hp.LookupP50, hp.LookupP99)
	}
	fmt.Printf("placement/text turn (demo intent model, memory store): p50 %.2f p99 %.2f ms\n", text[0], text[1])
	for i := 0; i+1 < len(points); i += 2 {
		on, off := points[i], points[i+1]
		fmt.Printf("RATIO placement_%s_ttft_p50_off_vs_on %.2f\n", on.Model, off.TTFTp50ms/on.TTFTp50ms)
		fmt.Printf("RATIO placement_%s_ttft_p99_off_vs_on %.2f\n", on.Model, off.TTFTp99ms/on.TTFTp99ms)
	}
	return nil
}

// placedPod is a pod of the placement comparison.
type placedPod struct {
	url, addr string
	daprd     *daprtest.Daprd
	stop      func()
}

func (h *harness) placedPods(redis *daprtest.Redis, pl *daprtest.Placement, on bool, env ...string) []placedPod {
	pods := make([]placedPod, placePods)
	for i := range pods {
		port := freePort()
		d := daprtest.StartDaprd(h, daprtest.DaprdParams{AppID: "sous", AppPort: port, Redis: redis, Placement: pl})
		e := append([]string{"SOUS_STATE=dapr", "DAPR_GRPC_PORT=" + strconv.Itoa(d.GRPCPort), "DAPR_HTTP_PORT=" + strconv.Itoa(d.HTTPPort)}, env...)
		if on {
			e = append(e, "SOUS_PLACEMENT=actors", fmt.Sprintf("SOUS_PLACEMENT_ADDRESS=127.0.0.1:%d", port))
		}
		p := h.startSousOn(port, e...)
		pods[i] = placedPod{url: p.url, addr: fmt.Sprintf("127.0.0.1:%d", port), daprd: d, stop: func() { p.stop(); d.Kill() }}
	}
	if on {
		pl.WaitHosts("sous-session", placePods, time.Minute)
		var ds []*daprtest.Daprd
		for _, p := range pods {
			ds = append(ds, p.daprd)
		}
		daprtest.WaitAgree(h, ds, "sous-session", placement.Method, time.Minute)
	}
	return pods
}

// chatResult is one streamed chat turn as the bench reads it.
type chatResult struct {
	ttft, total      float64 // ms
	prompt, cached   int
	servedBy         string
	err              error
	status           int
	firstContentSeen bool
}

// streamedChat runs one streamed chat turn of session on base (greedy,
// maxTokens, usage in the last chunk).
func streamedChat(client *http.Client, base, session, text string, maxTokens int) chatResult {
	body := fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"max_tokens":%d,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`,
		text, maxTokens)
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sous-Session", session)
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return chatResult{err: err}
	}
	defer resp.Body.Close()
	r := chatResult{status: resp.StatusCode, servedBy: resp.Header.Get(placement.HeaderServedBy)}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		r.err = fmt.Errorf("chat: %s %s", resp.Status, b)
		return r
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				PromptTokens        int `json:"prompt_tokens"`
				PromptTokensDetails struct {
					CachedTokens int `json:"cached_tokens"`
				} `json:"prompt_tokens_details"`
			} `json:"usage"`
		}
		if json.Unmarshal([]byte(data), &chunk) != nil {
			continue
		}
		if !r.firstContentSeen && len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
			r.firstContentSeen, r.ttft = true, ms(time.Since(sent))
		}
		if chunk.Usage != nil {
			r.prompt, r.cached = chunk.Usage.PromptTokens, chunk.Usage.PromptTokensDetails.CachedTokens
		}
	}
	r.total = ms(time.Since(sent))
	if !r.firstContentSeen {
		r.ttft = r.total
	}
	r.err = sc.Err()
	return r
}

// placeConversations runs placeSessions conversations at once, each turn
// n of session s sent to pod (s+n) mod placePods, and returns the
// measures of turns 2..placeTurns.
func placeConversations(pods []placedPod, model string, on bool) PlacementPoint {
	client := &http.Client{Timeout: 5 * time.Minute}
	var mu sync.Mutex // guards ttft, prompt, cached, servers
	var ttft []float64
	prompt, cached := 0, 0
	servers := 0
	var wg sync.WaitGroup
	run := fmt.Sprintf("%s-%v-%d", model, on, time.Now().UnixNano())
	for s := range placeSessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := map[string]bool{}
			for n := 1; n <= placeTurns; n++ {
				p := pods[(s+n)%len(pods)]
				r := streamedChat(client, p.url, fmt.Sprintf("place-%s-%d", run, s), placedLine(n), 8)
				if r.err != nil {
					fmt.Printf("placement/%s: session %d turn %d: %v\n", model, s, n, r.err)
					continue
				}
				server := r.servedBy
				if server == "" {
					server = strings.TrimPrefix(p.url, "http://")
				}
				mu.Lock()
				if n >= 2 {
					ttft = append(ttft, r.ttft)
					prompt += r.prompt
					cached += r.cached
					if !seen[server] {
						seen[server] = true
						servers++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(ttft)
	return PlacementPoint{Model: model, Placement: on, CachedShare: float64(cached) / float64(max(prompt, 1)),
		TTFTp50ms: quantile(ttft, 0.5), TTFTp99ms: quantile(ttft, 0.99), Owners: servers}
}

// placedLine is turn n's message: a customer's lines, in turn.
func placedLine(n int) string {
	lines := []string{"hello", "where is my order?", "it is 4521.", "is shipping free?", "my card was declined.", "thanks, bye"}
	return lines[(n-1)%len(lines)]
}

// hopCost measures the relay: for each of placeSessions new sessions,
// turns sent one at a time alternately to its owner and to the next pod
// (which relays them to the owner), both served from the owner's cache;
// and the owner lookup, an actor call through a non-owner's sidecar.
func hopCost(pods []placedPod, model string) (HopPoint, error) {
	client := &http.Client{Timeout: 5 * time.Minute}
	var direct, relayed, lookup []float64
	sessions := make([]string, placeSessions)
	for s := range sessions {
		sessions[s] = fmt.Sprintf("hop-%s-%d-%d", model, s, time.Now().UnixNano())
	}
	for s, session := range sessions {
		// A conversation of its own, placed: its owner is whoever served
		// its first turn.
		r := streamedChat(client, pods[s%len(pods)].url, session, placedLine(1), 1)
		if r.err != nil {
			return HopPoint{}, r.err
		}
		oi := slices.IndexFunc(pods, func(p placedPod) bool { return p.addr == r.servedBy })
		if oi < 0 {
			return HopPoint{}, fmt.Errorf("session %s: served by %q, none of the pods", session, r.servedBy)
		}
		owner, other := pods[oi], pods[(oi+1)%len(pods)]
		for i := range hopPairs {
			for _, relay := range []bool{i%2 == 0, i%2 != 0} {
				target := owner
				if relay {
					target = other
				}
				r := streamedChat(client, target.url, session, placedLine(i+2), 1)
				if r.err != nil {
					return HopPoint{}, r.err
				}
				if r.servedBy != owner.addr {
					return HopPoint{}, fmt.Errorf("session %s: served by %s, its owner is %s", session, r.servedBy, owner.addr)
				}
				if relay {
					relayed = append(relayed, r.total)
				} else {
					direct = append(direct, r.total)
				}
			}
		}
		for range 10 {
			req, _ := http.NewRequest(http.MethodPut, other.daprd.URL()+"/v1.0/actors/sous-session/"+session+"/method/"+placement.Method, nil)
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				return HopPoint{}, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lookup = append(lookup, ms(time.Since(start)))
		}
	}
	for _, xs := range [][]float64{direct, relayed, lookup} {
		slices.Sort(xs)
	}
	hp := HopPoint{Model: model,
		DirectP50: quantile(direct, 0.5), DirectP99: quantile(direct, 0.99),
		RelayedP50: quantile(relayed, 0.5), RelayedP99: quantile(relayed, 0.99),
		LookupP50: quantile(lookup, 0.5), LookupP99: quantile(lookup, 0.99)}
	hp.AddedP50, hp.AddedP99 = hp.RelayedP50-hp.DirectP50, hp.RelayedP99-hp.DirectP99
	return hp, nil
}

// textTurnLatency is a text turn's latency on the demo intent model, the
// yardstick the hop is weighed against for turns that keep no KV.
func (h *harness) textTurnLatency() ([2]float64, error) {
	p := h.startSous("SOUS_STATE=memory")
	defer p.stop()
	var lat []float64
	for i := range 300 {
		start := time.Now()
		resp, err := http.Post(p.url+"/turn", "application/json",
			strings.NewReader(fmt.Sprintf(`{"session":"text-%d","text":"hello there, where is my order?"}`, i%20)))
		if err != nil {
			return [2]float64{}, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, ms(time.Since(start)))
	}
	slices.Sort(lat)
	return [2]float64{quantile(lat, 0.5), quantile(lat, 0.99)}, nil
}
