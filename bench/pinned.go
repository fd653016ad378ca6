package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Pinned mode: the servers under test (bare echo, sous, daprd,
// redis-server, and ONNX Runtime alone) run on one set of cores and the
// load generator on the rest, so that the throughput-to-ceiling ratio says
// how close sous comes, on the cores it is given, to what a bare handler
// and ONNX Runtime do on those same cores. The parent runs the pinned
// phase as a child of itself under `taskset -c <generator cores>`; every
// server it starts is put on the server cores with GOMAXPROCS (and so ONNX
// Runtime's thread count, which follows it) to match.

// pinnedResult is what the pinned phase hands back to the parent.
type pinnedResult struct {
	ServerCPUs    string  `json:"server_cpus"`
	GeneratorCPUs string  `json:"generator_cpus"`
	HTTPCeiling   float64 `json:"http_ceiling"`
	Compute       float64 `json:"compute_ceiling"`
	Saturation    float64 `json:"saturation_batch32"`
	Memory        Point   `json:"memory"`
	Dapr          Point   `json:"dapr"`
	Points        []Point `json:"points"`
}

// affinity returns the cores this process may run on.
func affinity() ([]int, error) {
	out, err := exec.Command("taskset", "-cp", strconv.Itoa(os.Getpid())).Output()
	if err != nil {
		return nil, fmt.Errorf("taskset: %w", err)
	}
	// "pid N's current affinity list: 0-3,6"
	_, list, _ := strings.Cut(strings.TrimSpace(string(out)), ": ")
	var cpus []int
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("affinity list %q", list)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// splitCPUs returns the cores for the servers and for the generator: the
// first half and the rest of the cores this process may use.
func splitCPUs() (server, generator []int, err error) {
	cpus, err := affinity()
	if err != nil {
		return nil, nil, err
	}
	if len(cpus) < 2 {
		return nil, nil, fmt.Errorf("pinning needs 2 cores, have %v", cpus)
	}
	half := len(cpus) / 2
	return cpus[:half], cpus[half:], nil
}

func cpuList(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

// runPinned runs the pinned phase in a child pinned to the generator cores
// and returns its results.
func (h *harness) runPinned(self string) (pinnedResult, error) {
	server, generator, err := splitCPUs()
	if err != nil {
		return pinnedResult{}, err
	}
	out := filepath.Join(h.TempDir(), "pinned.json")
	cmd := exec.Command("taskset", "-c", cpuList(generator), self, "-pinned", cpuList(server), out)
	cmd.Env = append(os.Environ(), "BENCH_SOUS="+h.sous, "GOMAXPROCS="+strconv.Itoa(len(generator)),
		"BENCH_DURATION="+duration.String())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return pinnedResult{}, fmt.Errorf("pinned phase: %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return pinnedResult{}, err
	}
	var r pinnedResult
	return r, json.Unmarshal(b, &r)
}

// pinnedPhase is the child's side: it runs on the generator cores and
// starts every server on serverCPUs.
func pinnedPhase(serverCPUs, out string) error {
	h := &harness{sous: os.Getenv("BENCH_SOUS")}
	defer h.cleanup()
	n := len(strings.Split(serverCPUs, ","))
	h.pinCPUs = serverCPUs
	h.pinEnv = []string{"GOMAXPROCS=" + strconv.Itoa(n)}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	benchModel := filepath.Join(root, "function", "demo", "bench.onnx")
	benchBody := benchTurnBody()
	gen, err := affinity()
	if err != nil {
		return err
	}
	r := pinnedResult{ServerCPUs: serverCPUs, GeneratorCPUs: cpuList(gen)}
	fmt.Printf("\npinned: servers on CPU %s (GOMAXPROCS=%d), load generator on CPU %s\n", serverCPUs, n, r.GeneratorCPUs)

	bare, _ := h.start(freePort(), "/", []string{self, "-bare"}, nil)
	r.HTTPCeiling = h.saturate("pinned/ceiling/http (bare echo handler)", nil, bare.url, func(int64) []byte { return benchBody }, 64).Throughput
	bare.stop()

	// ONNX Runtime alone, in a process of its own on the server cores.
	cmd := exec.Command("taskset", "-c", serverCPUs, self, "-compute", benchModel)
	cmd.Env = append(os.Environ(), h.pinEnv...)
	b, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("compute ceiling: %w", err)
	}
	if r.Compute, err = strconv.ParseFloat(strings.TrimSpace(string(b)), 64); err != nil {
		return fmt.Errorf("compute ceiling: %q", b)
	}
	h.points = append(h.points, Point{Name: "pinned/ceiling/compute (ONNX Runtime, batches of 32)", Throughput: r.Compute})
	fmt.Printf("%-52s %10.0f items/s\n", "pinned/ceiling/compute (ONNX Runtime, batches of 32)", r.Compute)

	env := []string{"SOUS_MODEL=" + benchModel, "SOUS_STATE=memory", "SOUS_MAX_BATCH=32"}
	p := h.startSous(env...)
	h.watch = map[string]int{"sous": p.pid}
	r.Saturation = h.saturate("pinned/saturation/batch=32", env, p.url, func(int64) []byte { return benchBody }, 64).Throughput
	p.stop()

	if r.Memory, r.Dapr, err = h.stateCompare("pinned/"); err != nil {
		return err
	}

	for i := range h.points {
		h.points[i].Pinned = true
	}
	r.Points = h.points
	b, err = json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o644)
}

// cpuSeconds is the user+system CPU time a process has used, from
// /proc/<pid>/stat (in clock ticks of 1/100 s on Linux).
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from after ')'.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// cpuWatch samples the CPU time of named processes (and this one, the
// generator) around an attack.
type cpuWatch struct {
	pids  map[string]int
	start map[string]float64
	began time.Time
}

func watchCPU(pids map[string]int) *cpuWatch {
	w := &cpuWatch{pids: map[string]int{"generator": os.Getpid()}, start: map[string]float64{}, began: time.Now()}
	for k, v := range pids {
		w.pids[k] = v
	}
	for k, pid := range w.pids {
		w.start[k] = cpuSeconds(pid)
	}
	return w
}

// perTurn returns µs of CPU per answered turn for each process.
func (w *cpuWatch) perTurn(turns float64) map[string]float64 {
	m := map[string]float64{}
	if turns <= 0 {
		return m
	}
	total := 0.0
	for k, pid := range w.pids {
		us := (cpuSeconds(pid) - w.start[k]) * 1e6 / turns
		m[k] = us
		total += us
	}
	m["total"] = total
	return m
}

func formatCPU(m map[string]float64) string {
	var parts []string
	for _, k := range []string{"sous", "daprd", "redis-server", "generator", "total"} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
		}
	}
	return strings.Join(parts, ", ")
}
