package model_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/model/onnxgen"
)

func library(t testing.TB) string {
	t.Helper()
	lib := model.FindLibrary()
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("ONNX Runtime library %s: %v (run `make test`, which fetches it)", lib, err)
	}
	return lib
}

func demoEngine(t testing.TB) *model.Engine {
	t.Helper()
	e, err := model.New(model.Params{Library: library(t), Data: demo.ONNX, Name: demo.Name, Device: model.DeviceCPU})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func benchEngine(t testing.TB) *model.Engine {
	t.Helper()
	e, err := model.New(model.Params{Library: library(t), Model: benchPath(t), Device: model.DeviceCPU})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func benchPath(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs("../demo/bench.onnx")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func textItem(text string) []model.Tensor {
	tok := demo.Tokenize(text)
	return []model.Tensor{
		{Name: "tokens", DType: model.INT64, Shape: []int64{1, int64(len(tok))}, I64: tok},
		{Name: "state_in", DType: model.FP32, Shape: []int64{1, demo.StateSize}, F32: make([]float32, demo.StateSize)},
	}
}

func benchItem(rng *rand.Rand, rows int) []model.Tensor {
	x := make([]float32, rows*demo.BenchInputs)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return []model.Tensor{{Name: "x", DType: model.FP32, Shape: []int64{int64(rows), demo.BenchInputs}, F32: x}}
}

func run(t testing.TB, e *model.Engine, items ...[]model.Tensor) [][]model.Tensor {
	t.Helper()
	for _, it := range items {
		if err := e.Check(it); err != nil {
			t.Fatal(err)
		}
	}
	out, err := e.Run(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func close32(a, b []float32, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > tol {
			return false
		}
	}
	return true
}

func TestIntrospection(t *testing.T) {
	e := demoEngine(t)
	got := fmt.Sprint(e.Inputs(), e.Outputs())
	want := "[{tokens INT64 [-1 -1] false} {state_in FP32 [-1 7] false}] [{probs FP32 [-1 6] false} {state_out FP32 [-1 7] false} {token_logits FP32 [-1 -1 6] false}]"
	if got != want {
		t.Errorf("inputs/outputs\n got %s\nwant %s", got, want)
	}
	in, out, ok := e.State()
	if !ok || e.Inputs()[in].Name != "state_in" || e.Outputs()[out].Name != "state_out" {
		t.Errorf("State() = %d, %d, %v; want the state_in/state_out pair", in, out, ok)
	}
	if got, want := e.Metadata("sous.tokenizer"), demo.Tokenizer; got != want {
		t.Errorf("metadata sous.tokenizer = %q, want %q", got, want)
	}
}

// A batch of items of different sequence lengths gives each the result it
// gets alone, and outputs with the sequence axis come back unpadded.
func TestBatchMatchesSingle(t *testing.T) {
	e := demoEngine(t)
	texts := []string{"hi", "hello there, how are you doing this fine morning?", "thanks a lot", "where is my order number 12345 and why is it late"}
	var items [][]model.Tensor
	for _, s := range texts {
		items = append(items, textItem(s))
	}
	batched := run(t, e, items...)
	for k, it := range items {
		alone := run(t, e, it)[0]
		for o := range alone {
			if fmt.Sprint(batched[k][o].Shape) != fmt.Sprint(alone[o].Shape) {
				t.Errorf("%q output %s: batched shape %v, alone %v", texts[k], alone[o].Name, batched[k][o].Shape, alone[o].Shape)
			}
			if !close32(batched[k][o].F32, alone[o].F32, 1e-5) {
				t.Errorf("%q output %s differs batched vs alone", texts[k], alone[o].Name)
			}
		}
		if got, want := batched[k][2].Shape[1], it[0].Shape[1]; got != want {
			t.Errorf("%q token_logits has %d positions, want the item's %d", texts[k], got, want)
		}
	}
}

// Items of several rows each (OIP requests with a batch dimension > 1) are
// concatenated and split back by rows.
func TestMultiRowItems(t *testing.T) {
	e := benchEngine(t)
	rng := rand.New(rand.NewPCG(1, 2))
	items := [][]model.Tensor{benchItem(rng, 3), benchItem(rng, 1), benchItem(rng, 2)}
	batched := run(t, e, items...)
	for k, it := range items {
		alone := run(t, e, it)[0][0]
		if got, want := batched[k][0].Shape, alone.Shape; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("item %d: shape %v, want %v", k, got, want)
		}
		if !close32(batched[k][0].F32, alone.F32, 1e-4) {
			t.Errorf("item %d: batched output differs from alone", k)
		}
	}
}

func TestCheckRejectsWhatDoesNotFit(t *testing.T) {
	e := demoEngine(t)
	good := textItem("hello")
	for _, tc := range []struct {
		name   string
		mutate func(it []model.Tensor) []model.Tensor
		want   string
	}{
		{"wrong datatype", func(it []model.Tensor) []model.Tensor {
			it[1] = model.Tensor{Name: "state_in", DType: model.INT64, Shape: []int64{1, 7}, I64: make([]int64, 7)}
			return it
		}, "datatype INT64, model takes FP32"},
		{"wrong fixed dimension", func(it []model.Tensor) []model.Tensor {
			it[1] = model.Tensor{Name: "state_in", DType: model.FP32, Shape: []int64{1, 8}, F32: make([]float32, 8)}
			return it
		}, "dimension 1 is 8, model takes 7"},
		{"wrong rank", func(it []model.Tensor) []model.Tensor {
			it[0].Shape = []int64{int64(len(it[0].I64))}
			return it
		}, "rank 1, model takes rank 2"},
		{"element count mismatch", func(it []model.Tensor) []model.Tensor {
			it[0].Shape = []int64{1, 99}
			return it
		}, "holds 99 elements, data has"},
		{"overflowing shape", func(it []model.Tensor) []model.Tensor {
			it[0].Shape = []int64{1 << 40, 1 << 40}
			return it
		}, "exceeds the limit"},
		{"NaN", func(it []model.Tensor) []model.Tensor {
			it[1].F32[3] = float32(math.NaN())
			return it
		}, "element 3 is NaN"},
		{"Inf", func(it []model.Tensor) []model.Tensor {
			it[1].F32[0] = float32(math.Inf(1))
			return it
		}, "element 0 is +Inf"},
		{"rows disagree", func(it []model.Tensor) []model.Tensor {
			it[1] = model.Tensor{Name: "state_in", DType: model.FP32, Shape: []int64{2, 7}, F32: make([]float32, 14)}
			return it
		}, "has 2 rows"},
		{"wrong name", func(it []model.Tensor) []model.Tensor {
			it[0].Name = "words"
			return it
		}, `is "words", model expects "tokens"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := tc.mutate(textItem("hello"))
			err := e.Check(it)
			if !errors.Is(err, model.ErrInput) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: got %v, want ErrInput saying %q", err, tc.want)
			}
		})
	}
	if err := e.Check(good); err != nil {
		t.Fatalf("Check(good): %v", err)
	}
	if _, err := e.Order([]model.Tensor{good[1]}); !errors.Is(err, model.ErrInput) || !strings.Contains(err.Error(), `"tokens" is missing`) {
		t.Errorf("Order without tokens: %v", err)
	}
	if _, err := e.Order([]model.Tensor{good[1], good[0], {Name: "extra"}}); !errors.Is(err, model.ErrInput) || !strings.Contains(err.Error(), `no input "extra"`) {
		t.Errorf("Order with an unknown input: %v", err)
	}
}

func TestModelWithoutBatchDimension(t *testing.T) {
	g := onnxgen.Graph{
		Name: "fixed", Opset: 17,
		Inputs:  []onnxgen.Value{{Name: "x", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Fixed(4)}}},
		Outputs: []onnxgen.Value{{Name: "y", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Fixed(4)}}},
		Nodes:   []onnxgen.Node{{Op: "Relu", Inputs: []string{"x"}, Outputs: []string{"y"}}},
	}
	path := filepath.Join(t.TempDir(), "fixed.onnx")
	if err := os.WriteFile(path, g.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := model.New(model.Params{Library: library(t), Model: path, Device: model.DeviceCPU})
	if err == nil || !strings.Contains(err.Error(), "first dimension must be the dynamic batch dimension") {
		t.Fatalf("New: got %v, want an error about the batch dimension", err)
	}
}

func TestDeviceAutoFallsBackToCPU(t *testing.T) {
	var logs bytes.Buffer
	e, err := model.New(model.Params{Library: library(t), Data: demo.ONNX, Name: demo.Name, Device: model.DeviceAuto,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := e.Device(); got != model.DeviceCPU {
		t.Errorf("Device() = %q, want cpu (no GPU here)", got)
	}
	if !strings.Contains(logs.String(), "falling back to CPU") {
		t.Errorf("the fallback was not logged: %s", logs.String())
	}
	_, err = model.New(model.Params{Library: library(t), Data: demo.ONNX, Name: demo.Name, Device: model.DeviceCUDA,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err == nil || !strings.Contains(err.Error(), "CUDA requested") {
		t.Errorf("Device cuda without CUDA: got %v, want a clear start-up error", err)
	}
}

func TestConcurrentBatches(t *testing.T) {
	e := benchEngine(t)
	rng := rand.New(rand.NewPCG(7, 7))
	const goroutines, perBatch = 16, 4
	items := make([][]model.Tensor, goroutines*perBatch)
	want := make([][]float32, len(items))
	for k := range items {
		items[k] = benchItem(rng, 1)
		want[k] = run(t, e, items[k])[0][0].F32
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				batch := items[g*perBatch : (g+1)*perBatch]
				out, err := e.Run(context.Background(), batch)
				if err != nil {
					t.Error(err)
					return
				}
				for i := range batch {
					if !close32(out[i][0].F32, want[g*perBatch+i], 1e-4) {
						t.Errorf("goroutine %d item %d: wrong result", g, i)
					}
				}
			}
		}()
	}
	wg.Wait()
}

func TestWarm(t *testing.T) {
	for _, e := range []*model.Engine{demoEngine(t), benchEngine(t)} {
		if err := e.Warm(context.Background(), 32); err != nil {
			t.Errorf("%s: Warm: %v", e.Name(), err)
		}
	}
}

// BenchmarkBenchModel reports the per-item cost of the bench model run one
// item at a time and 32 at a time.
func BenchmarkBenchModel(b *testing.B) {
	e := benchEngine(b)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, size := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			items := make([][]model.Tensor, size)
			for k := range items {
				items[k] = benchItem(rng, 1)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := e.Run(context.Background(), items); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/item")
		})
	}
}
