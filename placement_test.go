package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/api/placement"
	"github.com/sous-ai/sous/internal/daprtest"
)

// placedPods starts n pods (sous + daprd) hosting the session actor with
// one placement service and one Redis (the state store and the actor
// state store), and waits until placement lists every pod.
func placedPods(t testing.TB, n int, env ...string) ([]*pod, *daprtest.Placement, *daprtest.Redis) {
	t.Helper()
	redis := daprtest.StartRedis(t)
	pl := daprtest.StartPlacement(t)
	pods := make([]*pod, n)
	for i := range pods {
		appPort := freePort(t)
		d := daprtest.StartDaprd(t, daprtest.DaprdParams{AppID: "sous", AppPort: appPort, Redis: redis, Placement: pl})
		penv := append([]string{"SOUS_STATE=dapr", "DAPR_GRPC_PORT=" + strconv.Itoa(d.GRPCPort),
			"DAPR_HTTP_PORT=" + strconv.Itoa(d.HTTPPort), "SOUS_PLACEMENT=actors",
			"SOUS_PLACEMENT_ADDRESS=" + fmt.Sprintf("127.0.0.1:%d", appPort)}, env...)
		pods[i] = &pod{sous: startSousB(t, appPort, penv...), daprd: d}
	}
	pl.WaitHosts("sous-session", n, 60*time.Second)
	daprtest.WaitAgree(t, daprds(pods), "sous-session", placement.Method, 30*time.Second)
	return pods, pl, redis
}

func daprds(pods []*pod) []*daprtest.Daprd {
	var ds []*daprtest.Daprd
	for _, p := range pods {
		if p.daprd.Pid() != 0 {
			ds = append(ds, p.daprd)
		}
	}
	return ds
}

// placedTurn is one chat turn's answer as the test reads it.
type placedTurn struct {
	code     int
	turn     int    // X-Sous-Turn
	servedBy string // X-Sous-Served-By
	cached   int    // usage.prompt_tokens_details.cached_tokens
	prompt   int
	err      error
	body     string
}

// chatPlaced posts one user message of session's chat to base under key
// (Idempotency-Key).
func chatPlaced(client *http.Client, base, session, key, text string) placedTurn {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"max_tokens":12}`, text)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sous-Session", session)
	req.Header.Set(placement.HeaderKey, key)
	resp, err := client.Do(req)
	if err != nil {
		return placedTurn{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	out := placedTurn{code: resp.StatusCode, servedBy: resp.Header.Get(placement.HeaderServedBy), err: err, body: string(b)}
	out.turn, _ = strconv.Atoi(resp.Header.Get("X-Sous-Turn"))
	var r struct {
		Usage struct {
			PromptTokens        int `json:"prompt_tokens"`
			PromptTokensDetails struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if resp.StatusCode == http.StatusOK && json.Unmarshal(b, &r) == nil {
		out.cached, out.prompt = r.Usage.PromptTokensDetails.CachedTokens, r.Usage.PromptTokens
	}
	return out
}

// placedText is turn n's message of a session: the bundled chat model's
// customer lines, in turn.
func placedText(n int) string {
	lines := []string{"hello", "where is my order?", "it is 4521.", "is shipping free?", "my card was declined.", "thanks, bye"}
	return lines[(n-1)%len(lines)]
}

// Sessions sent round-robin to three pods are each served by one owner
// (whichever pod got the turn), and from turn 2 on the owner's prefix
// cache serves the conversation so far.
func TestPlacementOneOwnerPerSession(t *testing.T) {
	pods, _, _ := placedPods(t, 3, "SOUS_MODEL=chat")
	const sessions, turns = 12, 4
	client := &http.Client{Timeout: 30 * time.Second}
	owners := map[string]int{}
	relayed := 0
	for s := range sessions {
		session := fmt.Sprintf("placed-%d", s)
		var owner string
		for n := 1; n <= turns; n++ {
			p := pods[(s+n)%len(pods)]
			r := chatPlaced(client, p.sous.url, session, fmt.Sprintf("%s/%d", session, n), placedText(n))
			if r.err != nil || r.code != http.StatusOK || r.turn != n {
				t.Fatalf("%s turn %d on %s: %v %d turn %d %s", session, n, p.sous.url, r.err, r.code, r.turn, r.body)
			}
			if n == 1 {
				owner = r.servedBy
				owners[owner]++
			}
			if r.servedBy != owner {
				t.Errorf("%s turn %d: served by %s, turn 1 by %s", session, n, r.servedBy, owner)
			}
			if "http://"+r.servedBy != p.sous.url {
				relayed++
			}
			if n >= 2 && r.cached == 0 {
				t.Errorf("%s turn %d: no prompt tokens from the owner's cache (of %d)", session, n, r.prompt)
			}
		}
	}
	t.Logf("owners: %v; %d of %d turns relayed", owners, relayed, sessions*turns)
	if len(owners) < 2 {
		t.Errorf("every session placed on one pod: %v", owners)
	}
	if relayed == 0 {
		t.Error("no turn was relayed: round-robin over three pods must land turns off their owner")
	}
}

// An owner killed (sous and its sidecar, as a pod deleted with grace 0)
// while its sessions' turns are in flight loses and doubles nothing: the
// clients retry a failed turn on another pod under the same key, and
// every session's stored transcript counts its turns 1..N once each. The
// dead owner's sessions move to one surviving pod each.
func TestPlacementOwnerKilledMidConversation(t *testing.T) {
	pods, pl, _ := placedPods(t, 3, "SOUS_MODEL=chat")
	const sessions, turns, killAt = 9, 6, 4
	client := &http.Client{Timeout: 30 * time.Second}
	var mu sync.Mutex // guards alive
	alive := []bool{true, true, true}
	livePod := func(i int) *pod {
		mu.Lock()
		defer mu.Unlock()
		for k := range pods {
			if j := (i + k) % len(pods); alive[j] {
				return pods[j]
			}
		}
		return nil
	}
	// turn sends session's turn n round-robin, retrying a failure on the
	// next live pod under the same key.
	results := make([][]placedTurn, sessions)
	var retried sync.Map // session/turn -> failed attempts before the answer
	doTurn := func(s, n int) {
		session := fmt.Sprintf("killed-%d", s)
		key := fmt.Sprintf("%s/%d", session, n)
		var r placedTurn
		for attempt := 0; attempt < 40; attempt++ {
			r = chatPlaced(client, livePod(s+n+attempt).sous.url, session, key, placedText(n))
			if r.err == nil && r.code == http.StatusOK {
				break
			}
			retried.Store(key, attempt+1)
			time.Sleep(250 * time.Millisecond)
		}
		results[s] = append(results[s], r)
	}
	runTurn := func(n int, during func()) {
		var wg sync.WaitGroup
		for s := range sessions {
			wg.Add(1)
			go func() { defer wg.Done(); doTurn(s, n) }()
		}
		if during != nil {
			during()
		}
		wg.Wait()
	}
	for n := 1; n < killAt; n++ {
		runTurn(n, nil)
	}
	// The victim: the pod that owns the most sessions.
	count := map[string]int{}
	for s := range sessions {
		count[results[s][0].servedBy]++
	}
	victim := 0
	for i, p := range pods {
		if count[strings.TrimPrefix(p.sous.url, "http://")] > count[strings.TrimPrefix(pods[victim].sous.url, "http://")] {
			victim = i
		}
	}
	victimAddr := strings.TrimPrefix(pods[victim].sous.url, "http://")
	t.Logf("owners before the kill: %v; killing %s", count, victimAddr)
	runTurn(killAt, func() {
		time.Sleep(5 * time.Millisecond) // turns in flight
		mu.Lock()
		alive[victim] = false
		mu.Unlock()
		pods[victim].sous.cmd.Process.Kill()
		pods[victim].daprd.Kill()
	})
	pl.WaitHosts("sous-session", len(pods)-1, 30*time.Second)
	daprtest.WaitAgree(t, daprds(pods), "sous-session", placement.Method, 30*time.Second)
	for n := killAt + 1; n <= turns; n++ {
		runTurn(n, nil)
	}

	var retries []string
	retried.Range(func(k, v any) bool { retries = append(retries, fmt.Sprintf("%v:%v", k, v)); return true })
	t.Logf("turns the clients retried (failed attempts): %v", retries)
	for i, p := range pods {
		if i != victim {
			t.Logf("pod %s: %d relays failed and were retried or served there", p.sous.url,
				strings.Count(p.sous.logs.String(), "placement: relay failed"))
		}
	}
	check := livePod(victim + 1)
	for s := range sessions {
		session := fmt.Sprintf("killed-%d", s)
		for i, r := range results[s] {
			if r.code != http.StatusOK || r.turn != i+1 {
				t.Errorf("%s turn %d: %v %d, turn %d %s", session, i+1, r.err, r.code, r.turn, r.body)
			}
		}
		st, ok := stored(t, check.daprd, session)
		var ns []int
		for _, h := range st.History {
			ns = append(ns, h.N)
		}
		if want := []int{1, 2, 3, 4, 5, 6}; !ok || st.Turn != turns || !slices.Equal(ns, want) {
			t.Errorf("%s stored at turn %d with turns %v, want %v once each", session, st.Turn, ns, want)
		}
		for i, h := range st.History {
			if h.Text != placedText(i+1) {
				t.Errorf("%s stored turn %d says %q, want %q", session, h.N, h.Text, placedText(i+1))
			}
		}
		last, prev := results[s][turns-1], results[s][turns-2]
		if last.servedBy == victimAddr || last.servedBy != prev.servedBy || last.cached == 0 {
			t.Errorf("%s after the kill: turns %d and %d served by %s and %s (%d cached), want one surviving owner with its cache",
				session, turns-1, turns, prev.servedBy, last.servedBy, last.cached)
		}
	}
}
