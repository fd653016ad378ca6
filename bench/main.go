// Command bench is sous's load harness (`make bench`): it starts sous as a
// real process per configuration, drives it with vegeta over loopback, and
// prints ratios of configurations measured side by side in one run, since
// absolute numbers on a shared machine mean little.
//
// Environment: BENCH_DURATION (per point, default 3s), BENCH_OUT (results
// JSON, default bench/results.json), BENCH_PLOT (SVG, default
// docs/latency-vs-load.svg), BENCH_PROFILE (a file: save a CPU profile of
// sous during the first batch-32 saturation point), BENCH_ONLY=padding (only
// the mixed-length text phase: length-aware against arrival-order batches),
// BENCH_ONLY=generation (only the generation phase), BENCH_ONLY=llm (the
// test LLM's variants: tokens/s at 1 and 32 sessions, RSS), BENCH_ONLY=prefix
// (only the prefix cache's TTFT at turn 10), BENCH_ONLY=structured (JSON
// schema-constrained against free generation at 32 sessions, mask time),
// BENCH_ONLY=choices (only four replies to one prompt: n=4 against four
// requests), BENCH_ONLY=placement (session placement on and off over three
// pods: cached share and TTFT, the relay's cost), BENCH_GEN_PLOT (SVG,
// default docs/generation.svg), BENCH_GEN_PROFILE (a file: save a CPU
// profile of sous during the first 32-session point of the last form
// with continuous batching).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/internal/daprtest"
)

// Point is one measured configuration.
type Point struct {
	Name        string   `json:"name"`
	Config      []string `json:"config,omitempty"`
	OfferedRate float64  `json:"offered_rate"` // 0: as fast as the workers go
	Workers     int      `json:"workers"`
	Throughput  float64  `json:"throughput"` // successful requests/s
	P50ms       float64  `json:"p50_ms"`
	P99ms       float64  `json:"p99_ms"`
	Success     float64  `json:"success"`
	Codes       string   `json:"codes"`
	Pinned      bool     `json:"pinned,omitempty"`
	// CPUPerTurnUs is CPU time per answered turn by process (sous, daprd,
	// redis-server, generator, total), from /proc, where measured.
	CPUPerTurnUs map[string]float64 `json:"cpu_per_turn_us,omitempty"`
	// PadWaste is padding's share of the token positions run, and
	// MeanBatch the mean items per batch, for model-directory text.
	PadWaste  float64 `json:"pad_waste,omitempty"`
	MeanBatch float64 `json:"mean_batch,omitempty"`
}

var duration = 3 * time.Second

func main() {
	log.SetFlags(0)
	if len(os.Args) == 2 && os.Args[1] == "-bare" {
		serveBare()
		return
	}
	if d := os.Getenv("BENCH_DURATION"); d != "" {
		var err error
		if duration, err = time.ParseDuration(d); err != nil {
			log.Fatalf("BENCH_DURATION=%q: %v", d, err)
		}
	}
	switch {
	case len(os.Args) == 3 && os.Args[1] == "-compute":
		fmt.Printf("%.1f\n", computeCeiling(os.Args[2]))
		return
	case len(os.Args) == 4 && os.Args[1] == "-llm-engine":
		llmEngineChild(os.Args[2], os.Args[3])
		return
	case len(os.Args) == 4 && os.Args[1] == "-pinned":
		if err := pinnedPhase(os.Args[2], os.Args[3]); err != nil {
			log.Fatal(err)
		}
		return
	}
	h := &harness{}
	defer h.cleanup()
	if err := h.run(); err != nil {
		h.cleanup()
		log.Fatal(err)
	}
}

// harness starts processes and owns their end; it implements daprtest.T.
type harness struct {
	cleanups []func()
	sous     string
	points   []Point
	ready    []float64 // start-to-ready, ms, demo model
	// pinCPUs, in the pinned phase, are the cores every server runs on
	// (taskset -c), and pinEnv adds to its environment (GOMAXPROCS).
	pinCPUs string
	pinEnv  []string
	// watch names the processes whose CPU the next attack measures.
	watch map[string]int
}

func (h *harness) Helper()                   {}
func (h *harness) Cleanup(f func())          { h.cleanups = append(h.cleanups, f) }
func (h *harness) Fatal(args ...any)         { h.cleanup(); log.Fatal(args...) }
func (h *harness) Fatalf(f string, a ...any) { h.cleanup(); log.Fatalf(f, a...) }
func (h *harness) TempDir() string {
	d, err := os.MkdirTemp("", "sous-bench")
	if err != nil {
		h.Fatal(err)
	}
	h.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (h *harness) cleanup() {
	for i := len(h.cleanups) - 1; i >= 0; i-- {
		h.cleanups[i]()
	}
	h.cleanups = nil
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// process is a started child; stop ends it.
type process struct {
	url  string
	pid  int
	stop func()
}

// start runs a child on port and waits for readyPath to answer 200,
// returning the time from start to ready.
func (h *harness) start(port int, readyPath string, args []string, env []string) (process, time.Duration) {
	if h.pinCPUs != "" {
		args = append([]string{"taskset", "-c", h.pinCPUs}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), append(append([]string{"PORT=" + strconv.Itoa(port)}, h.pinEnv...), env...)...)
	logs := &daprtest.LogBuffer{}
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	began := time.Now()
	if err := cmd.Start(); err != nil {
		h.Fatal(err)
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	for {
		resp, err := http.Get(url + readyPath)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return process{url: url, pid: cmd.Process.Pid, stop: stop}, time.Since(began)
			}
		}
		if time.Since(began) > time.Minute {
			stop()
			h.Fatalf("%v not ready after a minute:\n%s", args, logs.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (h *harness) startSous(env ...string) process { return h.startSousOn(freePort(), env...) }

// startSousProfiled is startSous that, if profile names a file, saves a
// CPU profile of sous into it over the next point's duration.
func (h *harness) startSousProfiled(profile string, env ...string) process {
	if profile == "" {
		return h.startSous(env...)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort())
	p := h.startSous(append(env, "SOUS_PPROF_ADDR="+addr)...)
	go fetchProfile(addr, profile)
	return p
}

// startSousOn starts sous on port; start-to-ready of the demo model is kept.
func (h *harness) startSousOn(port int, env ...string) process {
	p, took := h.start(port, "/health/readiness", []string{h.sous},
		append([]string{"SOUS_ORT_LIB=" + model.FindLibrary()}, env...))
	if !strings.Contains(strings.Join(env, " "), "SOUS_MODEL=") {
		h.ready = append(h.ready, float64(took.Microseconds())/1000)
	}
	return p
}

func (h *harness) run() error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	benchModel := filepath.Join(root, "function", "demo", "bench.onnx")
	h.sous = filepath.Join(h.TempDir(), "sous")
	if out, err := exec.Command("go", "build", "-o", h.sous, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Printf("sous bench: %s per point, %d CPUs\n\n", duration, cpus())

	if os.Getenv("BENCH_ONLY") == "generation" {
		points, err := h.generationCompare(root)
		if err != nil {
			return err
		}
		return reportGeneration(points)
	}
	if os.Getenv("BENCH_ONLY") == "llm" {
		_, err := h.llmCompare(root)
		return err
	}
	if os.Getenv("BENCH_ONLY") == "structured" {
		return h.structuredCompare(root)
	}
	if os.Getenv("BENCH_ONLY") == "prefix" {
		_, err := h.prefixCompare(root, 8)
		return err
	}
	if os.Getenv("BENCH_ONLY") == "choices" {
		n4, separate, err := h.choicesCompare(root)
		if err == nil {
			reportChoices(n4, separate)
		}
		return err
	}
	if os.Getenv("BENCH_ONLY") == "placement" {
		return h.placementCompare(root)
	}
	if os.Getenv("BENCH_ONLY") == "padding" {
		l, a, err := h.paddingCompare(root)
		if err != nil {
			return err
		}
		printPadding(l, a)
		return nil
	}

	benchBody := benchTurnBody()
	modelEnv := "SOUS_MODEL=" + benchModel

	// 1. Ceilings: HTTP with no work, and the model called directly.
	bare, _ := h.start(freePort(), "/", []string{self, "-bare"}, nil)
	httpCeil := h.saturate("ceiling/http (bare echo handler)", nil, bare.url, func(int64) []byte { return benchBody }, 64)
	bare.stop()
	computeCeil := computeCeiling(benchModel)
	h.points = append(h.points, Point{Name: "ceiling/compute (ONNX Runtime, batches of 32)", Throughput: computeCeil})
	fmt.Printf("%-52s %10.0f items/s\n", "ceiling/compute (ONNX Runtime, batches of 32)", computeCeil)

	// 2. Saturation, bench model, batch 32 vs 1, alternating.
	var sat32, sat1 []float64
	for round := range 2 {
		for _, mb := range []string{"32", "1"} {
			env := []string{modelEnv, "SOUS_STATE=memory", "SOUS_MAX_BATCH=" + mb}
			profile := ""
			if round == 0 && mb == "32" {
				profile = os.Getenv("BENCH_PROFILE")
			}
			p := h.startSousProfiled(profile, env...)
			r := h.saturate(fmt.Sprintf("saturation/batch=%s (round %d)", mb, round+1), env, p.url, func(int64) []byte { return benchBody }, 64)
			p.stop()
			if mb == "32" {
				sat32 = append(sat32, r.Throughput)
			} else {
				sat1 = append(sat1, r.Throughput)
			}
		}
	}

	// 3. Light and moderate load: 1 and 8 closed-loop clients (fewer than a
	// batch), batching on vs off. Batching must not cost them latency.
	var light, moderate [2]Point
	for i, mb := range []string{"32", "1"} {
		env := []string{modelEnv, "SOUS_STATE=memory", "SOUS_MAX_BATCH=" + mb}
		p := h.startSous(env...)
		light[i] = h.saturate("light/batch="+mb+" (1 sequential client)", env, p.url, func(int64) []byte { return benchBody }, 1)
		moderate[i] = h.saturate("moderate/batch="+mb+" (8 clients)", env, p.url, func(int64) []byte { return benchBody }, 8)
		p.stop()
	}

	// 4. Demo model, memory vs Dapr state (real daprd + redis-server).
	mem, dp, err := h.stateCompare("")
	if err != nil {
		return err
	}

	// 5. Latency vs offered load, batching on and off.
	satOn := mean(sat32)
	fractions := []float64{0.25, 0.5, 0.75, 0.9, 1.0, 1.25}
	curves := map[string][]Point{}
	for _, mb := range []string{"32", "1"} {
		env := []string{modelEnv, "SOUS_STATE=memory", "SOUS_MAX_BATCH=" + mb}
		p := h.startSous(env...)
		for _, f := range fractions {
			rate := f * satOn
			r := h.constant(fmt.Sprintf("curve/batch=%s at %.0f/s", mb, rate), env, p.url, func(int64) []byte { return benchBody }, rate)
			curves[mb] = append(curves[mb], r)
		}
		p.stop()
	}

	// 7. Mixed-length text (4 to 256 tokens) on a model directory whose
	// cost grows with padded tokens: batches grouped by length against
	// batches in arrival order, alternating.
	padLength, padArrival, err := h.paddingCompare(root)
	if err != nil {
		return err
	}

	// 8. Generation: tokens/s at 1, 8 and 32 sessions, continuous batching
	// against one sequence at a time.
	genPoints, err := h.generationCompare(root)
	if err != nil {
		return err
	}
	prefixPoints, err := h.prefixCompare(root, 8)
	if err != nil {
		return err
	}
	// 9. Structured outputs: 32 sessions constrained by a JSON schema
	// against free text, and the mask's cost per step at 151k tokens.
	if err := h.structuredCompare(root); err != nil {
		return err
	}
	// 10. Four replies to one prompt: n=4 against four requests.
	choicesN4, choicesSeparate, err := h.choicesCompare(root)
	if err != nil {
		return err
	}
	// 11. The test LLM (Qwen3's vocabulary): each variant, and sous
	// against its engine, one sequence at a time and transformers.js.
	if _, err := h.llmCompare(root); err != nil {
		return err
	}

	// 6. The same ceilings and saturation with the servers on half the cores
	// and the generator on the other half.
	pinned, err := h.runPinned(self)
	if err != nil {
		return err
	}
	h.points = append(h.points, pinned.Points...)

	ceiling := min(httpCeil.Throughput, computeCeil)
	pinnedCeiling := min(pinned.HTTPCeiling, pinned.Compute)
	sort.Float64s(h.ready)
	fmt.Println()
	ratio := func(name string, v float64, goal string) { fmt.Printf("RATIO %s %.2f %s\n", name, v, goal) }
	ratio("batch32_vs_batch1_throughput", mean(sat32)/mean(sat1), ">=3")
	ratio("light_load_p50_on_vs_off", light[0].P50ms/light[1].P50ms, "<=1.1")
	ratio("moderate_load_p50_on_vs_off", moderate[0].P50ms/moderate[1].P50ms, "<=1.1")
	ratio("throughput_vs_ceiling", mean(sat32)/ceiling, "(unpinned: sous and the generator share every core)")
	ratio("throughput_vs_ceiling_pinned", pinned.Saturation/pinnedCeiling, ">=0.8")
	ratio("dapr_vs_memory_throughput", dp.Throughput/mem.Throughput, ">=0.5")
	fmt.Printf("RATIO start_to_ready_ms %.0f <=500\n", h.ready[len(h.ready)/2])
	printPadding(padLength, padArrival)
	if err := reportGeneration(genPoints); err != nil {
		return err
	}
	reportChoices(choicesN4, choicesSeparate)
	fmt.Println()
	fmt.Printf("CPU per turn (µs), memory, unpinned: %s\n", formatCPU(mem.CPUPerTurnUs))
	fmt.Printf("CPU per turn (µs), dapr, unpinned:   %s\n", formatCPU(dp.CPUPerTurnUs))
	fmt.Printf("CPU per turn (µs), memory, pinned:   %s\n", formatCPU(pinned.Memory.CPUPerTurnUs))
	fmt.Printf("CPU per turn (µs), dapr, pinned:     %s\n", formatCPU(pinned.Dapr.CPUPerTurnUs))
	fmt.Printf("pinned: servers on CPU %s, generator on CPU %s: ceilings http %.0f/s, compute %.0f/s; sous batch 32 %.0f/s\n",
		pinned.ServerCPUs, pinned.GeneratorCPUs, pinned.HTTPCeiling, pinned.Compute, pinned.Saturation)

	out := env("BENCH_OUT", "bench/results.json")
	b, _ := json.MarshalIndent(map[string]any{"duration": duration.String(), "cpus": cpus(), "points": h.points,
		"start_to_ready_ms": h.ready, "generation": genPoints, "prefix_cache": prefixPoints,
		"choices": []ChoicesPoint{choicesN4, choicesSeparate}, "pinned": map[string]any{"server_cpus": pinned.ServerCPUs,
			"generator_cpus": pinned.GeneratorCPUs, "http_ceiling": pinned.HTTPCeiling, "compute_ceiling": pinned.Compute,
			"saturation_batch32": pinned.Saturation}}, "", "  ")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return err
	}
	plotPath := env("BENCH_PLOT", "docs/latency-vs-load.svg")
	if err := plotCurves(plotPath, curves); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s and %s\n", out, plotPath)
	return nil
}

// stateCompare saturates the demo model with memory state, then with Dapr
// state (a real daprd and redis-server), measuring each process's CPU per
// turn. In the pinned phase daprd and redis-server go on the server cores
// too, with the servers' GOMAXPROCS.
func (h *harness) stateCompare(prefix string) (mem, dp Point, err error) {
	textBody := func(int64) []byte { return []byte(`{"text":"hello there, where is my order?"}`) }
	memEnv := []string{"SOUS_STATE=memory"}
	pm := h.startSous(memEnv...)
	h.watch = map[string]int{"sous": pm.pid}
	mem = h.saturate(prefix+"state/memory (demo model)", memEnv, pm.url, textBody, 64)
	pm.stop()

	redis := daprtest.StartRedis(h)
	appPort := freePort()
	d := daprtest.StartDaprd(h, daprtest.DaprdParams{AppID: "sous", AppPort: appPort, Redis: redis, Env: h.pinEnv})
	if h.pinCPUs != "" {
		// Started unpinned by daprtest: move every thread of each.
		for _, pid := range []int{redis.Pid(), d.Pid()} {
			if out, err := exec.Command("taskset", "-a", "-cp", h.pinCPUs, strconv.Itoa(pid)).CombinedOutput(); err != nil {
				return mem, dp, fmt.Errorf("taskset %d: %v: %s", pid, err, out)
			}
		}
	}
	daprEnv := []string{"SOUS_STATE=dapr", "DAPR_GRPC_PORT=" + strconv.Itoa(d.GRPCPort)}
	pd := h.startSousOn(appPort, daprEnv...)
	h.watch = map[string]int{"sous": pd.pid, "daprd": d.Pid(), "redis-server": redis.Pid()}
	dp = h.saturate(prefix+"state/dapr (demo model)", daprEnv, pd.url, textBody, 64)
	pd.stop()
	return mem, dp, nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// benchTurnBody is a turn whose data is one bench-model input row.
func benchTurnBody() []byte {
	rng := rand.New(rand.NewPCG(1, 1))
	vals := make([]string, demo.BenchInputs)
	for i := range vals {
		vals[i] = strconv.FormatFloat(rng.NormFloat64(), 'f', 4, 32)
	}
	return []byte(fmt.Sprintf(`{"inputs":[{"name":"x","shape":[1,%d],"datatype":"FP32","data":[%s]}]}`,
		demo.BenchInputs, strings.Join(vals, ",")))
}

// turnTargeter sends binary-mode turn events, each with its own id, over
// 1024 sessions.
func turnTargeter(url string, body func(int64) []byte) vegeta.Targeter {
	var n atomic.Int64
	return func(t *vegeta.Target) error {
		i := n.Add(1)
		t.Method, t.URL = http.MethodPost, url+"/"
		t.Header = http.Header{
			"Ce-Specversion": {"1.0"}, "Ce-Id": {strconv.FormatInt(i, 10)}, "Ce-Source": {"/bench"},
			"Ce-Type": {"ai.sous.turn"}, "Ce-Subject": {"b" + strconv.FormatInt(i%1024, 10)},
			"Content-Type": {"application/json"},
		}
		t.Body = body(i)
		return nil
	}
}

func (h *harness) attack(name string, config []string, url string, body func(int64) []byte, rate vegeta.Rate, workers uint64) Point {
	atk := vegeta.NewAttacker(vegeta.Workers(workers), vegeta.MaxWorkers(workers), vegeta.KeepAlive(true),
		vegeta.Connections(int(workers)), vegeta.Timeout(30*time.Second))
	var w *cpuWatch
	if h.watch != nil {
		w, h.watch = watchCPU(h.watch), nil
	}
	var m vegeta.Metrics
	for res := range atk.Attack(turnTargeter(url, body), rate, duration, name) {
		m.Add(res)
	}
	m.Close()
	var perTurn map[string]float64
	if w != nil {
		perTurn = w.perTurn(float64(m.Requests) * m.Success)
	}
	codes := make([]string, 0, len(m.StatusCodes))
	for c, n := range m.StatusCodes {
		codes = append(codes, fmt.Sprintf("%s:%d", c, n))
	}
	sort.Strings(codes)
	p := Point{Name: name, Config: config, OfferedRate: float64(rate.Freq) / rate.Per.Seconds(), Workers: int(workers),
		Throughput: m.Throughput, P50ms: ms(m.Latencies.P50), P99ms: ms(m.Latencies.P99), Success: m.Success,
		Codes: strings.Join(codes, " "), CPUPerTurnUs: perTurn}
	if rate.Freq == 0 {
		p.OfferedRate = 0
	}
	h.points = append(h.points, p)
	fmt.Printf("%-52s %10.0f req/s  p50 %7.2f ms  p99 %7.2f ms  ok %5.1f%%  %s\n", name, p.Throughput, p.P50ms, p.P99ms, 100*p.Success, p.Codes)
	if perTurn != nil {
		fmt.Printf("%-52s CPU per turn (µs): %s\n", "", formatCPU(perTurn))
	}
	return p
}

// saturate sends as fast as `workers` closed-loop clients can.
func (h *harness) saturate(name string, config []string, url string, body func(int64) []byte, workers uint64) Point {
	return h.attack(name, config, url, body, vegeta.Rate{Freq: 0}, workers)
}

// constant offers a fixed rate with a capped worker pool (uncapped, vegeta's
// p99 swings wildly on two cores).
func (h *harness) constant(name string, config []string, url string, body func(int64) []byte, rate float64) Point {
	return h.attack(name, config, url, body, vegeta.Rate{Freq: int(rate), Per: time.Second}, 256)
}

// fetchProfile saves a CPU profile of sous taken during an attack.
func fetchProfile(addr, path string) {
	secs := max(1, int(duration.Seconds())-1)
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs))
	if err != nil {
		log.Printf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		log.Printf("profile: %v", err)
		return
	}
	defer f.Close()
	io.Copy(f, resp.Body)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// computeCeiling runs the bench model directly, 32 items a call, for the
// point duration and returns items/s.
func computeCeiling(path string) float64 {
	e, err := model.New(model.Params{Library: model.FindLibrary(), Model: path, Device: model.DeviceCPU})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(2, 2))
	items := make([][]model.Tensor, 32)
	for k := range items {
		x := make([]float32, demo.BenchInputs)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		items[k] = []model.Tensor{{Name: "x", DType: model.FP32, Shape: []int64{1, demo.BenchInputs}, F32: x}}
	}
	var n int
	start := time.Now()
	for time.Since(start) < duration {
		if _, err := e.Run(context.Background(), items); err != nil {
			log.Fatal(err)
		}
		n += len(items)
	}
	return float64(n) / time.Since(start).Seconds()
}

func cpus() int { return numCPU() }
