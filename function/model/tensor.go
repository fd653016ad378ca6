package model

import (
	"errors"
	"fmt"
	"math"

	"github.com/sous-ai/sous/function/model/half"
)

// DType is a tensor element type, named as the Open Inference Protocol names
// it.
type DType int

// Supported element types.
const (
	FP32 DType = iota + 1
	INT64
	INT32
	// FP16 is IEEE binary16, BF16 bfloat16: both held as their bits in
	// Tensor.F16 (package half converts).
	FP16
	BF16
	BOOL
)

var dtypeNames = map[DType]string{FP32: "FP32", INT64: "INT64", INT32: "INT32", FP16: "FP16", BF16: "BF16", BOOL: "BOOL"}

func (d DType) String() string {
	if s, ok := dtypeNames[d]; ok {
		return s
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// ParseDType maps an OIP datatype name to a DType.
func ParseDType(s string) (DType, bool) {
	for d, name := range dtypeNames {
		if name == s {
			return d, true
		}
	}
	return 0, false
}

// Tensor is one named tensor, row-major. Exactly the slice matching DType is
// set. The leading dimension counts rows: items are concatenated along it.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	F32   []float32
	I64   []int64
	I32   []int32
	F16   []uint16 // FP16 or BF16, as DType says: the raw bits
	B     []bool
}

// Len returns the number of elements held.
func (t *Tensor) Len() int {
	switch t.DType {
	case FP32:
		return len(t.F32)
	case INT64:
		return len(t.I64)
	case INT32:
		return len(t.I32)
	case FP16, BF16:
		return len(t.F16)
	case BOOL:
		return len(t.B)
	}
	return 0
}

// NewTensor returns a zero-valued tensor of dtype and shape.
func NewTensor(name string, dtype DType, shape []int64) Tensor {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	t := Tensor{Name: name, DType: dtype, Shape: append([]int64(nil), shape...)}
	switch dtype {
	case FP32:
		t.F32 = make([]float32, n)
	case INT64:
		t.I64 = make([]int64, n)
	case INT32:
		t.I32 = make([]int32, n)
	case FP16, BF16:
		t.F16 = make([]uint16, n)
	case BOOL:
		t.B = make([]bool, n)
	}
	return t
}

// Float32s returns the tensor's elements as float32: FP32's own slice
// (not a copy), FP16 and BF16 converted. Other types return nil.
func (t *Tensor) Float32s() []float32 {
	switch t.DType {
	case FP32:
		return t.F32
	case FP16:
		return half.Float32s(t.F16)
	case BF16:
		out := make([]float32, len(t.F16))
		for i, v := range t.F16 {
			out[i] = half.ToFloat32BF(v)
		}
		return out
	}
	return nil
}

// Float32At returns element i as a float32 for FP32, FP16 and BF16
// tensors, without converting the rest (a decoder's logits row).
func (t *Tensor) Float32At(i int) float32 {
	switch t.DType {
	case FP16:
		return half.ToFloat32(t.F16[i])
	case BF16:
		return half.ToFloat32BF(t.F16[i])
	}
	return t.F32[i]
}

// Info describes a model input or output. Dynamic dimensions are -1.
type Info struct {
	Name  string
	DType DType
	Shape []int64
	// Unbatched marks an input without a leading dynamic batch dimension
	// (a scalar num_logits_to_keep, a merged decoder's use_cache_branch
	// [1]): one value for the whole call. Run cannot batch such a model;
	// RunWhole and RunBound take it.
	Unbatched bool
}

// ErrInput marks an input that does not fit the model: the caller's fault,
// never the server's.
var ErrInput = errors.New("model: input does not fit the model")

func inputErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInput, fmt.Sprintf(format, args...))
}

// elements returns the product of shape, or an error if a dimension is
// negative or the product exceeds limit.
func elements(shape []int64, limit int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d", d)
		}
		if d != 0 && n > limit/d {
			return 0, fmt.Errorf("shape %v exceeds the limit of %d elements", shape, limit)
		}
		n *= d
	}
	if n > limit {
		return 0, fmt.Errorf("shape %v exceeds the limit of %d elements", shape, limit)
	}
	return n, nil
}

// check validates one item's tensor against the model's input info.
func check(t *Tensor, in Info, maxElements int64) error {
	if t.DType != in.DType {
		return inputErr("input %q: datatype %s, model takes %s", t.Name, t.DType, in.DType)
	}
	if len(t.Shape) != len(in.Shape) {
		return inputErr("input %q: shape %v has rank %d, model takes rank %d (%v)", t.Name, t.Shape, len(t.Shape), len(in.Shape), in.Shape)
	}
	n, err := elements(t.Shape, maxElements)
	if err != nil {
		return inputErr("input %q: %v", t.Name, err)
	}
	if in.Unbatched {
		for i := range t.Shape {
			if in.Shape[i] >= 0 && t.Shape[i] != in.Shape[i] {
				return inputErr("input %q: shape %v, model takes %v", t.Name, t.Shape, in.Shape)
			}
		}
		if int64(t.Len()) != n {
			return inputErr("input %q: shape %v holds %d elements, data has %d", t.Name, t.Shape, n, t.Len())
		}
		return nil
	}
	if t.Shape[0] < 1 {
		return inputErr("input %q: shape %v has no rows", t.Name, t.Shape)
	}
	for i := 1; i < len(t.Shape); i++ {
		if in.Shape[i] >= 0 && t.Shape[i] != in.Shape[i] {
			return inputErr("input %q: dimension %d is %d, model takes %d (%v)", t.Name, i, t.Shape[i], in.Shape[i], in.Shape)
		}
		if in.Shape[i] < 0 && t.Shape[i] < 1 {
			return inputErr("input %q: dynamic dimension %d must be at least 1", t.Name, i)
		}
	}
	if int64(t.Len()) != n {
		return inputErr("input %q: shape %v holds %d elements, data has %d", t.Name, t.Shape, n, t.Len())
	}
	if t.DType == FP32 {
		for i, v := range t.F32 {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return inputErr("input %q: element %d is %v", t.Name, i, v)
			}
		}
	}
	return nil
}

// copyBlock copies the leading block of shape block from src, laid out
// row-major as srcShape, into dst, laid out as dstShape (only dimensions 1
// and up of a layout matter). It pads an item into a batch (block =
// srcShape) and cuts an item back out of one (block = dstShape); what lies
// outside the block is left as it was.
func copyBlock[T any](dst []T, dstShape []int64, src []T, srcShape []int64, block []int64) {
	if len(block) == 1 {
		copy(dst, src[:block[0]])
		return
	}
	dstStride, srcStride := int64(1), int64(1)
	for _, d := range dstShape[1:] {
		dstStride *= d
	}
	for _, d := range srcShape[1:] {
		srcStride *= d
	}
	for i := int64(0); i < block[0]; i++ {
		copyBlock(dst[i*dstStride:], dstShape[1:], src[i*srcStride:], srcShape[1:], block[1:])
	}
}

// fill sets every element of s to v.
func fill[T any](s []T, v T) {
	for i := range s {
		s[i] = v
	}
}
