package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/internal/daprtest"
)

// pod is one sous process with its own daprd, as a Knative pod with the
// Dapr sidecar would be.
type pod struct {
	sous  *child
	daprd *daprtest.Daprd
}

func startPod(t *testing.T, redis *daprtest.Redis, nameDB string, env ...string) *pod {
	t.Helper()
	return startPodWith(t, daprtest.DaprdParams{Redis: redis, NameDB: nameDB}, env...)
}

// startPodWith is startPod on the store p says (a Redis or a Redis
// Cluster); p's AppID and AppPort are filled in.
func startPodWith(t *testing.T, p daprtest.DaprdParams, env ...string) *pod {
	t.Helper()
	appPort := freePort(t)
	p.AppID, p.AppPort = "sous", appPort
	d := daprtest.StartDaprd(t, p)
	env = append([]string{
		"SOUS_STATE=dapr", "DAPR_GRPC_PORT=" + strconv.Itoa(d.GRPCPort), "DAPR_HTTP_PORT=" + strconv.Itoa(d.HTTPPort),
	}, env...)
	return &pod{sous: startSous(t, appPort, env...), daprd: d}
}

type turnReply struct {
	Session string `json:"session"`
	Turn    int    `json:"turn"`
	Output  struct {
		Intent string `json:"intent"`
	} `json:"output"`
}

// turn posts one /turn and returns the status and the reply.
func turn(t *testing.T, client *http.Client, base, session, text string) (int, turnReply, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := client.Post(base+"/turn", "application/json",
		strings.NewReader(fmt.Sprintf(`{"session":%q,"text":%q}`, session, text)))
	elapsed := time.Since(start)
	if err != nil {
		t.Errorf("turn on %s: %v", base, err)
		return 0, turnReply{}, elapsed
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r turnReply
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			t.Errorf("reply %s: %v", body, err)
		}
	}
	return resp.StatusCode, r, elapsed
}

// stored reads a session through daprd's state HTTP API.
func stored(t *testing.T, d *daprtest.Daprd, session string) (state.Session, bool) {
	t.Helper()
	resp, err := http.Get(d.URL() + "/v1.0/state/statestore/" + session)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return state.Session{}, false
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("state read: %d %s", resp.StatusCode, body)
	}
	var s state.Session
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("stored session %s: %v", body, err)
	}
	return s, true
}

// unstored checks that every turn answered 200 (got: session -> turn
// numbers) is in its session's stored transcript exactly once, and returns
// how many are not.
func unstored(t *testing.T, d *daprtest.Daprd, got map[string][]int) int {
	t.Helper()
	lost := 0
	for session, turns := range got {
		s, _ := stored(t, d, session)
		inStore := map[int]int{}
		for _, h := range s.History {
			inStore[h.N]++
		}
		for _, n := range turns {
			if inStore[n] != 1 {
				lost++
				t.Errorf("session %s: turn %d answered 200, stored %d times", session, n, inStore[n])
			}
		}
	}
	return lost
}

// A conversation started on pod A continues on pod B: the turn numbers go
// on, and B reads the recurrent state A wrote (it decides "you too").
func TestDaprConversationContinuesOnAnotherPod(t *testing.T) {
	redis := daprtest.StartRedis(t)
	a := startPod(t, redis, "")
	b := startPod(t, redis, "")
	c := http.DefaultClient
	if code, r, _ := turn(t, c, a.sous.url, "move", "hi there"); code != 200 || r.Turn != 1 {
		t.Fatalf("A turn 1: %d %+v", code, r)
	}
	if code, r, _ := turn(t, c, a.sous.url, "move", "ok bye, see you tomorrow"); code != 200 || r.Turn != 2 || r.Output.Intent != "goodbye" {
		t.Fatalf("A turn 2: %d %+v", code, r)
	}
	written, _ := stored(t, a.daprd, "move")
	code, r, _ := turn(t, c, b.sous.url, "move", "you too")
	if code != 200 || r.Turn != 3 {
		t.Fatalf("B turn: %d %+v, want turn 3", code, r)
	}
	if r.Output.Intent != "goodbye" {
		t.Errorf(`B answered "you too" with %s: it did not read the state A wrote`, r.Output.Intent)
	}
	s, _ := stored(t, b.daprd, "move")
	if s.Turn != 3 || len(s.History) != 3 || s.History[2].Text != "you too" {
		t.Errorf("stored session after B: %+v", s)
	}
	if fmt.Sprint(written.State) == fmt.Sprint(s.State) {
		t.Errorf("B did not write a new state")
	}
}

// Two pods x 50 concurrent turns on ONE session: replies carry 1..100 once
// each, and the stored transcript agrees.
func TestDaprConcurrentTurnsOnOneSession(t *testing.T) {
	redis := daprtest.StartRedis(t)
	pods := []*pod{startPod(t, redis, "", "SOUS_HISTORY=200"), startPod(t, redis, "", "SOUS_HISTORY=200")}
	const each = 50
	var mu sync.Mutex
	var turns []int
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 60 * time.Second}
	for _, p := range pods {
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, r, _ := turn(t, client, p.sous.url, "shared", "hello "+strconv.Itoa(i))
				if code != 200 {
					t.Errorf("turn got %d", code)
					return
				}
				mu.Lock()
				turns = append(turns, r.Turn)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	sort.Ints(turns)
	for i, n := range turns {
		if n != i+1 {
			t.Fatalf("turn numbers are not 1..%d exactly once: %v", 2*each, turns)
		}
	}
	s, _ := stored(t, pods[0].daprd, "shared")
	if s.Turn != 2*each || len(s.History) != 2*each {
		t.Fatalf("stored turn %d with %d history entries, want %d", s.Turn, len(s.History), 2*each)
	}
	for i, h := range s.History {
		if h.N != i+1 {
			t.Fatalf("transcript entry %d has turn %d", i, h.N)
		}
	}
}

// The TTL is sliding: each turn renews it; an idle session expires.
func TestDaprSessionTTL(t *testing.T) {
	redis := daprtest.StartRedis(t)
	p := startPod(t, redis, "", "SOUS_SESSION_TTL=2s")
	c := http.DefaultClient
	for want := 1; want <= 3; want++ {
		if code, r, _ := turn(t, c, p.sous.url, "ttl", "hello"); code != 200 || r.Turn != want {
			t.Fatalf("turn %d: %d %+v", want, code, r)
		}
		time.Sleep(1200 * time.Millisecond) // < TTL: the turn renewed it
	}
	time.Sleep(2 * time.Second) // now 3.2s since the last turn
	if _, ok := stored(t, p.daprd, "ttl"); ok {
		t.Fatal("session still stored after its TTL")
	}
	if code, r, _ := turn(t, c, p.sous.url, "ttl", "hello"); code != 200 || r.Turn != 1 {
		t.Fatalf("after expiry: %d %+v, want a new conversation at turn 1", code, r)
	}
}

// outage runs turns from concurrent clients while breakStore breaks the
// store for soakDuration() and mendStore mends it. During the outage every
// answer is a 200 or a quick 503; every client gets 200s again within 5s of
// the mend (the recovery time is the slowest client's); and every turn that
// got a 200 is in its session's stored transcript exactly once.
func outage(t *testing.T, p *pod, breakStore, mendStore func()) {
	const clients, sessionsPerClient = 16, 4
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	type answer struct {
		client   int
		code     int
		session  string
		turn     int
		at, took time.Duration // since start, and how long it took
	}
	start := time.Now()
	var (
		mu      sync.Mutex
		answers []answer
	)
	stop := loadClients(clients, func(c, i int) bool {
		session := fmt.Sprintf("outage%d-%d", c, i%sessionsPerClient)
		code, r, took := turn(t, client, p.sous.url, session, "hello")
		mu.Lock()
		answers = append(answers, answer{c, code, session, r.Turn, time.Since(start) - took, took})
		mu.Unlock()
		time.Sleep(2 * time.Millisecond) // a steady load, not a flood
		return true
	})
	time.Sleep(time.Second)
	broken := time.Since(start)
	breakStore()
	time.Sleep(soakDuration())
	mendStore()
	mended := time.Since(start)
	// Run until every client has had a 200 sent after the mend, or 5s.
	recovered := func() (time.Duration, bool) {
		mu.Lock()
		defer mu.Unlock()
		seen := map[int]time.Duration{} // client -> its first 200 sent after the mend
		for _, a := range answers {
			if _, ok := seen[a.client]; !ok && a.code == 200 && a.at >= mended {
				seen[a.client] = a.at + a.took
			}
		}
		var slowest time.Duration
		for _, at := range seen {
			slowest = max(slowest, at-mended)
		}
		return slowest, len(seen) == clients
	}
	var recovery time.Duration
	for {
		d, ok := recovered()
		if ok {
			recovery = d
			break
		}
		if time.Since(start)-mended > 5*time.Second {
			stop()
			t.Fatalf("not every client has a 200 5s after the store came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	stop()

	codes := map[string]map[int]int{"before": {}, "during": {}, "after": {}}
	var slowestDuring time.Duration
	got := map[string][]int{}
	for _, a := range answers {
		phase := "after"
		switch {
		case a.at+a.took < broken:
			phase = "before"
		case a.at < mended:
			phase = "during"
			slowestDuring = max(slowestDuring, a.took)
		}
		codes[phase][a.code]++
		if a.code == 200 {
			got[a.session] = append(got[a.session], a.turn)
		}
	}
	t.Logf("%d clients: answers before %v, during the outage %v (slowest %s), after %v; every client recovered %s after the store came back",
		clients, codes["before"], codes["during"], slowestDuring.Round(time.Millisecond), codes["after"], recovery.Round(time.Millisecond))
	if len(codes["before"]) != 1 || codes["before"][200] == 0 {
		t.Errorf("before the outage: %v, want only 200s", codes["before"])
	}
	for _, phase := range []string{"during", "after"} {
		if n := sum(codes[phase]) - codes[phase][200] - codes[phase][503]; n != 0 {
			t.Errorf("%s the outage: %v, want nothing but 200 or 503", phase, codes[phase])
		}
	}
	if codes["during"][503] == 0 {
		t.Errorf("during the outage: %v, want 503s", codes["during"])
	}
	if slowestDuring > 5*time.Second {
		t.Errorf("slowest answer during the outage took %s, want a quick 503", slowestDuring)
	}
	lost := unstored(t, p.daprd, got)
	t.Logf("turns answered 200: %d; lost: %d", codes["before"][200]+codes["during"][200]+codes["after"][200], lost)
}

func sum(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestDaprRedisOutage(t *testing.T) {
	redis := daprtest.StartRedis(t)
	p := startPod(t, redis, "", "SOUS_HISTORY=1024")
	outage(t, p, redis.Stop, redis.Start)
}

func TestDaprSidecarOutage(t *testing.T) {
	redis := daprtest.StartRedis(t)
	p := startPod(t, redis, "", "SOUS_HISTORY=1024")
	outage(t, p, p.daprd.Kill, p.daprd.Start)
}

// Dapr service invocation and pub/sub both reach sous and run turns.
func TestDaprInvocationAndPubSub(t *testing.T) {
	redis := daprtest.StartRedis(t)
	p := startPod(t, redis, "")

	resp, err := http.Post(p.daprd.URL()+"/v1.0/invoke/sous/method/turn", "application/json",
		strings.NewReader(`{"session":"inv","text":"hello there"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var r turnReply
	json.Unmarshal(body, &r)
	if resp.StatusCode != 200 || r.Turn != 1 || r.Output.Intent != "greeting" {
		t.Fatalf("invocation: %d %s", resp.StatusCode, body)
	}

	resp, err = http.Post(p.daprd.URL()+"/v1.0/publish/pubsub/turns", "application/json",
		strings.NewReader(`{"session":"pub","text":"thanks a lot"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if s, ok := stored(t, p.daprd, "pub"); ok {
			if s.Turn != 1 || len(s.History) != 1 || !strings.Contains(string(s.History[0].Output), `"intent":"thanks"`) {
				t.Errorf("published turn stored as %+v", s)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("published turn never ran\nsous:\n%s\ndaprd:\n%s", p.sous.logs.String(), p.daprd.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkTurnThroughput compares turns/s over HTTP with the embedded
// memory store and with Dapr state (real daprd + redis-server), state calls
// per turn and batched, 64 concurrent clients on 256 sessions, in one run.
func BenchmarkTurnThroughput(b *testing.B) {
	for _, mode := range []string{"memory", "dapr-per-turn", "dapr-batched"} {
		b.Run(mode, func(b *testing.B) {
			var url string
			if mode == "memory" {
				url = startSousB(b, 0, "SOUS_STATE=memory").url
			} else {
				redis := daprtest.StartRedis(b)
				appPort := daprtest.FreePort(b)
				d := daprtest.StartDaprd(b, daprtest.DaprdParams{AppID: "sous", AppPort: appPort, Redis: redis})
				url = startSousB(b, appPort, "SOUS_STATE=dapr", "DAPR_GRPC_PORT="+strconv.Itoa(d.GRPCPort),
					"SOUS_STATE_BATCH="+strconv.FormatBool(mode == "dapr-batched")).url
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var n atomicCounter
			b.SetParallelism(32)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.next()
					resp, err := client.Post(url+"/turn", "application/json",
						strings.NewReader(fmt.Sprintf(`{"session":"b%d","text":"hello there"}`, i%256)))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "turns/s")
		})
	}
}

type atomicCounter struct {
	mu sync.Mutex // guards n
	n  int
}

func (c *atomicCounter) next() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

// Under load, a batch's sessions are read and written with one call each:
// state calls per turn, read from /metrics, stay at most 0.5.
func TestDaprStateCallsPerTurnUnderLoad(t *testing.T) {
	redis := daprtest.StartRedis(t)
	p := startPod(t, redis, "")
	const clients, each = 64, 20
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if code, _, _ := turn(t, client, p.sous.url, "load"+strconv.Itoa((c*each+i)%256), "hello there"); code != 200 {
					t.Errorf("turn: %d", code)
					return
				}
			}
		}()
	}
	wg.Wait()
	resp, err := http.Get(p.sous.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	value := func(series string) float64 {
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, series+" ") {
				v, _ := strconv.ParseFloat(strings.TrimPrefix(line, series+" "), 64)
				return v
			}
		}
		t.Fatalf("series %s not in /metrics", series)
		return 0
	}
	turns := value(`sous_requests_total{code="200",route="/turn"}`)
	calls := value(`sous_state_duration_seconds_count{op="get"}`) + value(`sous_state_duration_seconds_count{op="save"}`)
	perTurn := calls / turns
	t.Logf("%v turns, %v state calls: %.3f per turn (mean batch %.1f)", turns, calls, perTurn,
		value("sous_batch_size_sum")/value("sous_batch_size_count"))
	if turns != clients*each || perTurn > 0.5 {
		t.Errorf("%v turns with %.3f state calls per turn, want %d turns and at most 0.5", turns, perTurn, clients*each)
	}
}
