package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/sous-ai/sous/internal/daprtest"
)

// soakDuration is how long each load phase runs: short in `make test`,
// SOAK_DURATION in `make soak`.
func soakDuration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("SOAK_DURATION")); err == nil && d > 0 {
		return d
	}
	return 3 * time.Second
}

// rssKiB reads a process's peak resident set (VmHWM) from /proc.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("VmHWM not found")
	return 0
}

// Overload: three times the measured saturation rate with a small queue.
// Every request is answered 200 or 503 with Retry-After, none hangs, the
// resident set stays under a bound, the process survives, and every turn
// that got a 200 is in its session's stored transcript with a unique
// number.
func TestOverloadLosesNothing(t *testing.T) {
	const rssBoundKiB = 768 << 10 // documented in the README
	redis := daprtest.StartRedis(t)
	// The bench model (17 MFLOP a turn) makes sous the bottleneck, not the
	// load generator that shares its two cores.
	p := startPod(t, redis, "", "SOUS_QUEUE=32", "SOUS_HISTORY=1000", "SOUS_MODEL=function/demo/bench.onnx")
	const sessions = 64
	inputs := benchTurn()

	var n atomic.Int64
	target := func(tg *vegeta.Target) error {
		i := n.Add(1)
		tg.Method, tg.URL = http.MethodPost, p.sous.url+"/turn"
		tg.Header = http.Header{"Content-Type": {"application/json"}}
		tg.Body = []byte(fmt.Sprintf(`{"session":"o%d","id":"o-%d","inputs":%s}`, i%sessions, i, inputs))
		return nil
	}
	attack := func(rate vegeta.Rate, workers uint64, d time.Duration) (*vegeta.Metrics, []*vegeta.Result) {
		atk := vegeta.NewAttacker(vegeta.Workers(workers), vegeta.MaxWorkers(workers), vegeta.Timeout(10*time.Second))
		var m vegeta.Metrics
		var results []*vegeta.Result
		for r := range atk.Attack(target, rate, d, "overload") {
			m.Add(r)
			results = append(results, r)
		}
		m.Close()
		return &m, results
	}
	// The premise: the load really is overload. sous refuses a turn only
	// when its queue is full, so below saturation it would refuse next to
	// nothing; here it must refuse at least a quarter. (The generator
	// delivers 3x saturation in `make soak`, but only 1.0x-1.8x under -race,
	// which slows it in this process, and beside the other packages' tests
	// in `make test`; the refusals, not that ratio, show the overload.)
	// The other packages' builds and tests share the two cores and can
	// skew one measurement of saturation against the next; an attempt that
	// was not an overload is measured again, up to three times. Every
	// attempt's turns count for the loss check below.
	got := map[string][]int{} // session -> turns answered 200
	var m *vegeta.Metrics
	var sat *vegeta.Metrics
	var rate, ok, rejected, requests int
	for attempt := 1; ; attempt++ {
		var results []*vegeta.Result
		sat, _ = attack(vegeta.Rate{Freq: 0}, 64, time.Second) // saturation, closed loop
		rate = int(3 * sat.Throughput)
		m, results = attack(vegeta.Rate{Freq: rate, Per: time.Second}, 512, soakDuration())
		ok, rejected, requests = 0, 0, len(results)
		for _, r := range results {
			switch {
			case r.Code == http.StatusOK:
				ok++
				var reply struct {
					Session string `json:"session"`
					Turn    int    `json:"turn"`
				}
				if err := json.Unmarshal(r.Body, &reply); err != nil {
					t.Fatalf("reply %s: %v", r.Body, err)
				}
				got[reply.Session] = append(got[reply.Session], reply.Turn)
			case r.Code == http.StatusServiceUnavailable && r.Headers.Get("Retry-After") != "":
				rejected++
			default:
				t.Errorf("answer %d %q %s", r.Code, r.Error, r.Body)
			}
		}
		sent := float64(requests) / soakDuration().Seconds()
		if rejected*4 >= requests {
			break
		}
		msg := fmt.Sprintf("attempt %d: delivered %.0f requests/s against a saturation rate of %.0f/s, %d of %d refused: not an overload",
			attempt, sent, sat.Throughput, rejected, requests)
		if attempt == 3 {
			t.Error(msg)
			break
		}
		t.Log(msg + "; measuring again")
	}
	if m.Latencies.Max > 10*time.Second {
		t.Errorf("slowest answer %s", m.Latencies.Max)
	}
	peak := rssKiB(t, p.sous.cmd.Process.Pid)
	t.Logf("saturation %.0f/s; offered %d/s for %s: %d requests, %d ok, %d rejected (503), max latency %s, peak RSS %d MiB",
		sat.Throughput, rate, soakDuration(), requests, ok, rejected, m.Latencies.Max.Round(time.Millisecond), peak>>10)
	if peak > rssBoundKiB {
		t.Errorf("peak RSS %d KiB over the bound %d KiB", peak, rssBoundKiB)
	}
	if resp, err := http.Get(p.sous.url + "/health/readiness"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("sous not ready after the overload: %v", err)
	}
	lost := unstored(t, p.daprd, got)
	t.Logf("turns lost: %d", lost)
}

// A storm of clients that give up while queued leaves nothing behind: the
// queue drains to 0 and the goroutine count returns to its baseline.
func TestCancellationStormLeavesNothingBehind(t *testing.T) {
	pprofAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	c := startSous(t, 0, "SOUS_PPROF_ADDR="+pprofAddr, "SOUS_MODEL=function/demo/bench.onnx", "SOUS_QUEUE=4096")
	goroutines := func() int {
		resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total")))
		return n
	}
	metric := func(name string) float64 {
		resp, err := http.Get(c.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return -1
	}
	http.DefaultClient.CloseIdleConnections()
	base := goroutines()

	body := benchTurn()
	var wg sync.WaitGroup
	var sent atomic.Int64
	deadline := time.Now().Add(soakDuration())
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for i := 0; time.Now().Before(deadline); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+i%5)*time.Millisecond)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/turn", strings.NewReader(
					fmt.Sprintf(`{"session":"c%d-%d","inputs":%s}`, w, i, body)))
				req.Header.Set("Content-Type", "application/json")
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				cancel()
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	var after int
	for range 100 {
		time.Sleep(50 * time.Millisecond)
		after = goroutines()
		if after <= base+2 && metric("sous_queue_depth") == 0 {
			break
		}
	}
	t.Logf("%d abandoned requests; goroutines %d before, %d after; queue depth %v; expired %v",
		sent.Load(), base, after, metric("sous_queue_depth"), metric(`sous_rejected_total{reason="expired"}`))
	if after > base+2 {
		t.Errorf("goroutines %d after the storm, baseline %d", after, base)
	}
	if d := metric("sous_queue_depth"); d != 0 {
		t.Errorf("queue depth %v after the storm, want 0", d)
	}
}

// benchTurn is OIP inputs for the bench model: one row of 256 numbers.
func benchTurn() string {
	vals := make([]string, 256)
	for i := range vals {
		vals[i] = strconv.FormatFloat(float64(i%17)/17, 'f', 3, 64)
	}
	return `[{"name":"x","shape":[1,256],"datatype":"FP32","data":[` + strings.Join(vals, ",") + `]}]`
}

// Hostile input against a real process: each kind gets its 4xx with a
// message, and the process's peak memory does not jump.
func TestHostileInputCorpus(t *testing.T) {
	c := startSous(t, 0)
	pid := c.cmd.Process.Pid
	before := rssKiB(t, pid)
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	binary := func(id, source, typ, specversion, subject string) map[string]string {
		h := map[string]string{"Content-Type": "application/json"}
		for k, v := range map[string]string{"ce-id": id, "ce-source": source, "ce-type": typ, "ce-specversion": specversion, "ce-subject": subject} {
			if v != "" {
				h[k] = v
			}
		}
		return h
	}
	jsonCT := map[string]string{"Content-Type": "application/json"}
	for _, tc := range []struct {
		name   string
		path   string
		header map[string]string
		body   string
		code   int
	}{
		{"missing id", "/", binary("", "/x", "ai.sous.turn", "1.0", "s"), `{"text":"hi"}`, 400},
		{"missing source", "/", binary("1", "", "ai.sous.turn", "1.0", "s"), `{"text":"hi"}`, 400},
		{"missing type", "/", binary("1", "/x", "", "1.0", "s"), `{"text":"hi"}`, 400},
		{"wrong specversion", "/", binary("1", "/x", "ai.sous.turn", "9.9", "s"), `{"text":"hi"}`, 400},
		{"bad time", "/", map[string]string{"Content-Type": "application/cloudevents+json"},
			`{"specversion":"1.0","id":"1","source":"/x","type":"ai.sous.turn","time":"yesterday","subject":"s","data":{"text":"hi"}}`, 400},
		{"invalid JSON", "/turn", jsonCT, `{"session":`, 400},
		{"deep nesting", "/turn", jsonCT, `{"session":"s","inputs":` + deep + `}`, 400},
		{"invalid UTF-8", "/turn", jsonCT, "{\"session\":\"s\",\"text\":\"\xc3\x28\"}", 400},
		{"10 MiB body", "/turn", jsonCT, `{"session":"s","text":"` + strings.Repeat("a", 10<<20) + `"}`, 413},
		{"session with ||", "/turn", jsonCT, `{"session":"a||b","text":"hi"}`, 400},
		{"session with control characters", "/turn", jsonCT, `{"session":"a\u0000b","text":"hi"}`, 400},
		{"10 KB session", "/turn", jsonCT, `{"session":"` + strings.Repeat("s", 10<<10) + `","text":"hi"}`, 400},
		{"tensor wrong name", "/v2/models/intent/infer", jsonCT, `{"inputs":[{"name":"nope","shape":[1],"datatype":"INT64","data":[1]}]}`, 400},
		{"tensor wrong dtype", "/v2/models/intent/infer", jsonCT, `{"inputs":[{"name":"tokens","shape":[1,1],"datatype":"FP64","data":[1]}]}`, 400},
		{"shape overflowing int64", "/v2/models/intent/infer", jsonCT, `{"inputs":[{"name":"tokens","shape":[9223372036854775807,9223372036854775807],"datatype":"INT64","data":[1]}]}`, 400},
		{"shape exhausting memory", "/v2/models/intent/infer", jsonCT, `{"inputs":[{"name":"tokens","shape":[1,4000000000],"datatype":"INT64","data":[1]}]}`, 400},
		{"Inf", "/v2/models/intent/infer", jsonCT, `{"inputs":[{"name":"tokens","shape":[1,1],"datatype":"INT64","data":[1]},{"name":"state_in","shape":[1,7],"datatype":"FP32","data":[1e999,0,0,0,0,0,0]}]}`, 400},
	} {
		req, _ := http.NewRequest(http.MethodPost, c.url+tc.path, strings.NewReader(tc.body))
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct{ Error string }
		json.Unmarshal(b, &e)
		if resp.StatusCode != tc.code || e.Error == "" {
			t.Errorf("%s: %d %s, want %d with a message", tc.name, resp.StatusCode, b, tc.code)
		}
	}
	after := rssKiB(t, pid)
	t.Logf("peak RSS %d MiB before the corpus, %d MiB after", before>>10, after>>10)
	if after-before > 64<<10 {
		t.Errorf("peak RSS jumped by %d MiB", (after-before)>>10)
	}
	if resp, err := http.Get(c.url + "/health/readiness"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("not ready after the corpus: %v", err)
	}
}
