package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sous-ai/sous/internal/daprtest"
)

// clusterPods starts two sous pods, each with its daprd, on a Redis
// Cluster of 3 masters and 3 replicas, writing batches with bulk saves;
// daprd has the resiliency policies deployed with a cluster.
const clusterResiliency = "components/redis-cluster/resiliency.yaml"

func clusterPods(t *testing.T, c *daprtest.RedisCluster, env ...string) []*pod {
	t.Helper()
	env = append([]string{"SOUS_STATE_BULK=bulk"}, env...)
	return []*pod{startPodWith(t, daprtest.DaprdParams{Cluster: c, Resiliency: clusterResiliency}, env...), startPodWith(t, daprtest.DaprdParams{Cluster: c, Resiliency: clusterResiliency}, env...)}
}

// turnWithID posts one /turn carrying a request id (a retry with the same
// id is a redelivery) and returns the status, the Retry-After header and
// the reply.
func turnWithID(client *http.Client, base, session, id, text string) (int, string, turnReply, error) {
	resp, err := client.Post(base+"/turn", "application/json",
		strings.NewReader(fmt.Sprintf(`{"session":%q,"id":%q,"text":%q}`, session, id, text)))
	if err != nil {
		return 0, "", turnReply{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r turnReply
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			return resp.StatusCode, "", r, fmt.Errorf("reply %s: %v", body, err)
		}
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), r, nil
}

// metric reads one series from a sous /metrics page.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// The Dapr tests that matter, on a Redis Cluster (redisType cluster) with
// two pods: a conversation moves between pods, concurrent turns of one
// session on both pods are numbered once each, a redelivered turn is
// answered from the transcript, the TTL slides, and under load a batch is
// one bulk read and one bulk save. The load's Redis cost is logged: the
// capacity model in docs/operations.md comes from it.
func TestDaprRedisCluster(t *testing.T) {
	c := daprtest.StartRedisCluster(t, daprtest.ClusterParams{})
	pods := clusterPods(t, c, "SOUS_SESSION_TTL=2s")
	a, b := pods[0], pods[1]
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	t.Run("continues on another pod", func(t *testing.T) {
		for i, p := range []*pod{a, a, b, a} {
			code, r, _ := turn(t, client, p.sous.url, "move", "hello "+strconv.Itoa(i))
			if code != 200 || r.Turn != i+1 {
				t.Fatalf("turn %d: %d %+v", i+1, code, r)
			}
		}
		if s, _ := stored(t, b.daprd, "move"); s.Turn != 4 || len(s.History) != 4 {
			t.Errorf("stored %+v, want 4 turns", s)
		}
	})

	t.Run("concurrent turns on one session", func(t *testing.T) {
		const each = 25
		var mu sync.Mutex
		var turns []int
		var wg sync.WaitGroup
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
		s, _ := stored(t, a.daprd, "shared")
		if s.Turn != 2*each {
			t.Fatalf("stored turn %d, want %d", s.Turn, 2*each)
		}
		for i, h := range s.History {
			if want := 2*each - len(s.History) + 1 + i; h.N != want {
				t.Fatalf("transcript entry %d has turn %d, want %d", i, h.N, want)
			}
		}
	})

	t.Run("redelivery", func(t *testing.T) {
		var got []int
		for _, p := range []*pod{a, b, a} {
			code, _, r, err := turnWithID(client, p.sous.url, "redeliver", "event-1", "hello")
			if err != nil || code != 200 {
				t.Fatalf("turn: %d %v", code, err)
			}
			got = append(got, r.Turn)
		}
		if fmt.Sprint(got) != "[1 1 1]" {
			t.Errorf("one event delivered three times answered as turns %v, want [1 1 1]", got)
		}
		if s, _ := stored(t, b.daprd, "redeliver"); s.Turn != 1 || len(s.History) != 1 {
			t.Errorf("stored %+v, want the one turn", s)
		}
	})

	t.Run("TTL", func(t *testing.T) {
		for want := 1; want <= 3; want++ {
			if code, r, _ := turn(t, client, pods[want%2].sous.url, "ttl", "hello"); code != 200 || r.Turn != want {
				t.Fatalf("turn %d: %d %+v", want, code, r)
			}
			time.Sleep(1200 * time.Millisecond) // < TTL: the turn renewed it
		}
		time.Sleep(2 * time.Second)
		if _, ok := stored(t, a.daprd, "ttl"); ok {
			t.Fatal("session still stored after its TTL")
		}
	})

	t.Run("bulk state under load", func(t *testing.T) {
		// Each client its own session, alternating pods; measured once
		// the transcripts are full (SOUS_HISTORY, 16), as a long
		// conversation's would be.
		const clients, warm, each = 64, 16, 8
		load := func(turns int) {
			var wg sync.WaitGroup
			for cl := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range turns {
						if code, _, _ := turn(t, client, pods[(cl+i)%2].sous.url, "load"+strconv.Itoa(cl), "hello there"); code != 200 {
							t.Errorf("turn: %d", code)
							return
						}
					}
				}()
			}
			wg.Wait()
		}
		counts := func() (turns, calls, batches float64) {
			for _, p := range pods {
				turns += metric(t, p.sous.url, `sous_requests_total{code="200",route="/turn"}`)
				calls += metric(t, p.sous.url, `sous_state_duration_seconds_count{op="get"}`) +
					metric(t, p.sous.url, `sous_state_duration_seconds_count{op="save"}`)
				batches += metric(t, p.sous.url, "sous_batch_size_count")
			}
			return turns, calls, batches
		}
		load(warm)
		turns0, calls0, batches0 := counts()
		c.ResetStats()
		cpu0 := c.CPUSeconds()
		start := time.Now()
		load(each)
		elapsed := time.Since(start)
		cpu := c.CPUSeconds() - cpu0
		turns1, calls1, batches1 := counts()
		n, calls, batches := turns1-turns0, calls1-calls0, batches1-batches0
		t.Logf("%v turns in %s (%.0f turns/s on two pods), mean batch %.1f, %.3f state calls per turn",
			n, elapsed.Round(time.Millisecond), n/elapsed.Seconds(), n/batches, calls/n)
		// One bulk read and one bulk write a batch; a redo after a
		// conflict is a batch of its own.
		if n != clients*each || calls > 2*batches {
			t.Errorf("%v turns, %v state calls in %v batches; want %d turns and at most 2 calls a batch", n, calls, batches, clients*each)
		}
		// Read before the 2s TTL ends it.
		s, _ := stored(t, a.daprd, "load0")
		doc, _ := json.Marshal(s)
		t.Logf("a session at turn %d (%d in its transcript): %d bytes of JSON", s.Turn, len(s.History), len(doc))
		logRedisCost(t, c, n, cpu)
	})
}

// logRedisCost logs what turns cost the cluster's masters since the last
// ResetStats: Redis commands per turn (INFO commandstats), the time Redis
// spent in them (usec), its process CPU (cpu seconds, measured by the
// caller), and the bytes in and out per turn.
func logRedisCost(t *testing.T, c *daprtest.RedisCluster, turns, cpu float64) {
	t.Helper()
	stats := c.CommandStats()
	var names []string
	var ops, usec int64
	for name, s := range stats {
		if name == "info" || name == "ping" || strings.HasPrefix(name, "config|") || strings.HasPrefix(name, "cluster|") {
			continue // the test's own and the clients' discovery of the cluster
		}
		names = append(names, name)
		ops += s.Calls
		usec += s.Usec
	}
	sort.Strings(names)
	var lines []string
	for _, name := range names {
		s := stats[name]
		lines = append(lines, fmt.Sprintf("%s %.2f/turn %.2fus/call", name, float64(s.Calls)/turns, s.UsecPerCall))
	}
	in, out := c.Stat("stats", "total_net_input_bytes"), c.Stat("stats", "total_net_output_bytes")
	t.Logf("Redis per turn: %.2f commands (%s), %.1f us in commands (those run by a script counted in it and alone), %.1f us of the masters' process CPU, %.0f bytes in, %.0f bytes out",
		float64(ops)/turns, strings.Join(lines, "; "), float64(usec)/turns, cpu/turns*1e6, float64(in)/turns, float64(out)/turns)
	if stats["multi"].Calls != 0 || stats["exec"].Calls != 0 {
		t.Errorf("bulk saves ran %d MULTI and %d EXEC: a transaction was used", stats["multi"].Calls, stats["exec"].Calls)
	}
}

// A failover under load: two pods, clients each keeping its own
// conversation and retrying a 503 with the same request id (a
// redelivery). First a planned failover (CLUSTER FAILOVER on a master's
// replica), then a master killed. Throughout, sous answers 200 or 503 with
// Retry-After, never anything else, and never a turn number out of
// sequence, except that a killed master may lose writes it acknowledged
// (replication is asynchronous): for the kill, the turns whose number
// repeats are measured, not asserted. Afterwards every conversation's
// stored turn counter is the last number its client was given.
func TestDaprRedisClusterFailover(t *testing.T) {
	c := daprtest.StartRedisCluster(t, daprtest.ClusterParams{})
	pods := clusterPods(t, c)
	const clients = 16
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	type answer struct {
		client, code, turn int
		at, took           time.Duration // since start
	}
	start := time.Now()
	var (
		mu      sync.Mutex // guards answers, bad
		answers []answer
		bad     []string
	)
	stop := loadClients(clients, func(cl, i int) bool {
		session, id := "fo"+strconv.Itoa(cl), "fo"+strconv.Itoa(cl)+"-"+strconv.Itoa(i)
		for try := 0; ; try++ {
			// Alternate pods, so that numbering crosses them.
			sent := time.Since(start)
			code, retry, r, err := turnWithID(client, pods[(i+try)%2].sous.url, session, id, "hello")
			mu.Lock()
			answers = append(answers, answer{cl, code, r.Turn, sent, time.Since(start) - sent})
			if err != nil || code != 200 && (code != 503 || retry == "") {
				bad = append(bad, fmt.Sprintf("%s at %s: %d (Retry-After %q) %v", id, sent.Round(time.Millisecond), code, retry, err))
			}
			mu.Unlock()
			if code != 503 || try == 300 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond)
		return true
	})
	waitRole := func(node *daprtest.Redis, role string) time.Duration {
		t.Helper()
		from := time.Now()
		for c.Role(node) != role {
			if time.Since(from) > 20*time.Second {
				stop()
				t.Fatalf("node %d not %s after 20s", node.Port, role)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(from)
	}

	time.Sleep(time.Second)
	masters := c.Masters()
	planned, killed := masters[0], masters[1]
	replica := c.ReplicaOf(planned)
	plannedAt := time.Since(start)
	if _, err := c.Do(replica, "cluster", "failover"); err != nil {
		stop()
		t.Fatal(err)
	}
	plannedTook := waitRole(replica, "master")
	if err := c.WaitHealthy(20 * time.Second); err != nil {
		stop()
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	heir := c.ReplicaOf(killed)
	killedAt := time.Since(start)
	killed.Stop()
	killTook := waitRole(heir, "master")
	if err := c.WaitHealthy(20 * time.Second); err != nil {
		stop()
		t.Fatal(err)
	}
	healedAt := time.Since(start)
	// Until every client has had a 200 for a turn sent after the cluster
	// healed (daprd's Redis client may still route to the dead master
	// for a while), then a while more.
	var recoveredAt time.Duration
	for recoveredAt == 0 {
		mu.Lock()
		seen := map[int]time.Duration{}
		for _, a := range answers {
			if a.code == 200 && a.at >= healedAt {
				seen[a.client] = max(seen[a.client], a.at+a.took)
			}
		}
		mu.Unlock()
		if len(seen) == clients {
			for _, at := range seen {
				recoveredAt = max(recoveredAt, at)
			}
		} else if time.Since(start)-killedAt > 30*time.Second {
			stop()
			t.Fatalf("30s after the kill, only %d of %d clients had a 200 again", len(seen), clients)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	stop()
	end := time.Since(start)

	mu.Lock()
	defer mu.Unlock()
	for _, b := range bad {
		t.Error(b)
	}
	// Each answer counts in the phase in which it came back.
	phases := []struct {
		name     string
		from, to time.Duration
	}{{"before", 0, plannedAt}, {"planned failover", plannedAt, killedAt}, {"master killed", killedAt, recoveredAt}, {"recovered", recoveredAt, end}}
	phaseOf := func(a answer) int {
		for i := len(phases) - 1; i >= 0; i-- {
			if a.at+a.took >= phases[i].from {
				return i
			}
		}
		return 0
	}
	type phaseStats struct {
		codes   map[int]int
		window  time.Duration // from the phase's event to the last 503's answer
		took    []time.Duration
		repeats int
	}
	stats := make([]phaseStats, len(phases))
	for i := range stats {
		stats[i].codes = map[int]int{}
	}
	// The turn numbers each client was given, in order: one more each
	// time. A number at or below the last one is a repeat: the store lost
	// the turn given before it.
	last := map[int]int{}
	var repeated []string
	for _, a := range answers {
		p := &stats[phaseOf(a)]
		p.codes[a.code]++
		p.took = append(p.took, a.took)
		if a.code == 503 {
			p.window = max(p.window, a.at+a.took-phases[phaseOf(a)].from)
		}
		if a.code != 200 {
			continue
		}
		switch prev := last[a.client]; {
		case a.turn == prev+1:
		case a.turn <= prev:
			p.repeats++
			repeated = append(repeated, fmt.Sprintf("client %d given %d after %d at %s", a.client, a.turn, prev, a.at.Round(time.Millisecond)))
		default:
			t.Errorf("client %d given turn %d after %d at %s: a turn number skipped", a.client, a.turn, prev, a.at.Round(time.Millisecond))
		}
		last[a.client] = a.turn
	}
	for i, ph := range phases {
		p := stats[i]
		slices.Sort(p.took)
		q := func(f float64) time.Duration {
			if len(p.took) == 0 {
				return 0
			}
			return p.took[int(f*float64(len(p.took)-1))].Round(time.Millisecond)
		}
		t.Logf("%s (%s to %s): answers %v, 503 window %s, answer time p50 %s p99 %s max %s, repeated turn numbers %d",
			ph.name, ph.from.Round(time.Millisecond), ph.to.Round(time.Millisecond), p.codes, p.window.Round(time.Millisecond),
			q(0.5), q(0.99), q(1), p.repeats)
		if p.codes[200] == 0 {
			t.Errorf("%s: no turn answered 200", ph.name)
		}
	}
	t.Logf("cluster-node-timeout %s: the planned failover took %s; the killed master's replica took over %s after the kill, the cluster was healthy after %s, every client had a 200 again after %s",
		c.NodeTimeout, plannedTook.Round(time.Millisecond), killTook.Round(time.Millisecond),
		(healedAt - killedAt).Round(time.Millisecond), (recoveredAt - killedAt).Round(time.Millisecond))
	if len(repeated) > 0 {
		t.Logf("repeated turn numbers (acknowledged writes lost): %s", strings.Join(repeated, "; "))
	}
	if n := stats[0].repeats + stats[1].repeats; n != 0 {
		t.Errorf("turn numbers repeated before the kill: %d", n)
	}
	for cl, n := range last {
		s, _ := stored(t, pods[0].daprd, "fo"+strconv.Itoa(cl))
		if s.Turn != n {
			t.Errorf("client %d was last given turn %d, the store has %d", cl, n, s.Turn)
		}
	}
}
