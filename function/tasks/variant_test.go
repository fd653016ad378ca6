package tasks_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sous-ai/sous/function/model/onnxgen"
	"github.com/sous-ai/sous/function/tasks"
)

// writeFiles makes dir's files: name → content.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tinyGraph: y = x + w, w an initializer of n floats.
func tinyGraph(n int64) onnxgen.Graph {
	dims := []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Fixed(n)}
	return onnxgen.Graph{Name: "tiny", Opset: 17,
		Inputs:       []onnxgen.Value{{Name: "x", Type: onnxgen.Float, Shape: dims}},
		Outputs:      []onnxgen.Value{{Name: "y", Type: onnxgen.Float, Shape: dims}},
		Initializers: []onnxgen.Tensor{onnxgen.FloatTensor("w", []int64{n}, make([]float32, n)), onnxgen.FloatTensor("v", []int64{2}, []float32{1, 2})},
		Nodes:        []onnxgen.Node{{Op: "Add", Inputs: []string{"x", "w"}, Outputs: []string{"y"}}}}
}

func TestChooseVariant(t *testing.T) {
	community := t.TempDir() // the onnx-community layout
	writeFiles(t, community, map[string]string{"onnx/model.onnx": "", "onnx/model_q4.onnx": "", "onnx/model_fp16.onnx": "",
		"config.json": `{"model_type": "llama"}`})
	optimum := t.TempDir() // Optimum's: at the top
	writeFiles(t, optimum, map[string]string{"model.onnx": "", "model_quantized.onnx": ""})
	configured := t.TempDir()
	writeFiles(t, configured, map[string]string{"onnx/model.onnx": "", "onnx/model_q4f16.onnx": "",
		"config.json": `{"transformers.js_config": {"dtype": "q4f16"}}`})
	perFile := t.TempDir()
	writeFiles(t, perFile, map[string]string{"onnx/model_q4.onnx": "",
		"config.json": `{"transformers.js_config": {"dtype": {"model": "q4"}}}`})

	for _, tc := range []struct {
		name, dir, dtype, file string
		want, wantDType        string
		wantSource             string
	}{
		{"default fp32", community, "", "", "onnx/model.onnx", "fp32", "default"},
		{"q4", community, "q4", "", "onnx/model_q4.onnx", "q4", "SOUS_MODEL_DTYPE"},
		{"fp16", community, "fp16", "", "onnx/model_fp16.onnx", "fp16", "SOUS_MODEL_DTYPE"},
		{"optimum q8", optimum, "q8", "", "model_quantized.onnx", "q8", "SOUS_MODEL_DTYPE"},
		{"optimum default", optimum, "", "", "model.onnx", "fp32", "default"},
		{"config dtype", configured, "", "", "onnx/model_q4f16.onnx", "q4f16", "config.json transformers.js_config.dtype"},
		{"dtype overrides config", configured, "fp32", "", "onnx/model.onnx", "fp32", "SOUS_MODEL_DTYPE"},
		{"per-file config dtype", perFile, "", "", "onnx/model_q4.onnx", "q4", "config.json transformers.js_config.dtype.model"},
		{"explicit file", community, "q4", "onnx/model_fp16.onnx", "onnx/model_fp16.onnx", "", "SOUS_MODEL_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tasks.ChooseVariant(tc.dir, tc.dtype, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := v.File, filepath.Join(tc.dir, tc.want); got != want {
				t.Errorf("File = %s, want %s", got, want)
			}
			if v.DType != tc.wantDType || v.Source != tc.wantSource {
				t.Errorf("DType, Source = %q, %q; want %q, %q", v.DType, v.Source, tc.wantDType, tc.wantSource)
			}
		})
	}

	for _, tc := range []struct {
		name, dir, dtype, file string
		wantIn                 []string
	}{
		{"missing variant", community, "q8", "", []string{"dtype q8", "onnx/model_quantized.onnx", "present: fp32 (onnx/model.onnx), fp16 (onnx/model_fp16.onnx), q4 (onnx/model_q4.onnx)"}},
		{"unknown dtype", community, "q3", "", []string{`SOUS_MODEL_DTYPE dtype "q3"`, "fp32, fp16, q8"}},
		{"missing file", community, "", "onnx/nope.onnx", []string{"SOUS_MODEL_FILE onnx/nope.onnx"}},
		{"config names a missing variant", configured, "", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.wantIn == nil { // configured has its q4f16: make it vanish
				d := t.TempDir()
				writeFiles(t, d, map[string]string{"onnx/model.onnx": "", "config.json": `{"transformers.js_config": {"dtype": "q4"}}`})
				tc.dir, tc.wantIn = d, []string{"config.json transformers.js_config.dtype", "present: fp32 (onnx/model.onnx)"}
			}
			_, err := tasks.ChooseVariant(tc.dir, tc.dtype, tc.file)
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tc.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

func TestExternalData(t *testing.T) {
	dir := t.TempDir()
	g := tinyGraph(1000)
	m, data := g.MarshalExternal("model.onnx_data", 1024)
	writeFiles(t, dir, map[string]string{"model.onnx": string(m), "inline.onnx": string(g.Marshal())})
	if got, err := tasks.ExternalData(filepath.Join(dir, "model.onnx")); err != nil || !slices.Equal(got, []string{"model.onnx_data"}) {
		t.Errorf("ExternalData = %v, %v; want [model.onnx_data]", got, err)
	}
	if got, err := tasks.ExternalData(filepath.Join(dir, "inline.onnx")); err != nil || len(got) != 0 {
		t.Errorf("ExternalData of an inline model = %v, %v; want none", got, err)
	}
	_, err := tasks.ChooseVariant(dir, "", "")
	if err == nil || !strings.Contains(err.Error(), "model.onnx_data, which is missing") {
		t.Errorf("ChooseVariant without the data file: %v", err)
	}
	writeFiles(t, dir, map[string]string{"model.onnx_data": string(data)})
	v, err := tasks.ChooseVariant(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(dir, "model.onnx_data")}; !slices.Equal(v.ExternalData, want) {
		t.Errorf("ExternalData = %v, want %v", v.ExternalData, want)
	}
	writeFiles(t, dir, map[string]string{"junk.onnx": "\xff\xff\xff"})
	if _, err := tasks.ExternalData(filepath.Join(dir, "junk.onnx")); !errors.Is(err, tasks.ErrNotONNX) {
		t.Errorf("ExternalData of junk: %v, want ErrNotONNX", err)
	}
}

func FuzzExternalData(f *testing.F) {
	g, small := tinyGraph(300), tinyGraph(3)
	m, _ := g.MarshalExternal("model.onnx_data", 16)
	f.Add(m)
	f.Add(small.Marshal())
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "m.onnx")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		locs, err := tasks.ExternalData(p)
		for _, l := range locs {
			if !filepath.IsLocal(l) {
				t.Fatalf("location %q leaves the folder", l)
			}
		}
		_ = err
	})
}
