// Package tasks serves model directories as Hugging Face Optimum exports
// them: it reads the directory (model.onnx or onnx/model.onnx,
// tokenizer.json, tokenizer_config.json, config.json), binds the model's
// inputs and outputs, encodes turn text with the model's own tokenizer and
// shapes each task's outputs (classification.go, embeddings.go,
// entities.go). It runs nothing itself: the turn pipeline batches the
// inputs it builds into ONNX Runtime calls.
package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/tokenizer"
)

// The tasks, named as Hugging Face's pipelines name them.
const (
	TextClassification  = "text-classification"
	FeatureExtraction   = "feature-extraction"
	TokenClassification = "token-classification"
	// TextGeneration is a decoder-only model (Optimum's past/present form,
	// or the GroupQueryAttention form with a shared buffer): package
	// generate runs it.
	TextGeneration = "text-generation"
)

// Aggregations of token classification, as Hugging Face's pipeline defines
// them.
var Aggregations = []string{"none", "simple", "first", "average", "max"}

// Model is a model directory bound to its ONNX model's inputs and outputs.
type Model struct {
	Dir  string
	File string // the .onnx file
	Name string // the served model's name: the directory's base name
	Tok  *tokenizer.Tokenizer
	// Task is one of the constants; from SOUS_TASK or the outputs.
	Task        string
	Labels      []string // id2label, by id
	MultiLabel  bool     // config.json problem_type multi_label_classification: sigmoid
	MaxLength   int      // tokens per input, special tokens included
	Aggregation string
	// EOS are the end-of-sequence ids of text generation: config.json's
	// and generation_config.json's eos_token_id (a number or a list),
	// else [SEP]; none if neither.
	EOS []int64
	// Variant is the ONNX file chosen (SOUS_MODEL_DTYPE, SOUS_MODEL_FILE).
	Variant Variant
	// Chat is tokenizer_config.json's chat template, nil if it has none.
	Chat *prompt.Template
	// SharedKV is the KV buffer per sequence of a decoder whose past and
	// present share it (the GroupQueryAttention form: genai_config.json's
	// search.past_present_share_buffer, with search.max_length or
	// model.context_length); 0 for Optimum's form.
	SharedKV int

	ids, mask, types int // input indexes; types -1 when the model has none
	out              int // output index
	inputs           int // number of model inputs
}

// IsDir reports whether path names a directory (a model directory, not an
// .onnx file).
func IsDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// Open reads a model directory. task ("" to infer it from the outputs) and
// aggregation ("" for simple) come from SOUS_TASK and SOUS_AGGREGATION.
func Open(dir, task, aggregation string) (*Model, error) {
	return OpenVariant(dir, task, aggregation, "", "")
}

// OpenVariant is Open with the ONNX file chosen as ChooseVariant does
// (dtype: SOUS_MODEL_DTYPE, file: SOUS_MODEL_FILE).
func OpenVariant(dir, task, aggregation, dtype, file string) (*Model, error) {
	m := &Model{Dir: dir, Name: filepath.Base(filepath.Clean(dir)), Task: task, Aggregation: aggregation}
	if m.Aggregation == "" {
		m.Aggregation = "simple"
	}
	if !slices.Contains(Aggregations, m.Aggregation) {
		return nil, fmt.Errorf("SOUS_AGGREGATION %q: want one of %s", aggregation, strings.Join(Aggregations, ", "))
	}
	if task != "" && task != TextClassification && task != FeatureExtraction && task != TokenClassification && task != TextGeneration {
		return nil, fmt.Errorf("SOUS_TASK %q: want %s, %s, %s or %s", task, TextClassification, FeatureExtraction, TokenClassification, TextGeneration)
	}
	var err error
	if m.Variant, err = ChooseVariant(dir, dtype, file); err != nil {
		return nil, err
	}
	m.File = m.Variant.File
	if m.Tok, err = tokenizer.Load(filepath.Join(dir, "tokenizer.json")); err != nil {
		return nil, fmt.Errorf("model directory %s: %w", dir, err)
	}

	var cfg struct {
		ID2Label              map[string]string `json:"id2label"`
		EOSTokenID            json.RawMessage   `json:"eos_token_id"`
		ProblemType           string            `json:"problem_type"`
		MaxPositionEmbeddings int               `json:"max_position_embeddings"`
		NPositions            int               `json:"n_positions"` // GPT-2's name for it
	}
	if err := readJSON(filepath.Join(dir, "config.json"), &cfg); err != nil {
		return nil, err
	}
	for k, v := range cfg.ID2Label {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i > 1<<16 {
			return nil, fmt.Errorf("config.json: id2label key %q is not a label id", k)
		}
		for len(m.Labels) <= i {
			m.Labels = append(m.Labels, "")
		}
		m.Labels[i] = v
	}
	m.MultiLabel = cfg.ProblemType == "multi_label_classification"
	var gen struct {
		EOSTokenID json.RawMessage `json:"eos_token_id"`
	}
	if err := readJSON(filepath.Join(dir, "generation_config.json"), &gen); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"config.json", cfg.EOSTokenID}, {"generation_config.json", gen.EOSTokenID}} {
		ids, err := tokenIDs(f.raw)
		if err != nil {
			return nil, fmt.Errorf("model directory %s: %s: eos_token_id: %w", dir, f.name, err)
		}
		for _, id := range ids {
			if !slices.Contains(m.EOS, id) {
				m.EOS = append(m.EOS, id)
			}
		}
	}
	if sep, ok := m.Tok.Special("[SEP]"); ok && len(m.EOS) == 0 {
		m.EOS = []int64{sep}
	}

	if m.Chat, err = prompt.Load(filepath.Join(dir, "tokenizer_config.json")); err != nil {
		return nil, fmt.Errorf("model directory %s: %w", dir, err)
	}
	var genai struct {
		Model struct {
			ContextLength int `json:"context_length"`
		} `json:"model"`
		Search struct {
			MaxLength   int  `json:"max_length"`
			ShareBuffer bool `json:"past_present_share_buffer"`
		} `json:"search"`
	}
	if err := readJSON(filepath.Join(dir, "genai_config.json"), &genai); err != nil {
		return nil, err
	}
	if genai.Search.ShareBuffer {
		m.SharedKV = genai.Search.MaxLength
		if m.SharedKV <= 0 {
			m.SharedKV = genai.Model.ContextLength
		}
		if m.SharedKV <= 0 {
			return nil, fmt.Errorf("model directory %s: genai_config.json shares past and present but gives no search.max_length or model.context_length", dir)
		}
	}
	var tc struct {
		ModelMaxLength float64 `json:"model_max_length"`
	}
	if err := readJSON(filepath.Join(dir, "tokenizer_config.json"), &tc); err != nil {
		return nil, err
	}
	m.MaxLength = 512
	for _, n := range []int{m.Tok.MaxLength(), cfg.MaxPositionEmbeddings, cfg.NPositions} {
		if n > 0 {
			m.MaxLength = min(m.MaxLength, n)
		}
	}
	if tc.ModelMaxLength > 0 && tc.ModelMaxLength < 1e6 {
		m.MaxLength = min(m.MaxLength, int(tc.ModelMaxLength))
	}
	if m.SharedKV > 0 {
		m.MaxLength = min(m.MaxLength, m.SharedKV) // a sequence cannot outgrow its buffer
	}
	return m, nil
}

// tokenIDs reads a token id or a list of them (absent or null: none).
func tokenIDs(raw json.RawMessage) ([]int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int64
	if json.Unmarshal(raw, &one) == nil {
		return []int64{one}, nil
	}
	var list []int64
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%s is not a token id or a list of them", raw)
	}
	return list, nil
}

// readJSON reads an optional JSON file into v.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// Bind finds Optimum's inputs (input_ids, attention_mask, token_type_ids:
// int64 [batch, sequence]) and the task's output among the model's, and
// infers the task from the outputs when none was named: logits [B, labels]
// is text classification, logits [B, S, labels] token classification,
// last_hidden_state [B, S, H] feature extraction.
func (m *Model) Bind(ins, outs []model.Info) error {
	m.ids, m.mask, m.types, m.out, m.inputs = -1, -1, -1, -1, len(ins)
	for _, in := range ins {
		if strings.HasPrefix(in.Name, "past_key_values.") {
			if m.Task != "" && m.Task != TextGeneration {
				return fmt.Errorf("model %s: SOUS_TASK %s, but the model is a decoder (it takes %s)", m.Name, m.Task, in.Name)
			}
			m.Task = TextGeneration // generate.New checks the rest
			return nil
		}
	}
	if m.Task == TextGeneration {
		return fmt.Errorf("model %s: SOUS_TASK %s wants a decoder with past_key_values inputs", m.Name, m.Task)
	}
	for i, in := range ins {
		if in.DType != model.INT64 || len(in.Shape) != 2 {
			return fmt.Errorf("model %s: input %q is %s %v, want INT64 [batch, sequence]", m.Name, in.Name, in.DType, in.Shape)
		}
		switch in.Name {
		case "input_ids":
			m.ids = i
		case "attention_mask":
			m.mask = i
		case "token_type_ids":
			m.types = i
		default:
			return fmt.Errorf("model %s: input %q is not one of Optimum's (input_ids, attention_mask, token_type_ids)", m.Name, in.Name)
		}
	}
	if m.ids < 0 || m.mask < 0 {
		return fmt.Errorf("model %s: want inputs input_ids and attention_mask", m.Name)
	}
	want := map[string]struct {
		name string
		rank int
	}{TextClassification: {"logits", 2}, TokenClassification: {"logits", 3}, FeatureExtraction: {"last_hidden_state", 3}}
	for i, o := range outs {
		for task, w := range want {
			if (m.Task == "" || m.Task == task) && o.Name == w.name && len(o.Shape) == w.rank && o.DType == model.FP32 {
				m.Task, m.out = task, i
			}
		}
		if m.out >= 0 {
			break
		}
	}
	if m.out < 0 {
		var got []string
		for _, o := range outs {
			got = append(got, fmt.Sprintf("%s %s %v", o.Name, o.DType, o.Shape))
		}
		if m.Task != "" {
			return fmt.Errorf("model %s: SOUS_TASK %s wants output %s of rank %d; the model has %s", m.Name, m.Task, want[m.Task].name, want[m.Task].rank, strings.Join(got, ", "))
		}
		return fmt.Errorf("model %s: no task follows from outputs %s (want logits or last_hidden_state)", m.Name, strings.Join(got, ", "))
	}
	return nil
}

// Encode tokenizes a turn: the text alone, or with context (earlier turns'
// texts, oldest first) as the first segment and the text as the second.
// Truncation to MaxLength takes from the context, oldest tokens first,
// never from the text; a text too long on its own is cut as a single input
// without context.
func (m *Model) Encode(text string, context []string) tokenizer.Encoding {
	if len(context) > 0 {
		first := strings.Join(context, " ")
		e, err := m.Tok.EncodeWith(first, &text, &tokenizer.Truncation{MaxLength: m.MaxLength, Strategy: "only_first", Left: true})
		if err == nil {
			return e
		}
	}
	e, _ := m.Tok.EncodeWith(text, nil, &tokenizer.Truncation{MaxLength: m.MaxLength, Strategy: "longest_first"})
	return e
}

// Inputs lays an encoding out as the model's input tensors, one row.
func (m *Model) Inputs(e tokenizer.Encoding) []model.Tensor {
	n := int64(e.Len())
	shape := []int64{1, n}
	ones := make([]int64, n)
	for i := range ones {
		ones[i] = 1
	}
	in := make([]model.Tensor, m.inputs)
	in[m.ids] = model.Tensor{Name: "input_ids", DType: model.INT64, Shape: shape, I64: e.IDs}
	in[m.mask] = model.Tensor{Name: "attention_mask", DType: model.INT64, Shape: shape, I64: ones}
	if m.types >= 0 {
		in[m.types] = model.Tensor{Name: "token_type_ids", DType: model.INT64, Shape: shape, I64: e.TypeIDs}
	}
	return in
}

// Output is one row's result, by task: *Classification, *Embedding or
// *Entities. A turn's output is its JSON; the Open Inference Protocol lays
// the same values out as tensors.
type Output any

// Entities is a token classification turn's output.
type Entities struct {
	Entities []Entity `json:"entities"`
}

// Output shapes one row's outputs as the task's result. text is the
// turn's text; its tokens are those of e's last sequence.
func (m *Model) Output(text string, e tokenizer.Encoding, outs []model.Tensor) Output {
	out := outs[m.out]
	switch m.Task {
	case TextClassification:
		c := m.classify(out.F32)
		return &c
	case FeatureExtraction:
		v := embed(out)
		return &v
	default:
		return &Entities{Entities: m.entities(text, e, out)}
	}
}

// LabelName names label i: config.json's id2label, else LABEL_i.
func (m *Model) LabelName(i int) string {
	if i < len(m.Labels) && m.Labels[i] != "" {
		return m.Labels[i]
	}
	return "LABEL_" + strconv.Itoa(i)
}
