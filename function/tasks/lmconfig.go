package tasks

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// LMConfig is what a language model directory's config.json and
// generation_config.json say about generating, read once at start.
type LMConfig struct {
	ModelType string
	// Layers, Heads, KVHeads (Heads unless the model groups them),
	// HeadDim (Hidden / Heads unless given) and Hidden size the KV cache:
	// past_key_values.{0..Layers-1}.key/value are [B, KVHeads, past,
	// HeadDim].
	Layers, Heads, KVHeads, HeadDim, Hidden int
	// MaxPositions is max_position_embeddings (n_positions); 0 if absent.
	MaxPositions int
	// Vocab is vocab_size; 0 if absent.
	Vocab int
	// EOS are the ids that end a reply: generation_config.json's
	// eos_token_id (a number or a list), else config.json's.
	EOS []int64
	// BOS and Pad are the ids, -1 where neither file gives one.
	BOS, Pad int64
	// Generation holds the sampling defaults.
	Generation GenerationDefaults
}

// GenerationDefaults are generation_config.json's defaults, each as
// transformers.js's GenerationConfig has it when the file does not say.
type GenerationDefaults struct {
	DoSample          bool    // false
	Temperature       float64 // 1
	TopK              int     // 50
	TopP              float64 // 1
	RepetitionPenalty float64 // 1
	MaxLength         int     // 20 (prompt and reply)
	MaxNewTokens      int     // 0: none given
}

// configFile is one JSON file's top-level fields, kept raw, with the file
// name for errors.
type configFile struct {
	name   string
	fields map[string]json.RawMessage
}

func readConfigFile(dir, name string, required bool) (*configFile, error) {
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) && !required {
		return &configFile{name: name}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("model directory %s: %w", dir, err)
	}
	f := &configFile{name: name}
	if err := json.Unmarshal(b, &f.fields); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	// Multimodal configs (Gemma 3, Qwen2-VL) nest the language model's.
	if raw, ok := f.fields["text_config"]; ok {
		var text map[string]json.RawMessage
		if err := json.Unmarshal(raw, &text); err != nil {
			return nil, fmt.Errorf("%s: text_config: %w", p, err)
		}
		for k, v := range text {
			if _, ok := f.fields[k]; !ok {
				f.fields[k] = v
			}
		}
	}
	return f, nil
}

// get decodes the first of names present into v and says which it was.
func (f *configFile) get(v any, names ...string) (string, error) {
	for _, n := range names {
		raw, ok := f.fields[n]
		if !ok || string(raw) == "null" {
			continue
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return n, fmt.Errorf("%s: %s: %s is not a %s", f.name, n, raw, kind(v))
		}
		return n, nil
	}
	return "", nil
}

func kind(v any) string {
	switch v.(type) {
	case *int, *int64:
		return "whole number"
	case *float64:
		return "number"
	case *bool:
		return "boolean"
	case *string:
		return "string"
	}
	return "value of the expected type"
}

// positive reads a positive integer field, def if absent (0: required).
func (f *configFile) positive(def int, names ...string) (int, error) {
	n := def
	name, err := f.get(&n, names...)
	if err != nil {
		return 0, err
	}
	if name == "" && def == 0 {
		return 0, fmt.Errorf("%s: %s is missing", f.name, names[0])
	}
	if n < 1 {
		return 0, fmt.Errorf("%s: %s: %d, want a positive number", f.name, orFirst(name, names), n)
	}
	return n, nil
}

func orFirst(name string, names []string) string {
	if name != "" {
		return name
	}
	return names[0]
}

// ids reads a token id field that may be a number or a list of numbers.
func (f *configFile) ids(name string) ([]int64, error) {
	raw, ok := f.fields[name]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var one int64
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int64{one}, nil
	}
	var list []int64
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%s: %s: %s is not a token id or a list of them", f.name, name, raw)
	}
	return list, nil
}

// ReadLMConfig reads dir's config.json (required) and
// generation_config.json (optional), under either naming (Llama's
// num_hidden_layers, GPT-2's n_layer, ...). Errors name the file and the
// field.
func ReadLMConfig(dir string) (*LMConfig, error) {
	cfg, err := readConfigFile(dir, "config.json", true)
	if err != nil {
		return nil, err
	}
	gen, err := readConfigFile(dir, "generation_config.json", false)
	if err != nil {
		return nil, err
	}
	c := &LMConfig{BOS: -1, Pad: -1}
	if _, err := cfg.get(&c.ModelType, "model_type"); err != nil {
		return nil, err
	}
	if c.Layers, err = cfg.positive(0, "num_hidden_layers", "n_layer", "num_layers"); err != nil {
		return nil, err
	}
	if c.Heads, err = cfg.positive(0, "num_attention_heads", "n_head", "num_heads"); err != nil {
		return nil, err
	}
	if c.KVHeads, err = cfg.positive(c.Heads, "num_key_value_heads", "num_kv_heads"); err != nil {
		return nil, err
	}
	if c.Heads%c.KVHeads != 0 {
		return nil, fmt.Errorf("config.json: num_key_value_heads %d does not divide num_attention_heads %d", c.KVHeads, c.Heads)
	}
	if c.Hidden, err = cfg.positive(0, "hidden_size", "n_embd", "d_model"); err != nil {
		return nil, err
	}
	headDim := 0
	if c.Hidden%c.Heads == 0 {
		headDim = c.Hidden / c.Heads
	}
	if c.HeadDim, err = cfg.positive(headDim, "head_dim"); err != nil {
		return nil, err
	}
	if _, err := cfg.get(&c.MaxPositions, "max_position_embeddings", "n_positions"); err != nil {
		return nil, err
	}
	if _, err := cfg.get(&c.Vocab, "vocab_size"); err != nil {
		return nil, err
	}
	inVocab := func(f *configFile, name string, ids []int64) error {
		for _, id := range ids {
			if id < 0 || (c.Vocab > 0 && id >= int64(c.Vocab)) {
				return fmt.Errorf("%s: %s: %d is outside the vocabulary (vocab_size %d)", f.name, name, id, c.Vocab)
			}
		}
		return nil
	}
	for _, f := range []*configFile{gen, cfg} { // generation_config.json first
		if c.EOS == nil {
			if c.EOS, err = f.ids("eos_token_id"); err != nil {
				return nil, err
			}
			if err := inVocab(f, "eos_token_id", c.EOS); err != nil {
				return nil, err
			}
		}
		for _, p := range []struct {
			id   *int64
			name string
		}{{&c.BOS, "bos_token_id"}, {&c.Pad, "pad_token_id"}} {
			if *p.id >= 0 {
				continue
			}
			ids, err := f.ids(p.name)
			if err != nil {
				return nil, err
			}
			if err := inVocab(f, p.name, ids); err != nil {
				return nil, err
			}
			if len(ids) > 0 {
				*p.id = ids[0]
			}
		}
	}

	g := GenerationDefaults{Temperature: 1, TopK: 50, TopP: 1, RepetitionPenalty: 1, MaxLength: 20}
	for _, field := range []struct {
		v    any
		name string
	}{{&g.DoSample, "do_sample"}, {&g.Temperature, "temperature"}, {&g.TopK, "top_k"}, {&g.TopP, "top_p"},
		{&g.RepetitionPenalty, "repetition_penalty"}, {&g.MaxLength, "max_length"}, {&g.MaxNewTokens, "max_new_tokens"}} {
		if _, err := gen.get(field.v, field.name); err != nil {
			return nil, err
		}
	}
	switch {
	case g.Temperature < 0:
		return nil, fmt.Errorf("generation_config.json: temperature %g is negative", g.Temperature)
	case g.TopK < 0:
		return nil, fmt.Errorf("generation_config.json: top_k %d is negative", g.TopK)
	case g.TopP <= 0 || g.TopP > 1:
		return nil, fmt.Errorf("generation_config.json: top_p %g is outside (0, 1]", g.TopP)
	case g.RepetitionPenalty <= 0:
		return nil, fmt.Errorf("generation_config.json: repetition_penalty %g is not positive", g.RepetitionPenalty)
	}
	c.Generation = g
	return c, nil
}
