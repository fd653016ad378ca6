// Package oip serves the Open Inference Protocol v2 (REST) that KServe
// and Triton clients speak: server and model metadata, health, and
// stateless inference with tensors in and out (and, for a model
// directory, BYTES text in, as KServe's Hugging Face runtime takes it).
// Tensors are decoded strictly here: datatype, shape within limits, data
// flat or nested, numbers that fit the datatype.
package oip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/turn"
)

// Request is an inference request body.
type Request struct {
	ID         string         `json:"id,omitempty"`
	Parameters map[string]any `json:"parameters,omitempty"`
	Inputs     []TensorIn     `json:"inputs"`
	Outputs    []OutputWanted `json:"outputs,omitempty"`
}

// TensorIn is one input tensor as sent.
type TensorIn struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters map[string]any  `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data"`
}

// OutputWanted names an output the caller wants (none: all).
type OutputWanted struct {
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters,omitempty"`
}

type response struct {
	ModelName    string           `json:"model_name"`
	ModelVersion string           `json:"model_version,omitempty"`
	ID           string           `json:"id,omitempty"`
	Outputs      []turn.TensorOut `json:"outputs"`
}

// maxElements bounds one tensor of a request, before any data is parsed.
const maxElements = 1 << 22

// maxNesting bounds how deeply tensor data may nest.
const maxNesting = 32

// decodeTensor turns an OIP input into a model tensor: datatype, shape
// within limits, data flat or nested, numbers that fit the datatype.
func DecodeTensor(in TensorIn) (model.Tensor, error) {
	if in.Name == "" {
		return model.Tensor{}, turn.BadRequest("an input has no name")
	}
	dt, ok := model.ParseDType(in.Datatype)
	if !ok {
		return model.Tensor{}, turn.BadRequest("input %q: datatype %q is not served (FP32, INT64, INT32)", in.Name, in.Datatype)
	}
	if len(in.Shape) == 0 {
		return model.Tensor{}, turn.BadRequest("input %q: shape is missing", in.Name)
	}
	n := int64(1)
	for _, d := range in.Shape {
		if d < 0 {
			return model.Tensor{}, turn.BadRequest("input %q: shape %v has a negative dimension", in.Name, in.Shape)
		}
		if d != 0 && n > maxElements/d {
			return model.Tensor{}, turn.BadRequest("input %q: shape %v exceeds the limit of %d elements", in.Name, in.Shape, maxElements)
		}
		n *= d
	}
	t := model.Tensor{Name: in.Name, DType: dt, Shape: in.Shape}
	count := 0
	err := walkNumbers(in.Data, func(num string) error {
		if int64(count) == n {
			return fmt.Errorf("data has more than the %d elements of shape %v", n, in.Shape)
		}
		count++
		switch dt {
		case model.FP32:
			v, err := strconv.ParseFloat(num, 32)
			if err != nil || math.IsInf(v, 0) {
				return fmt.Errorf("element %d (%s) is not a finite FP32", count-1, num)
			}
			t.F32 = append(t.F32, float32(v))
		case model.INT64:
			v, err := strconv.ParseInt(num, 10, 64)
			if err != nil {
				return fmt.Errorf("element %d (%s) is not an INT64", count-1, num)
			}
			t.I64 = append(t.I64, v)
		case model.INT32:
			v, err := strconv.ParseInt(num, 10, 32)
			if err != nil {
				return fmt.Errorf("element %d (%s) is not an INT32", count-1, num)
			}
			t.I32 = append(t.I32, int32(v))
		}
		return nil
	})
	if err != nil {
		return model.Tensor{}, turn.BadRequest("input %q: %v", in.Name, err)
	}
	if int64(count) != n {
		return model.Tensor{}, turn.BadRequest("input %q: shape %v holds %d elements, data has %d", in.Name, in.Shape, n, count)
	}
	return t, nil
}

// walkNumbers calls fn with each number of a JSON array, flat or nested,
// in row-major order. data must be syntactically valid JSON (it comes out
// of encoding/json as a RawMessage), so a byte scanner suffices; it is ~20x
// faster than json.Decoder.Token, which allocates per element.
func walkNumbers(data json.RawMessage, fn func(string) error) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("data is missing")
	}
	depth := 0
	for i := 0; i < len(data); {
		switch c := data[i]; {
		case c == '[':
			if depth++; depth > maxNesting {
				return fmt.Errorf("data nests deeper than %d", maxNesting)
			}
			i++
		case c == ']':
			depth--
			i++
		case c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '-' || (c >= '0' && c <= '9'):
			if depth == 0 {
				return errors.New("data must be an array")
			}
			j := i + 1
			for j < len(data) && isNumberByte(data[j]) {
				j++
			}
			if err := fn(string(data[i:j])); err != nil {
				return err
			}
			i = j
		case c == '{':
			return errors.New("data must be an array of numbers, not an object")
		default:
			return fmt.Errorf("data must hold numbers only, found %s", string(data[i:min(len(data), i+16)]))
		}
	}
	return nil
}

func isNumberByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// DecodeInputs decodes every OIP input tensor.
func DecodeInputs(ins []TensorIn) ([]model.Tensor, error) {
	if len(ins) == 0 {
		return nil, turn.BadRequest("no inputs")
	}
	out := make([]model.Tensor, 0, len(ins))
	for _, in := range ins {
		t, err := DecodeTensor(in)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}
