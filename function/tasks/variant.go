package tasks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// DTypes are the variants a model directory may carry, named as
// transformers.js's dtype option names them, each with its file-name
// suffix (model{suffix}.onnx).
var DTypes = []struct{ DType, Suffix string }{
	{"fp32", ""}, {"fp16", "_fp16"}, {"q8", "_quantized"}, {"int8", "_int8"}, {"uint8", "_uint8"},
	{"q4", "_q4"}, {"q4f16", "_q4f16"}, {"bnb4", "_bnb4"},
}

func dtypeSuffix(dtype string) (string, bool) {
	for _, d := range DTypes {
		if d.DType == dtype {
			return d.Suffix, true
		}
	}
	return "", false
}

// Variant is the ONNX file of a model directory chosen to serve.
type Variant struct {
	// File is the .onnx file's path.
	File string
	// DType is the variant's transformers.js name; "" for a file named
	// explicitly.
	DType string
	// Source says where the choice came from (for the start-up log):
	// "SOUS_MODEL_FILE", "SOUS_MODEL_DTYPE", "config.json
	// transformers.js_config.dtype" or "default".
	Source string
	// ExternalData are the files beside File that its initializers'
	// data lies in (model.onnx_data, model.onnx.data, ...), checked to
	// exist; ONNX Runtime reads them from the same folder.
	ExternalData []string
	// DynamicQuant says the graph quantizes activations per call
	// (DynamicQuantizeLinear, the q8 export's form): one scale over all
	// a call's rows, so a position's result depends on what it is run
	// with.
	DynamicQuant bool
}

// ChooseVariant picks dir's ONNX file as transformers.js picks it: file
// (SOUS_MODEL_FILE; relative to dir unless absolute) when set; else the
// file of dtype (SOUS_MODEL_DTYPE), else of config.json's
// transformers.js_config.dtype, else fp32 (transformers.js's default on
// CPU): onnx/model{suffix}.onnx (the onnx-community layout) or
// model{suffix}.onnx (Optimum's). An unknown dtype, a missing file or
// missing external data is an error naming it and the variants present.
func ChooseVariant(dir, dtype, file string) (Variant, error) {
	if file != "" {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, file)
		}
		if _, err := os.Stat(p); err != nil {
			return Variant{}, fmt.Errorf("SOUS_MODEL_FILE %s: %w", file, err)
		}
		return withExternalData(Variant{File: p, Source: "SOUS_MODEL_FILE"})
	}
	v := Variant{DType: dtype, Source: "SOUS_MODEL_DTYPE"}
	if dtype == "" {
		v.DType, v.Source = "fp32", "default"
		var cfg struct {
			JS struct {
				DType any `json:"dtype"`
			} `json:"transformers.js_config"`
		}
		p := filepath.Join(dir, "config.json")
		if _, err := os.Stat(p); err == nil {
			if err := readJSON(p, &cfg); err != nil {
				return Variant{}, err
			}
		}
		switch d := cfg.JS.DType.(type) {
		case nil:
		case string:
			if d != "auto" {
				v.DType, v.Source = d, "config.json transformers.js_config.dtype"
			}
		default:
			// A per-file map ({"model": "q4"}): the decoder's entry.
			if m, ok := d.(map[string]any); ok {
				if s, ok := m["model"].(string); ok && s != "auto" {
					v.DType, v.Source = s, "config.json transformers.js_config.dtype.model"
				}
			}
		}
	}
	suffix, ok := dtypeSuffix(v.DType)
	if !ok {
		names := make([]string, len(DTypes))
		for i, d := range DTypes {
			names[i] = d.DType
		}
		return Variant{}, fmt.Errorf("%s dtype %q: want one of %s", v.Source, v.DType, strings.Join(names, ", "))
	}
	for _, f := range []string{filepath.Join("onnx", "model"+suffix+".onnx"), "model" + suffix + ".onnx"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			v.File = filepath.Join(dir, f)
			return withExternalData(v)
		}
	}
	present := Variants(dir)
	return Variant{}, fmt.Errorf("model directory %s: dtype %s (%s) needs onnx/model%s.onnx or model%s.onnx; present: %s",
		dir, v.DType, v.Source, suffix, suffix, orNone(present))
}

// Variants lists the dtypes whose files dir holds, as "dtype (file)".
func Variants(dir string) []string {
	var out []string
	for _, d := range DTypes {
		for _, f := range []string{filepath.Join("onnx", "model"+d.Suffix+".onnx"), "model" + d.Suffix + ".onnx"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				out = append(out, fmt.Sprintf("%s (%s)", d.DType, f))
				break
			}
		}
	}
	return out
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func withExternalData(v Variant) (Variant, error) {
	locs, dq, err := readGraph(v.File)
	if err != nil {
		return Variant{}, err
	}
	v.DynamicQuant = dq
	for _, l := range locs {
		p := filepath.Join(filepath.Dir(v.File), l)
		if _, err := os.Stat(p); err != nil {
			return Variant{}, fmt.Errorf("%s: its weights lie in external data %s, which is missing: %w", v.File, l, err)
		}
		v.ExternalData = append(v.ExternalData, p)
	}
	return v, nil
}

// ErrNotONNX marks a file that does not parse as an ONNX model.
var ErrNotONNX = errors.New("not an ONNX model")

// ExternalData returns the external data files (locations relative to the
// model's folder, each once, in order of first use) that the ONNX model
// at path keeps initializer data in. It reads the protobuf without
// decoding the weights.
func ExternalData(path string) ([]string, error) {
	locs, _, err := readGraph(path)
	return locs, err
}

// readGraph returns what ExternalData does and whether the graph has a
// DynamicQuantizeLinear node.
func readGraph(path string) ([]string, bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false, err
	}
	var locs []string
	dq := false
	bad := func() ([]string, bool, error) { return nil, false, fmt.Errorf("%s: %w", path, ErrNotONNX) }
	err = fields(b, func(num protowire.Number, v []byte) error {
		if num != 7 { // ModelProto.graph
			return nil
		}
		return fields(v, func(num protowire.Number, v []byte) error {
			if num == 1 { // GraphProto.node
				return fields(v, func(num protowire.Number, v []byte) error {
					if num == 4 && string(v) == "DynamicQuantizeLinear" { // NodeProto.op_type
						dq = true
					}
					return nil
				})
			}
			if num != 5 { // GraphProto.initializer
				return nil
			}
			return fields(v, func(num protowire.Number, v []byte) error {
				if num != 13 { // TensorProto.external_data
					return nil
				}
				var key, value string
				if err := fields(v, func(num protowire.Number, v []byte) error {
					switch num {
					case 1:
						key = string(v)
					case 2:
						value = string(v)
					}
					return nil
				}); err != nil {
					return err
				}
				if key == "location" && !slices.Contains(locs, value) {
					if !filepath.IsLocal(value) {
						return fmt.Errorf("external data location %q leaves the model's folder", value)
					}
					locs = append(locs, value)
				}
				return nil
			})
		})
	})
	if errors.Is(err, ErrNotONNX) {
		return bad()
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", path, err)
	}
	return locs, dq, nil
}

// fields calls fn with each length-delimited field of the protobuf
// message b, skipping the others.
func fields(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ErrNotONNX
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return ErrNotONNX
			}
			if err := fn(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ErrNotONNX
		}
		b = b[n:]
	}
	return nil
}
