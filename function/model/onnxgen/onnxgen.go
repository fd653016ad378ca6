// Package onnxgen writes ONNX model files: a small graph builder over the
// ONNX protobuf wire format (onnx.proto, IR version 8), enough for the
// models sous generates. Output is deterministic: the same graph gives the
// same bytes.
package onnxgen

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/sous-ai/sous/function/model/half"

	"google.golang.org/protobuf/encoding/protowire"
)

// Element types, as onnx.proto TensorProto.DataType numbers them.
const (
	Float    = 1
	Uint8    = 2
	Int8     = 3
	Int32    = 6
	Int64    = 7
	Bool     = 9
	Float16  = 10
	BFloat16 = 16
)

// elementSize is the bytes one element of type t takes in raw data.
func elementSize(t int) int {
	switch t {
	case Uint8, Int8, Bool:
		return 1
	case Float16, BFloat16:
		return 2
	case Float, Int32:
		return 4
	case Int64:
		return 8
	}
	panic(fmt.Sprintf("onnxgen: element type %d has no raw size here", t))
}

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

// Attr is a node attribute: the one field Kind names is meaningful.
type Attr struct {
	Name   string
	Kind   AttrKind
	Int    int64
	Ints   []int64
	Float  float32
	Floats []float32
	String string
	Tensor *Tensor
}

// AttrKind is onnx.proto AttributeProto.AttributeType.
type AttrKind int

// Attribute kinds used here.
const (
	AttrFloat  AttrKind = 1
	AttrInt    AttrKind = 2
	AttrString AttrKind = 3
	AttrTensor AttrKind = 4
	AttrFloats AttrKind = 6
	AttrInts   AttrKind = 7
)

// IntAttr, FloatAttr, StringAttr, IntsAttr and TensorAttr make attributes.
func IntAttr(name string, v int64) Attr { return Attr{Name: name, Kind: AttrInt, Int: v} }

// FloatAttr makes a float attribute.
func FloatAttr(name string, v float32) Attr { return Attr{Name: name, Kind: AttrFloat, Float: v} }

// StringAttr makes a string attribute.
func StringAttr(name, v string) Attr { return Attr{Name: name, Kind: AttrString, String: v} }

// IntsAttr makes an ints attribute.
func IntsAttr(name string, v ...int64) Attr { return Attr{Name: name, Kind: AttrInts, Ints: v} }

// TensorAttr makes a tensor attribute (Constant's value).
func TensorAttr(name string, t Tensor) Attr { return Attr{Name: name, Kind: AttrTensor, Tensor: &t} }

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

// Tensor is an initializer: its elements of Type, row-major, as ONNX's
// raw_data lays them out (little-endian).
type Tensor struct {
	Name string
	Dims []int64
	Type int
	Raw  []byte
}

// FloatTensor returns a float32 initializer.
func FloatTensor(name string, dims []int64, data []float32) Tensor {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, Dims: dims, Type: Float, Raw: raw}
}

// Float16Tensor returns a float16 initializer of data rounded to half
// precision (ties to even).
func Float16Tensor(name string, dims []int64, data []float32) Tensor {
	raw := make([]byte, 2*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint16(raw[2*i:], half.FromFloat32(v))
	}
	return Tensor{Name: name, Dims: dims, Type: Float16, Raw: raw}
}

// BFloat16Tensor returns a bfloat16 initializer of data rounded to
// bfloat16 (ties to even).
func BFloat16Tensor(name string, dims []int64, data []float32) Tensor {
	raw := make([]byte, 2*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint16(raw[2*i:], half.FromFloat32BF(v))
	}
	return Tensor{Name: name, Dims: dims, Type: BFloat16, Raw: raw}
}

// Int64Tensor returns an int64 initializer.
func Int64Tensor(name string, dims []int64, data []int64) Tensor {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	return Tensor{Name: name, Dims: dims, Type: Int64, Raw: raw}
}

// Int32Tensor returns an int32 initializer.
func Int32Tensor(name string, dims []int64, data []int32) Tensor {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
	}
	return Tensor{Name: name, Dims: dims, Type: Int32, Raw: raw}
}

// Uint8Tensor returns a uint8 initializer (also the packed form of 4-bit
// weights, two to a byte).
func Uint8Tensor(name string, dims []int64, data []uint8) Tensor {
	return Tensor{Name: name, Dims: dims, Type: Uint8, Raw: append([]byte(nil), data...)}
}

// Int8Tensor returns an int8 initializer.
func Int8Tensor(name string, dims []int64, data []int8) Tensor {
	raw := make([]byte, len(data))
	for i, v := range data {
		raw[i] = byte(v)
	}
	return Tensor{Name: name, Dims: dims, Type: Int8, Raw: raw}
}

// BoolTensor returns a bool initializer.
func BoolTensor(name string, dims []int64, data []bool) Tensor {
	raw := make([]byte, len(data))
	for i, v := range data {
		if v {
			raw[i] = 1
		}
	}
	return Tensor{Name: name, Dims: dims, Type: Bool, Raw: raw}
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

// Marshal encodes g as an ONNX ModelProto, every initializer inside it.
func (g *Graph) Marshal() []byte {
	m, _ := g.marshal("", 0)
	return m
}

// MarshalExternal encodes g with the data of every initializer of at least
// threshold bytes in a separate file, as ONNX's external data format (and
// Optimum, for models past protobuf's 2 GB) lays it out: the model names
// location (a file name relative to the model's own folder) with each
// tensor's offset and length; data is that file's content. Offsets of
// tensors of 1 MiB and more are aligned to 4096 bytes, so that a runtime
// can map them.
func (g *Graph) MarshalExternal(location string, threshold int) (model, data []byte) {
	return g.marshal(location, threshold)
}

func (g *Graph) marshal(location string, threshold int) ([]byte, []byte) {
	var data []byte
	var graph []byte
	for _, n := range g.Nodes {
		graph = protowire.AppendTag(graph, 1, protowire.BytesType)
		graph = protowire.AppendBytes(graph, n.marshal())
	}
	graph = appendString(graph, 2, g.Name)
	for _, t := range g.Initializers {
		graph = protowire.AppendTag(graph, 5, protowire.BytesType)
		if location != "" && len(t.Raw) >= threshold {
			if len(t.Raw) >= 1<<20 {
				for len(data)%4096 != 0 {
					data = append(data, 0)
				}
			}
			graph = protowire.AppendBytes(graph, t.marshalExternal(location, len(data)))
			data = append(data, t.Raw...)
			continue
		}
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
	return m, data
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
	case AttrString:
		b = appendString(b, 4, a.String)
	case AttrTensor:
		b = protowire.AppendTag(b, 5, protowire.BytesType)
		b = protowire.AppendBytes(b, a.Tensor.marshal())
	case AttrFloats:
		for _, v := range a.Floats {
			b = protowire.AppendTag(b, 7, protowire.Fixed32Type)
			b = protowire.AppendFixed32(b, math.Float32bits(v))
		}
	case AttrInts:
		for _, v := range a.Ints {
			b = protowire.AppendTag(b, 8, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v))
		}
	}
	b = protowire.AppendTag(b, 20, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(a.Kind))
}

func (t Tensor) header() []byte {
	if n := int64(elementSize(t.Type)); n*elements(t.Dims) != int64(len(t.Raw)) {
		panic(fmt.Sprintf("onnxgen: tensor %s of dims %v has %d bytes of type %d", t.Name, t.Dims, len(t.Raw), t.Type))
	}
	var b []byte
	for _, d := range t.Dims {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(d))
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(t.Type))
	return appendString(b, 8, t.Name)
}

func elements(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return n
}

func (t Tensor) marshal() []byte {
	b := t.header()
	b = protowire.AppendTag(b, 9, protowire.BytesType)
	return protowire.AppendBytes(b, t.Raw)
}

// marshalExternal encodes t as stored at offset of location: the
// external_data entries and data_location EXTERNAL.
func (t Tensor) marshalExternal(location string, offset int) []byte {
	b := t.header()
	for _, kv := range [][2]string{{"location", location}, {"offset", fmt.Sprint(offset)}, {"length", fmt.Sprint(len(t.Raw))}} {
		var e []byte
		e = appendString(e, 1, kv[0])
		e = appendString(e, 2, kv[1])
		b = protowire.AppendTag(b, 13, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	b = protowire.AppendTag(b, 14, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
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
