// Package onnxgen writes ONNX model files: a small graph builder over the
// ONNX protobuf wire format (onnx.proto, IR version 8), enough for the
// models sous generates. Output is deterministic: the same graph gives the
// same bytes.
package onnxgen

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Element types, as onnx.proto TensorProto.DataType numbers them.
const (
	Float = 1
	Int32 = 6
	Int64 = 7
)

// Dim is one dimension of a graph input or output: a fixed size, or a named
// dynamic one (Param set, shown as -1 by runtimes).
type Dim struct {
	Value int64
	Param string
}

// Dynamic returns a named dynamic dimension.
func Dynamic(name string) Dim { return Dim{Param: name} }

// Fixed returns a dimension of size n.
func Fixed(n int64) Dim { return Dim{Value: n} }

// Value describes a graph input or output.
type Value struct {
	Name  string
	Type  int
	Shape []Dim
}

// Attr is a node attribute: exactly one of Int, Ints, Float is meaningful,
// as Kind says.
type Attr struct {
	Name  string
	Kind  AttrKind
	Int   int64
	Ints  []int64
	Float float32
}

// AttrKind is onnx.proto AttributeProto.AttributeType.
type AttrKind int

// Attribute kinds used here.
const (
	AttrFloat AttrKind = 1
	AttrInt   AttrKind = 2
	AttrInts  AttrKind = 7
)

// Node is one operator.
type Node struct {
	Op      string
	Inputs  []string
	Outputs []string
	Attrs   []Attr
	// Domain is the operator set's domain: "" for ONNX's own, MSDomain for
	// ONNX Runtime's contrib operators.
	Domain string
}

// MSDomain is the domain of ONNX Runtime's contrib operators
// (com.microsoft.GroupQueryAttention and others); a graph that uses it
// imports version 1 of it.
const MSDomain = "com.microsoft"

// Tensor is an initializer: float32 or int64 data, row-major.
type Tensor struct {
	Name    string
	Dims    []int64
	Floats  []float32
	Int64s  []int64
	isInt64 bool
}

// FloatTensor returns a float32 initializer.
func FloatTensor(name string, dims []int64, data []float32) Tensor {
	return Tensor{Name: name, Dims: dims, Floats: data}
}

// Int64Tensor returns an int64 initializer.
func Int64Tensor(name string, dims []int64, data []int64) Tensor {
	return Tensor{Name: name, Dims: dims, Int64s: data, isInt64: true}
}

// Graph is a whole model.
type Graph struct {
	Name         string
	Doc          string
	Opset        int64
	Inputs       []Value
	Outputs      []Value
	Initializers []Tensor
	Nodes        []Node
	// Metadata is written as ModelProto.metadata_props, in slice order.
	Metadata [][2]string
}

// Marshal encodes g as an ONNX ModelProto.
func (g *Graph) Marshal() []byte {
	var graph []byte
	for _, n := range g.Nodes {
		graph = protowire.AppendTag(graph, 1, protowire.BytesType)
		graph = protowire.AppendBytes(graph, n.marshal())
	}
	graph = appendString(graph, 2, g.Name)
	for _, t := range g.Initializers {
		graph = protowire.AppendTag(graph, 5, protowire.BytesType)
		graph = protowire.AppendBytes(graph, t.marshal())
	}
	if g.Doc != "" {
		graph = appendString(graph, 10, g.Doc)
	}
	for _, v := range g.Inputs {
		graph = protowire.AppendTag(graph, 11, protowire.BytesType)
		graph = protowire.AppendBytes(graph, v.marshal())
	}
	for _, v := range g.Outputs {
		graph = protowire.AppendTag(graph, 12, protowire.BytesType)
		graph = protowire.AppendBytes(graph, v.marshal())
	}

	var m []byte
	m = protowire.AppendTag(m, 1, protowire.VarintType) // ir_version
	m = protowire.AppendVarint(m, 8)
	m = appendString(m, 2, "sous")
	m = protowire.AppendTag(m, 7, protowire.BytesType)
	m = protowire.AppendBytes(m, graph)
	var opset []byte
	opset = appendString(opset, 1, "")
	opset = protowire.AppendTag(opset, 2, protowire.VarintType)
	opset = protowire.AppendVarint(opset, uint64(g.Opset))
	m = protowire.AppendTag(m, 8, protowire.BytesType)
	m = protowire.AppendBytes(m, opset)
	for _, n := range g.Nodes {
		if n.Domain == MSDomain {
			var ms []byte
			ms = appendString(ms, 1, MSDomain)
			ms = protowire.AppendTag(ms, 2, protowire.VarintType)
			ms = protowire.AppendVarint(ms, 1)
			m = protowire.AppendTag(m, 8, protowire.BytesType)
			m = protowire.AppendBytes(m, ms)
			break
		}
	}
	for _, kv := range g.Metadata {
		var e []byte
		e = appendString(e, 1, kv[0])
		e = appendString(e, 2, kv[1])
		m = protowire.AppendTag(m, 14, protowire.BytesType)
		m = protowire.AppendBytes(m, e)
	}
	return m
}

func appendString(b []byte, field protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func (n Node) marshal() []byte {
	var b []byte
	for _, in := range n.Inputs {
		b = appendString(b, 1, in)
	}
	for _, out := range n.Outputs {
		b = appendString(b, 2, out)
	}
	b = appendString(b, 3, n.Outputs[0])
	b = appendString(b, 4, n.Op)
	for _, a := range n.Attrs {
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, a.marshal())
	}
	if n.Domain != "" {
		b = appendString(b, 7, n.Domain)
	}
	return b
}

func (a Attr) marshal() []byte {
	var b []byte
	b = appendString(b, 1, a.Name)
	switch a.Kind {
	case AttrFloat:
		b = protowire.AppendTag(b, 2, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(a.Float))
	case AttrInt:
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(a.Int))
	case AttrInts:
		for _, v := range a.Ints {
			b = protowire.AppendTag(b, 8, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		}
	}
	b = protowire.AppendTag(b, 20, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(a.Kind))
}

func (t Tensor) marshal() []byte {
	var b []byte
	for _, d := range t.Dims {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(d))
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	var raw []byte
	if t.isInt64 {
		b = protowire.AppendVarint(b, Int64)
		raw = make([]byte, 8*len(t.Int64s))
		for i, v := range t.Int64s {
			binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
		}
	} else {
		b = protowire.AppendVarint(b, Float)
		raw = make([]byte, 4*len(t.Floats))
		for i, v := range t.Floats {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
		}
	}
	b = appendString(b, 8, t.Name)
	b = protowire.AppendTag(b, 9, protowire.BytesType)
	return protowire.AppendBytes(b, raw)
}

func (v Value) marshal() []byte {
	var shape []byte
	for _, d := range v.Shape {
		var dim []byte
		if d.Param != "" {
			dim = appendString(dim, 2, d.Param)
		} else {
			dim = protowire.AppendTag(dim, 1, protowire.VarintType)
			dim = protowire.AppendVarint(dim, uint64(d.Value))
		}
		shape = protowire.AppendTag(shape, 1, protowire.BytesType)
		shape = protowire.AppendBytes(shape, dim)
	}
	var tensor []byte
	tensor = protowire.AppendTag(tensor, 1, protowire.VarintType)
	tensor = protowire.AppendVarint(tensor, uint64(v.Type))
	tensor = protowire.AppendTag(tensor, 2, protowire.BytesType)
	tensor = protowire.AppendBytes(tensor, shape)
	var typ []byte
	typ = protowire.AppendTag(typ, 1, protowire.BytesType)
	typ = protowire.AppendBytes(typ, tensor)

	var b []byte
	b = appendString(b, 1, v.Name)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendBytes(b, typ)
}
