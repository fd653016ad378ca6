package onnxgen

import (
	"bytes"
	"strings"
	"testing"
)

func TestMarshalExternal(t *testing.T) {
	big := make([]float32, 1<<18) // 1 MiB: aligned
	for i := range big {
		big[i] = float32(i)
	}
	g := Graph{Name: "g", Opset: 17,
		Inputs:  []Value{{Name: "x", Type: Float, Shape: []Dim{Dynamic("b"), Fixed(1 << 18)}}},
		Outputs: []Value{{Name: "y", Type: Float, Shape: []Dim{Dynamic("b"), Fixed(1 << 18)}}},
		Initializers: []Tensor{Int8Tensor("small", []int64{3}, []int8{1, -2, 3}), Float16Tensor("h", []int64{2}, []float32{1, 2}),
			FloatTensor("big", []int64{1 << 18}, big)},
		Nodes: []Node{{Op: "Add", Inputs: []string{"x", "big"}, Outputs: []string{"y"},
			Attrs: []Attr{StringAttr("s", "v"), TensorAttr("t", BoolTensor("b", nil, []bool{true}))}}}}
	m1, d1 := g.MarshalExternal("model.onnx_data", 4)
	m2, d2 := g.MarshalExternal("model.onnx_data", 4)
	if !bytes.Equal(m1, m2) || !bytes.Equal(d1, d2) {
		t.Fatal("MarshalExternal is not deterministic")
	}
	// small (3 bytes) stays inline; h (4 bytes) at 0, big aligned to 4096.
	if got, want := len(d1), 4096+4<<18; got != want {
		t.Errorf("external data is %d bytes, want %d", got, want)
	}
	if !bytes.Equal(d1[:4], []byte{0x00, 0x3c, 0x00, 0x40}) {
		t.Errorf("h's bytes % x, want 00 3c 00 40", d1[:4])
	}
	for _, s := range []string{"model.onnx_data", "location", "offset", "4096", "length", "1048576"} {
		if !strings.Contains(string(m1), s) {
			t.Errorf("model has no %q", s)
		}
	}
	if inline := g.Marshal(); len(inline) < 4<<18 || bytes.Contains(inline, []byte("model.onnx_data")) {
		t.Errorf("Marshal: %d bytes, external reference %v", len(inline), bytes.Contains(inline, []byte("model.onnx_data")))
	}
}

func TestTensorSizeChecked(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a tensor whose data does not fill its dims marshalled")
		}
	}()
	Tensor{Name: "bad", Dims: []int64{2, 2}, Type: Float, Raw: make([]byte, 12)}.marshal()
}
