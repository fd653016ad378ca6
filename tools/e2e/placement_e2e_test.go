package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Session placement on the cluster: knative/service-chat.yaml (the bundled
// chat model, SOUS_PLACEMENT=actors, min-scale 3) deployed twice, as
// shipped and with placement off, each in its own namespace, and the same
// conversations sent to each through Traefik.
const (
	chatOnNS     = "sous-chat-on"
	chatOffNS    = "sous-chat-off"
	chatPods     = 3
	chatSessions = 12
	chatTurns    = 6
	chatRounds   = 2 // off, on, off, on: each round a fresh set of sessions
	chatHopPairs = 8
)

// PlacedTurn is one chat turn through the route, as its client saw it.
type PlacedTurn struct {
	Placement bool    `json:"placement"`
	Round     int     `json:"round"`
	Session   int     `json:"session"`
	Turn      int     `json:"turn"`
	Status    int     `json:"status"`
	SousTurn  int     `json:"sous_turn"` // the finishing chunk's sous.turn
	ServedBy  string  `json:"served_by"` // X-Sous-Served-By (placement on), else empty
	TTFTms    float64 `json:"ttft_ms"`
	TotalMs   float64 `json:"total_ms"`
	Prompt    int     `json:"prompt_tokens"`
	Cached    int     `json:"cached_tokens"`
	Attempts  int     `json:"attempts"`
	Err       string  `json:"err,omitempty"`
}

// PlacementSummary is turns 2..chatTurns of every session of one mode.
type PlacementSummary struct {
	Placement   bool    `json:"placement"`
	Turns       int     `json:"turns"`
	CachedShare float64 `json:"cached_share"`
	TTFTp50ms   float64 `json:"ttft_p50_ms"`
	TTFTp99ms   float64 `json:"ttft_p99_ms"`
	// ByTurn[i] is turn i+2's cached share and TTFT p50 / p99.
	ByTurn []TurnSummary `json:"by_turn"`
}

// TurnSummary is one turn number's measures over the sessions of a mode.
type TurnSummary struct {
	Turn        int     `json:"turn"`
	CachedShare float64 `json:"cached_share"`
	TTFTp50ms   float64 `json:"ttft_p50_ms"`
	TTFTp99ms   float64 `json:"ttft_p99_ms"`
}

// HopSummary is the relay's cost on the cluster: whole turns (1 token) of
// warm sessions sent to the owner's queue-proxy against another pod's,
// in pairs.
type HopSummary struct {
	Pairs                  int     `json:"pairs"`
	DirectP50, DirectP99   float64 // ms
	RelayedP50, RelayedP99 float64 // ms
	AddedP50, AddedP99     float64 // ms
	Retried                int     // turns sent again after a cut stream
}

// PlacementRun is what docs/placement-cluster.json holds.
type PlacementRun struct {
	Machine  string             `json:"machine"`
	Sessions int                `json:"sessions"`
	TurnsPer int                `json:"turns_per_session"`
	Rounds   int                `json:"rounds"`
	Summary  []PlacementSummary `json:"summary"`
	Hop      HopSummary         `json:"hop"`
	Outcomes map[string]float64 `json:"placed_turns_by_outcome"`
	// Retried counts the conversations' turns answered only on a second
	// or third attempt (a stream cut on the way).
	Retried int          `json:"retried_turns"`
	Kill    KillSummary  `json:"owner_killed"`
	Turns   []PlacedTurn `json:"turns"`
}

// KillSummary is the run whose busiest owner was deleted with grace 0.
type KillSummary struct {
	Victim          string `json:"victim"`
	VictimSessions  int    `json:"victim_sessions"`
	RetriedTurns    int    `json:"retried_turns"`
	RelayFailures   int    `json:"relay_failures"`
	StoredComplete  int    `json:"sessions_stored_1_to_6"`
	SettledAfterSec int    `json:"seconds_to_3_ready_pods"`
}

func TestSousChatPlacement(t *testing.T) {
	image := os.Getenv("SOUS_E2E_IMAGE")
	if image == "" {
		t.Skip("SOUS_E2E_IMAGE unset: run through make e2e, which builds and pushes the image")
	}
	c := connect(t)
	ctx := context.Background()
	d := &sousDeployment{c: c}
	hosts := map[bool]string{}
	for _, on := range []bool{true, false} {
		ns, o := chatOffNS, OverlayOptions{Image: image, Service: "knative/service-chat.yaml",
			Env: map[string]string{"SOUS_PLACEMENT": "none"}}
		if on {
			ns, o.Env = chatOnNS, nil
		}
		if err := d.deployVariant(ctx, ns, o, false, nil); err != nil {
			t.Fatal(err)
		}
		if os.Getenv("SOUS_E2E_KEEP") == "" {
			// Gone before the next test: six idle pods and their sidecars
			// would take a share of the two-core node from it.
			t.Cleanup(func() { deleteNamespace(c, ns) })
		}
	}
	for _, on := range []bool{true, false} {
		ns := chatNS(on)
		start := time.Now()
		if err := c.WaitReady(ctx, ksvcGVR, ns, "sous-chat", 6*time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := readyChatPods(ctx, c, ns, chatPods, 4*time.Minute); err != nil {
			t.Fatal(err)
		}
		ksvc, _ := c.Get(ctx, ksvcGVR, ns, "sous-chat")
		u, _, _ := unstructured.NestedString(ksvc.Object, "status", "url")
		hosts[on] = strings.TrimPrefix(u, "http://")
		t.Logf("%s: sous-chat Ready with %d pods %s after apply, at %s", ns, chatPods, time.Since(start).Round(time.Second), u)
	}
	run := PlacementRun{Machine: machine(), Sessions: chatSessions, TurnsPer: chatTurns, Rounds: chatRounds}
	client := &http.Client{Timeout: 2 * time.Minute}
	tag := strconv.FormatInt(time.Now().Unix(), 36)
	// A warm-up conversation per mode: each pod's first turns pay for
	// their allocations, which neither mode should carry.
	for _, on := range []bool{false, true} {
		conversations(client, c.Ingress, hosts[on], on, -1, "warm-"+tag, 8)
	}
	for round := range chatRounds {
		for _, on := range []bool{false, true} {
			turns := conversations(client, c.Ingress, hosts[on], on, round, fmt.Sprintf("r%d-%s", round, tag), 8)
			for _, tr := range turns {
				if tr.Status != http.StatusOK || tr.SousTurn != tr.Turn {
					t.Errorf("placement %v round %d session %d turn %d: %d, sous.turn %d (%s)", on, round, tr.Session, tr.Turn, tr.Status, tr.SousTurn, tr.Err)
				}
				if tr.Attempts > 1 {
					run.Retried++
					t.Logf("placement %v round %d session %d turn %d: answered on attempt %d", on, round, tr.Session, tr.Turn, tr.Attempts)
				}
			}
			for s := range chatSessions {
				session := fmt.Sprintf("place-%v-%s-%d", on, fmt.Sprintf("r%d-%s", round, tag), s)
				if err := storedOnce(ctx, c, session); err != nil {
					t.Error(err)
				}
			}
			run.Turns = append(run.Turns, turns...)
		}
	}
	for _, on := range []bool{true, false} {
		s := summarize(run.Turns, on)
		run.Summary = append(run.Summary, s)
		t.Logf("placement %v: turns 2..%d (%d): cached share %.2f, TTFT p50 %.1f ms, p99 %.1f ms", on, chatTurns, s.Turns, s.CachedShare, s.TTFTp50ms, s.TTFTp99ms)
	}
	// Placed, every session's turns are served by one pod.
	owners := map[string]map[string]bool{}
	for _, tr := range run.Turns {
		if tr.Placement && tr.Status == http.StatusOK {
			k := fmt.Sprintf("%d/%d", tr.Round, tr.Session)
			if owners[k] == nil {
				owners[k] = map[string]bool{}
			}
			owners[k][tr.ServedBy] = true
		}
	}
	for k, o := range owners {
		if len(o) != 1 {
			t.Errorf("placed session %s served by %d pods: %v", k, len(o), slices.Collect(maps.Keys(o)))
		}
	}
	// Placement trades spread for cache: a pod's share of the load is its
	// share of the sessions, which hashing does not make even.
	byPod := map[string][]float64{}
	for _, tr := range run.Turns {
		if tr.Placement && tr.Round >= 0 && tr.Turn >= 2 && tr.Status == http.StatusOK {
			byPod[tr.ServedBy] = append(byPod[tr.ServedBy], tr.TTFTms)
		}
	}
	for _, pod := range slices.Sorted(maps.Keys(byPod)) {
		xs := byPod[pod]
		slices.Sort(xs)
		t.Logf("placed on %s: %d sessions, TTFT p50 %.1f ms, p99 %.1f ms", pod, len(xs)/(chatTurns-1), quantile(xs, 0.5), quantile(xs, 0.99))
	}
	if on := run.Summary[0]; on.CachedShare < 0.8 {
		t.Errorf("cached share of prompt tokens from turn 2 on with placement: %.2f, want >= 0.8", on.CachedShare)
	}
	if on, off := run.Summary[0], run.Summary[1]; off.CachedShare >= on.CachedShare {
		t.Errorf("cached share without placement %.2f, with %.2f: placement should raise it", off.CachedShare, on.CachedShare)
	}

	var err error
	if run.Hop, err = clusterHop(ctx, client, c, hosts[true], tag); err != nil {
		t.Fatal(err)
	}
	t.Logf("hop (%d pairs, whole 1-token turns through each pod's queue-proxy; %d sent again after a cut stream): direct p50 %.2f p99 %.2f ms, relayed p50 %.2f p99 %.2f ms, added p50 %.2f p99 %.2f ms",
		run.Hop.Pairs, run.Hop.Retried, run.Hop.DirectP50, run.Hop.DirectP99, run.Hop.RelayedP50, run.Hop.RelayedP99, run.Hop.AddedP50, run.Hop.AddedP99)
	run.Outcomes = map[string]float64{}
	for _, o := range []string{"owner", "relayed", "received", "fallback"} {
		run.Outcomes[o] = sousMetric(ctx, t, c, chatOnNS, "sous-chat", `sous_placement_turns_total{outcome="`+o+`"}`)
	}
	t.Logf("sous_placement_turns_total over the placed pods, before the kill: %v", run.Outcomes)

	run.Kill = killOwner(ctx, t, client, c, hosts[true], tag)

	if t.Failed() {
		for _, ns := range []string{chatOnNS, chatOffNS} {
			logRestarts(ctx, t, c, ns)
			logPanics(ctx, t, c, ns)
		}
	}
	root := c.Root
	if err := writeJSON(filepath.Join(root, "docs", "placement-cluster.json"), run); err != nil {
		t.Fatal(err)
	}
	if err := plotPlacement(filepath.Join(root, "docs", "placement-cluster.svg"), &run); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote docs/placement-cluster.json and docs/placement-cluster.svg")
}

// logPanics logs the lines of the sous containers' logs in ns (current
// and previous runs) that tell of a panic or a fatal error.
func logPanics(ctx context.Context, t *testing.T, c *Cluster, ns string) {
	pods, err := c.Pods(ctx, ns, "serving.knative.dev/service=sous-chat")
	if err != nil {
		t.Log(err)
		return
	}
	for _, p := range pods {
		for _, previous := range []bool{false, true} {
			b, err := c.Kube.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "sous", Previous: previous}).DoRaw(ctx)
			if err != nil {
				continue
			}
			lines := strings.Split(string(b), "\n")
			for i, l := range lines {
				if strings.Contains(l, "panic") || strings.Contains(l, "fatal") || strings.Contains(l, `"level":"ERROR"`) {
					t.Logf("%s/%s (previous run %v): %s", ns, p.Name, previous, strings.Join(lines[i:min(i+12, len(lines))], "\n"))
					break
				}
			}
		}
	}
}

func chatNS(on bool) string {
	if on {
		return chatOnNS
	}
	return chatOffNS
}

// readyChatPods waits for n ready pods of sous-chat's latest ready revision
// in ns and returns them.
func readyChatPods(ctx context.Context, c *Cluster, ns string, n int, timeout time.Duration) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := WaitFor(ctx, fmt.Sprintf("%d ready pods of sous-chat in %s", n, ns), timeout, func(ctx context.Context) (bool, string) {
		ksvc, err := c.Get(ctx, ksvcGVR, ns, "sous-chat")
		if err != nil {
			return false, err.Error()
		}
		rev, _, _ := unstructured.NestedString(ksvc.Object, "status", "latestReadyRevisionName")
		all, err := c.Pods(ctx, ns, "serving.knative.dev/revision="+rev)
		if err != nil {
			return false, err.Error()
		}
		pods = pods[:0]
		for _, p := range all {
			if p.DeletionTimestamp == nil && podReady(p) {
				pods = append(pods, p)
			}
		}
		return len(pods) >= n, fmt.Sprintf("revision %s: %d ready", rev, len(pods))
	})
	return pods, err
}

// customerLine is turn n's message.
func customerLine(n int) string {
	lines := []string{"hello", "where is my order?", "it is 4521.", "is shipping free?", "my card was declined.", "thanks, bye"}
	return lines[(n-1)%len(lines)]
}

// conversations runs chatSessions conversations of chatTurns turns at once
// through Traefik (Host: host), each turn streamed, greedy, maxTokens.
func conversations(client *http.Client, ingress, host string, on bool, round int, tag string, maxTokens int) []PlacedTurn {
	var mu sync.Mutex // guards out
	var out []PlacedTurn
	var wg sync.WaitGroup
	for s := range chatSessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			session := fmt.Sprintf("place-%v-%s-%d", on, tag, s)
			for n := 1; n <= chatTurns; n++ {
				// A cut stream is retried under the same key, as a client
				// should: a turn saved before the cut is answered from the
				// transcript, not run twice.
				var tr PlacedTurn
				attempt := 1
				for ; attempt <= 3; attempt++ {
					tr = chatTurn(client, "http://"+ingress, host, session, fmt.Sprintf("%s/%d", session, n), customerLine(n), maxTokens)
					if tr.Status == http.StatusOK {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				tr.Placement, tr.Round, tr.Session, tr.Turn, tr.Attempts = on, round, s, n, attempt
				mu.Lock()
				out = append(out, tr)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// chatTurn sends one streamed chat completion of session to base (with an
// optional Host) under an Idempotency-Key, and reads TTFT (first content
// chunk) and the usage chunk.
func chatTurn(client *http.Client, base, host, session, key, text string, maxTokens int) PlacedTurn {
	body := fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"max_tokens":%d,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`,
		text, maxTokens)
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sous-Session", session)
	req.Header.Set("Idempotency-Key", key)
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return PlacedTurn{Err: err.Error()}
	}
	defer resp.Body.Close()
	tr := PlacedTurn{Status: resp.StatusCode, ServedBy: resp.Header.Get("X-Sous-Served-By")}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		tr.Err = strings.TrimSpace(string(b))
		return tr
	}
	first := false
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
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
			// A streamed session turn's number, on its finishing chunk.
			Sous *struct {
				Turn int `json:"turn"`
			} `json:"sous"`
		}
		if json.Unmarshal([]byte(data), &chunk) != nil {
			continue
		}
		if chunk.Error != nil {
			tr.Status, tr.Err = 0, "stream error: "+chunk.Error.Message
		}
		if !first && len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
			first, tr.TTFTms = true, msSince(sent)
		}
		if chunk.Sous != nil {
			tr.SousTurn = chunk.Sous.Turn
		}
		if chunk.Usage != nil {
			tr.Prompt, tr.Cached = chunk.Usage.PromptTokens, chunk.Usage.PromptTokensDetails.CachedTokens
		}
	}
	tr.TotalMs = msSince(sent)
	if !first {
		tr.TTFTms = tr.TotalMs
	}
	if err := sc.Err(); err != nil {
		tr.Status, tr.Err = 0, "stream broken: "+err.Error()
	}
	return tr
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }

func summarize(turns []PlacedTurn, on bool) PlacementSummary {
	s := PlacementSummary{Placement: on}
	var ttft []float64
	prompt, cached := 0, 0
	byTurn := make([][]PlacedTurn, chatTurns+1)
	for _, tr := range turns {
		if tr.Placement != on || tr.Round < 0 || tr.Turn < 2 || tr.Status != http.StatusOK {
			continue
		}
		ttft = append(ttft, tr.TTFTms)
		prompt, cached = prompt+tr.Prompt, cached+tr.Cached
		byTurn[tr.Turn] = append(byTurn[tr.Turn], tr)
	}
	slices.Sort(ttft)
	s.Turns = len(ttft)
	s.CachedShare = float64(cached) / float64(max(prompt, 1))
	s.TTFTp50ms, s.TTFTp99ms = quantile(ttft, 0.5), quantile(ttft, 0.99)
	for n := 2; n <= chatTurns; n++ {
		var xs []float64
		p, ca := 0, 0
		for _, tr := range byTurn[n] {
			xs = append(xs, tr.TTFTms)
			p, ca = p+tr.Prompt, ca+tr.Cached
		}
		slices.Sort(xs)
		s.ByTurn = append(s.ByTurn, TurnSummary{Turn: n, CachedShare: float64(ca) / float64(max(p, 1)),
			TTFTp50ms: quantile(xs, 0.5), TTFTp99ms: quantile(xs, 0.99)})
	}
	return s
}

// clusterHop measures the relay pod to pod: for each of chatSessions new
// sessions (first turn through Traefik, which places it), turns sent one
// at a time alternately to its owner's queue-proxy and to another pod's,
// which relays them to the owner; both served from the owner's cache.
func clusterHop(ctx context.Context, client *http.Client, c *Cluster, host, tag string) (HopSummary, error) {
	pods, err := readyChatPods(ctx, c, chatOnNS, chatPods, time.Minute)
	if err != nil {
		return HopSummary{}, err
	}
	via := map[string]string{} // X-Sous-Served-By → that pod's queue-proxy
	var ips []string
	for _, p := range pods {
		via[p.Status.PodIP+":8080"] = "http://" + p.Status.PodIP + ":8012"
		ips = append(ips, p.Status.PodIP+":8080")
	}
	var direct, relayed []float64
	retried := 0
	for s := range chatSessions {
		session := fmt.Sprintf("hop-%s-%d", tag, s)
		r := chatTurn(client, "http://"+c.Ingress, host, session, session+"/1", customerLine(1), 1)
		owner, ok := via[r.ServedBy]
		if r.Status != http.StatusOK || !ok {
			return HopSummary{}, fmt.Errorf("session %s turn 1: %d served by %q (%s)", session, r.Status, r.ServedBy, r.Err)
		}
		other := via[ips[(slices.Index(ips, r.ServedBy)+1)%len(ips)]]
		n := 1
		for i := range chatHopPairs {
			// Which of a pair goes first alternates, so that neither side
			// always follows the other.
			for _, relay := range []bool{i%2 == 0, i%2 != 0} {
				target := owner
				if relay {
					target = other
				}
				n++
				tr := chatTurn(client, target, "", session, fmt.Sprintf("%s/%d", session, n), customerLine(n), 1)
				for attempt := 2; attempt <= 3 && tr.Status != http.StatusOK; attempt++ {
					// A stream cut by a proxy on the way: the same key
					// again, and only the answered attempt is timed.
					retried++
					tr = chatTurn(client, target, "", session, fmt.Sprintf("%s/%d", session, n), customerLine(n), 1)
				}
				if tr.Status != http.StatusOK || tr.ServedBy != r.ServedBy {
					return HopSummary{}, fmt.Errorf("session %s: %d served by %q, its owner is %s (%s)", session, tr.Status, tr.ServedBy, r.ServedBy, tr.Err)
				}
				if relay {
					relayed = append(relayed, tr.TotalMs)
				} else {
					direct = append(direct, tr.TotalMs)
				}
			}
		}
	}
	slices.Sort(direct)
	slices.Sort(relayed)
	h := HopSummary{Pairs: len(direct), Retried: retried,
		DirectP50: quantile(direct, 0.5), DirectP99: quantile(direct, 0.99),
		RelayedP50: quantile(relayed, 0.5), RelayedP99: quantile(relayed, 0.99)}
	h.AddedP50, h.AddedP99 = h.RelayedP50-h.DirectP50, h.RelayedP99-h.DirectP99
	return h, nil
}

// killOwner runs chatSessions conversations through Traefik with placement
// on and, while turn 4 of every session is in flight, deletes the pod that
// owns the most sessions with grace 0. Clients retry a failed turn under
// the same Idempotency-Key. Every session's stored transcript must hold
// turns 1..chatTurns once each, in order; turns 5 and 6 (sent once
// Knative has replaced the pod) are served by one surviving owner.
func killOwner(ctx context.Context, t *testing.T, client *http.Client, c *Cluster, host, tag string) KillSummary {
	const killAt = 4
	var ks KillSummary
	failuresBefore := sousMetric(ctx, t, c, chatOnNS, "sous-chat", "sous_placement_relay_failures_total")
	results := make([][]PlacedTurn, chatSessions)
	var retried sync.Map
	doTurn := func(s, n int) {
		session := fmt.Sprintf("kill-%s-%d", tag, s)
		key := fmt.Sprintf("%s/%d", session, n)
		var tr PlacedTurn
		attempt := 1
		for ; attempt <= 40; attempt++ {
			tr = chatTurn(client, "http://"+c.Ingress, host, session, key, customerLine(n), 32)
			if tr.Status == http.StatusOK {
				break
			}
			retried.Store(key, attempt)
			time.Sleep(500 * time.Millisecond)
		}
		tr.Placement, tr.Session, tr.Turn, tr.Attempts = true, s, n, attempt
		results[s] = append(results[s], tr)
	}
	// runTurn sends every session's turn n, session s after s × stagger.
	runTurn := func(n int, stagger time.Duration, during func()) {
		var wg sync.WaitGroup
		for s := range chatSessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(s) * stagger)
				doTurn(s, n)
			}()
		}
		if during != nil {
			during()
		}
		wg.Wait()
	}
	for n := 1; n < killAt; n++ {
		runTurn(n, 0, nil)
	}
	count := map[string]int{}
	for s := range chatSessions {
		count[results[s][0].ServedBy]++
	}
	pods, err := readyChatPods(ctx, c, chatOnNS, chatPods, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var victim corev1.Pod
	for _, p := range pods {
		if count[p.Status.PodIP+":8080"] > count[victim.Status.PodIP+":8080"] || victim.Name == "" {
			victim = p
		}
	}
	victimAddr := victim.Status.PodIP + ":8080"
	ks.Victim, ks.VictimSessions = victim.Name, count[victimAddr]
	t.Logf("owners before the kill: %v; deleting %s (%s) with grace 0 while turn %d is in flight", count, victim.Name, victimAddr, killAt)
	// Turn 4 of the sessions goes out over 4.8 s, the pod deleted 0.3 s
	// in: turns reach it (through Knative, or relayed) while it dies and
	// after, before every proxy and sidecar has learnt that it is gone.
	runTurn(killAt, 400*time.Millisecond, func() {
		time.Sleep(300 * time.Millisecond)
		if err := c.Kube.CoreV1().Pods(chatOnNS).Delete(ctx, victim.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
			t.Error(err)
		}
	})
	for s := range chatSessions {
		tr := results[s][killAt-1]
		t.Logf("turn %d of session %d: served by %s after %d attempts", killAt, s, tr.ServedBy, tr.Attempts)
	}
	start := time.Now()
	after, err := readyChatPods(ctx, c, chatOnNS, chatPods, 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	alive := map[string]bool{}
	for _, p := range after {
		if p.Name != victim.Name {
			alive[p.Status.PodIP+":8080"] = true
		}
	}
	// The new pod's sidecar joins placement beside readiness; a few
	// seconds more let every sidecar take the new table.
	time.Sleep(10 * time.Second)
	ks.SettledAfterSec = int(time.Since(start).Seconds())
	for n := killAt + 1; n <= chatTurns; n++ {
		runTurn(n, 0, nil)
	}
	retried.Range(func(any, any) bool { ks.RetriedTurns++; return true })
	ks.RelayFailures = int(sousMetric(ctx, t, c, chatOnNS, "sous-chat", "sous_placement_relay_failures_total") - failuresBefore)
	for s := range chatSessions {
		session := fmt.Sprintf("kill-%s-%d", tag, s)
		for i, tr := range results[s] {
			if tr.Status != http.StatusOK || tr.SousTurn != i+1 {
				t.Errorf("%s turn %d: %d, sous.turn %d after %d attempts (%s)", session, i+1, tr.Status, tr.SousTurn, tr.Attempts, tr.Err)
			}
		}
		if err := storedOnce(ctx, c, session); err != nil {
			t.Error(err)
		} else {
			ks.StoredComplete++
		}
		last, prev := results[s][chatTurns-1], results[s][chatTurns-2]
		if !alive[last.ServedBy] || last.ServedBy != prev.ServedBy || last.Cached == 0 {
			t.Errorf("%s after the kill: turns %d and %d served by %s and %s (%d cached), want one live owner with its cache",
				session, chatTurns-1, chatTurns, prev.ServedBy, last.ServedBy, last.Cached)
		}
	}
	t.Logf("owner killed: %s owned %d of %d sessions; %d turns retried by their clients, %d relays failed and were retried by the pods; 3 ready pods again %d s after the kill; %d of %d transcripts hold turns 1..%d once each",
		ks.Victim, ks.VictimSessions, chatSessions, ks.RetriedTurns, ks.RelayFailures, ks.SettledAfterSec, ks.StoredComplete, chatSessions, chatTurns)
	return ks
}

// storedOnce checks session's transcript in Redis: turns 1..chatTurns,
// once each, in order, with their messages.
func storedOnce(ctx context.Context, c *Cluster, session string) error {
	doc, err := redisKey(ctx, c, "sous-chat||"+session)
	if err != nil {
		return err
	}
	var st struct {
		Turn    int `json:"turn"`
		History []struct {
			N    int    `json:"n"`
			Text string `json:"text"`
		} `json:"history"`
	}
	if err := json.Unmarshal([]byte(doc), &st); err != nil {
		return fmt.Errorf("Redis sous-chat||%s: %v: %.200s", session, err, doc)
	}
	ok := st.Turn == chatTurns && len(st.History) == chatTurns
	for i, h := range st.History {
		ok = ok && h.N == i+1 && h.Text == customerLine(i+1)
	}
	if !ok {
		return fmt.Errorf("Redis sous-chat||%s: turn %d, history %+v: want turns 1..%d once each, in order", session, st.Turn, st.History, chatTurns)
	}
	return nil
}

// plotPlacement draws, by turn number, the cached share of prompt tokens
// and TTFT p50 / p99 with placement on and off.
func plotPlacement(path string, run *PlacementRun) error {
	blue, red := color.RGBA{31, 119, 180, 255}, color.RGBA{214, 39, 40, 255}
	line := func(p *plot.Plot, label string, xy plotter.XYs, c color.Color, dash bool) error {
		l, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return err
		}
		l.Color, pts.Color = c, c
		if dash {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		}
		p.Add(l, pts)
		p.Legend.Add(label, l, pts)
		return nil
	}
	share, ttft := plot.New(), plot.New()
	share.Title.Text = fmt.Sprintf("sous-chat, %d pods: cached share of the prompt", chatPods)
	share.Y.Label.Text = "cached / prompt tokens"
	share.X.Label.Text = fmt.Sprintf("turn (%d sessions x %d turns through Traefik, %d rounds)", run.Sessions, run.TurnsPer, run.Rounds)
	share.Y.Min, share.Y.Max = 0, 1
	ttft.Title.Text = "time to first token"
	ttft.Y.Label.Text, ttft.X.Label.Text = "ms", "turn"
	ttft.Y.Min = 0
	share.Legend.Top, share.Legend.Left = false, false
	ttft.Legend.Top, ttft.Legend.Left = true, false
	for _, s := range run.Summary {
		label, c := "placement off", red
		if s.Placement {
			label, c = "placement on", blue
		}
		var sh, p50, p99 plotter.XYs
		for _, b := range s.ByTurn {
			sh = append(sh, plotter.XY{X: float64(b.Turn), Y: b.CachedShare})
			p50 = append(p50, plotter.XY{X: float64(b.Turn), Y: b.TTFTp50ms})
			p99 = append(p99, plotter.XY{X: float64(b.Turn), Y: b.TTFTp99ms})
		}
		if err := line(share, label, sh, c, false); err != nil {
			return err
		}
		if err := line(ttft, label+", p50", p50, c, false); err != nil {
			return err
		}
		if err := line(ttft, label+", p99", p99, c, true); err != nil {
			return err
		}
	}
	// Headroom above the highest p99 for the legend.
	for _, s := range run.Summary {
		for _, b := range s.ByTurn {
			ttft.Y.Max = max(ttft.Y.Max, 1.5*b.TTFTp99ms)
		}
	}
	return writeSVG(path, 7*vg.Inch, share, ttft)
}
