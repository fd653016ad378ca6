package model_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/model/half"
	"github.com/sous-ai/sous/function/model/onnxgen"
)

// halfGraph: x FP16 and xb BF16 [B, n] → y = 2x (FP16), yb = 2xb (BF16),
// z = x as FP32, times w (an initializer, in external data when written
// so).
func halfGraph(n int64) onnxgen.Graph {
	dims := []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Fixed(n)}
	to := func(t int64) onnxgen.Attr { return onnxgen.IntAttr("to", t) }
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(i + 1)
	}
	return onnxgen.Graph{Name: "half", Opset: 17,
		Inputs: []onnxgen.Value{{Name: "x", Type: onnxgen.Float16, Shape: dims}, {Name: "xb", Type: onnxgen.BFloat16, Shape: dims}},
		Outputs: []onnxgen.Value{{Name: "y", Type: onnxgen.Float16, Shape: dims}, {Name: "yb", Type: onnxgen.BFloat16, Shape: dims},
			{Name: "z", Type: onnxgen.Float, Shape: dims}},
		Initializers: []onnxgen.Tensor{onnxgen.Float16Tensor("two", nil, []float32{2}), onnxgen.FloatTensor("two_f", nil, []float32{2}),
			onnxgen.FloatTensor("w", []int64{n}, w)},
		Nodes: []onnxgen.Node{
			{Op: "Mul", Inputs: []string{"x", "two"}, Outputs: []string{"y"}},
			{Op: "Cast", Inputs: []string{"xb"}, Outputs: []string{"xb_f"}, Attrs: []onnxgen.Attr{to(onnxgen.Float)}},
			{Op: "Mul", Inputs: []string{"xb_f", "two_f"}, Outputs: []string{"yb_f"}},
			{Op: "Cast", Inputs: []string{"yb_f"}, Outputs: []string{"yb"}, Attrs: []onnxgen.Attr{to(onnxgen.BFloat16)}},
			{Op: "Cast", Inputs: []string{"x"}, Outputs: []string{"x_f"}, Attrs: []onnxgen.Attr{to(onnxgen.Float)}},
			{Op: "Mul", Inputs: []string{"x_f", "w"}, Outputs: []string{"z"}},
		}}
}

func halfInputs(rows, n int64) ([]model.Tensor, []float32) {
	x := make([]float32, rows*n)
	for i := range x {
		x[i] = float32(i)*0.25 - 3
	}
	bf := make([]uint16, len(x))
	for i, v := range x {
		bf[i] = half.FromFloat32BF(v)
	}
	return []model.Tensor{
		{Name: "x", DType: model.FP16, Shape: []int64{rows, n}, F16: half.Slice(x)},
		{Name: "xb", DType: model.BF16, Shape: []int64{rows, n}, F16: bf},
	}, x
}

func TestHalfTensors(t *testing.T) {
	// Wide enough that a copy of half the bytes would show.
	const rows, n = 3, 700
	g := halfGraph(n)
	for _, external := range []bool{false, true} {
		t.Run(map[bool]string{false: "inline", true: "external data"}[external], func(t *testing.T) {
			p := model.Params{Library: library(t), Name: "half", Device: model.DeviceCPU}
			if external {
				dir := t.TempDir()
				m, data := g.MarshalExternal("model.onnx_data", 16)
				if len(data) == 0 {
					t.Fatal("nothing went to the external data")
				}
				p.Model = filepath.Join(dir, "model.onnx")
				if err := os.WriteFile(p.Model, m, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "model.onnx_data"), data, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				p.Data = g.Marshal()
			}
			e, err := model.New(p)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			var types []model.DType
			for _, io := range append(append([]model.Info(nil), e.Inputs()...), e.Outputs()...) {
				types = append(types, io.DType)
			}
			if want := []model.DType{model.FP16, model.BF16, model.FP16, model.BF16, model.FP32}; !slices.Equal(types, want) {
				t.Fatalf("input and output types %v, want %v", types, want)
			}

			ins, x := halfInputs(rows, n)
			if _, err := e.RunWhole(context.Background(), ins); !errors.Is(err, model.ErrNotBound) {
				t.Fatalf("RunWhole with unbound FP16 outputs: %v, want ErrNotBound", err)
			}
			shape := []int64{rows, n}
			into := map[int]model.Tensor{0: model.NewTensor("y", model.FP16, shape), 1: model.NewTensor("yb", model.BF16, shape)}
			err = e.RunBound(context.Background(), ins, model.Bind{Into: into}, func(outs []model.Tensor) error {
				y, yb, z := outs[0].Float32s(), outs[1].Float32s(), outs[2].Float32s()
				for i, v := range x {
					w := float32(i%n + 1)
					// Each as rounded to its input's precision.
					v16, vb := half.ToFloat32(half.FromFloat32(v)), half.ToFloat32BF(half.FromFloat32BF(v))
					if y[i] != 2*v16 || yb[i] != 2*vb || z[i] != v16*w {
						t.Fatalf("element %d: y %g, yb %g, z %g; want %g, %g, %g", i, y[i], yb[i], z[i], 2*v16, 2*vb, v16*w)
					}
				}
				last := len(x) - 1
				if got, want := outs[0].Float32At(last), 2*half.ToFloat32(half.FromFloat32(x[last])); got != want {
					t.Errorf("Float32At(last) = %g, want %g", got, want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// An FP16 past of length zero, as a decoder's first step passes it, is a
// valid input.
func TestHalfEmptyInput(t *testing.T) {
	dims := []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Dynamic("past"), onnxgen.Fixed(2)}
	g := onnxgen.Graph{Name: "empty", Opset: 17,
		Inputs:  []onnxgen.Value{{Name: "past", Type: onnxgen.Float16, Shape: dims}, {Name: "new", Type: onnxgen.Float16, Shape: dims}},
		Outputs: []onnxgen.Value{{Name: "present", Type: onnxgen.Float16, Shape: dims}},
		Nodes:   []onnxgen.Node{{Op: "Concat", Inputs: []string{"past", "new"}, Outputs: []string{"present"}, Attrs: []onnxgen.Attr{onnxgen.IntAttr("axis", 1)}}}}
	e, err := model.New(model.Params{Library: library(t), Data: g.Marshal(), Name: "empty", Device: model.DeviceCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ins := []model.Tensor{model.NewTensor("past", model.FP16, []int64{1, 0, 2}),
		{Name: "new", DType: model.FP16, Shape: []int64{1, 1, 2}, F16: half.Slice([]float32{1.5, -2})}}
	out := model.NewTensor("present", model.FP16, []int64{1, 1, 2})
	err = e.RunBound(context.Background(), ins, model.Bind{Into: map[int]model.Tensor{0: out}}, func(outs []model.Tensor) error {
		if got, want := outs[0].Float32s(), []float32{1.5, -2}; !slices.Equal(got, want) {
			t.Errorf("present %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Inputs without a batch dimension (num_logits_to_keep [], a merged
// decoder's use_cache_branch [1]) go to RunWhole as they are; Run, which
// batches, refuses the model.
func TestUnbatchedInputs(t *testing.T) {
	seq := []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Dynamic("seq"), onnxgen.Fixed(2)}
	g := onnxgen.Graph{Name: "keep", Opset: 17,
		Inputs: []onnxgen.Value{{Name: "x", Type: onnxgen.Float, Shape: seq}, {Name: "num_logits_to_keep", Type: onnxgen.Int64},
			{Name: "use_cache_branch", Type: onnxgen.Bool, Shape: []onnxgen.Dim{onnxgen.Fixed(1)}}},
		Outputs: []onnxgen.Value{{Name: "y", Type: onnxgen.Float, Shape: seq}},
		Initializers: []onnxgen.Tensor{onnxgen.Int64Tensor("axes", []int64{1}, []int64{1}), onnxgen.Int64Tensor("axes0", []int64{1}, []int64{0}), onnxgen.Int64Tensor("end", []int64{1}, []int64{math.MaxInt64}),
			onnxgen.FloatTensor("ten", nil, []float32{10}), onnxgen.FloatTensor("zero", nil, []float32{0})},
		Nodes: []onnxgen.Node{
			{Op: "Neg", Inputs: []string{"num_logits_to_keep"}, Outputs: []string{"neg"}},
			{Op: "Unsqueeze", Inputs: []string{"neg", "axes0"}, Outputs: []string{"start"}},
			{Op: "Slice", Inputs: []string{"x", "start", "end", "axes"}, Outputs: []string{"kept"}},
			{Op: "Where", Inputs: []string{"use_cache_branch", "ten", "zero"}, Outputs: []string{"add"}},
			{Op: "Add", Inputs: []string{"kept", "add"}, Outputs: []string{"y"}},
		}}
	e, err := model.New(model.Params{Library: library(t), Data: g.Marshal(), Name: "keep", Device: model.DeviceCPU})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if in := e.Inputs(); in[0].Unbatched || !in[1].Unbatched || !in[2].Unbatched {
		t.Fatalf("Unbatched: %v %v %v, want false true true", in[0].Unbatched, in[1].Unbatched, in[2].Unbatched)
	}
	item := []model.Tensor{{Name: "x", DType: model.FP32, Shape: []int64{1, 3, 2}, F32: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "num_logits_to_keep", DType: model.INT64, Shape: []int64{}, I64: []int64{1}},
		{Name: "use_cache_branch", DType: model.BOOL, Shape: []int64{1}, B: []bool{true}}}
	if err := e.Check(item); err != nil {
		t.Fatal(err)
	}
	out, err := e.RunWhole(context.Background(), item)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := out[0].F32, []float32{15, 16}; !slices.Equal(got, want) || !slices.Equal(out[0].Shape, []int64{1, 1, 2}) {
		t.Errorf("y = %v %v, want [1 1 2] %v", out[0].Shape, got, want)
	}
	bad := slices.Clone(item)
	bad[2] = model.Tensor{Name: "use_cache_branch", DType: model.BOOL, Shape: []int64{2}, B: []bool{true, false}}
	if err := e.Check(bad); !errors.Is(err, model.ErrInput) {
		t.Errorf("Check of use_cache_branch [2]: %v, want ErrInput", err)
	}
	if _, err := e.Run(context.Background(), [][]model.Tensor{item}); !errors.Is(err, model.ErrInput) {
		t.Errorf("Run: %v, want ErrInput", err)
	}
}
