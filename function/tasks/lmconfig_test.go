package tasks_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sous-ai/sous/function/tasks"
)

func TestReadLMConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  tasks.LMConfig
	}{
		{"llama with generation_config", map[string]string{
			"config.json": `{"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
				"hidden_size": 64, "head_dim": 8, "max_position_embeddings": 2048, "vocab_size": 151669, "eos_token_id": 151645, "bos_token_id": 151643}`,
			"generation_config.json": `{"eos_token_id": [151645, 151643], "pad_token_id": 151643, "do_sample": true,
				"temperature": 0.6, "top_k": 20, "top_p": 0.95}`},
			tasks.LMConfig{ModelType: "llama", Layers: 2, Heads: 8, KVHeads: 2, HeadDim: 8, Hidden: 64, MaxPositions: 2048, Vocab: 151669,
				EOS: []int64{151645, 151643}, BOS: 151643, Pad: 151643,
				Generation: tasks.GenerationDefaults{DoSample: true, Temperature: 0.6, TopK: 20, TopP: 0.95, RepetitionPenalty: 1, MaxLength: 20}}},
		{"gpt2 names, no generation_config", map[string]string{
			"config.json": `{"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 512, "eos_token_id": 102}`},
			tasks.LMConfig{ModelType: "gpt2", Layers: 2, Heads: 2, KVHeads: 2, HeadDim: 16, Hidden: 32, MaxPositions: 512,
				EOS: []int64{102}, BOS: -1, Pad: -1,
				Generation: tasks.GenerationDefaults{Temperature: 1, TopK: 50, TopP: 1, RepetitionPenalty: 1, MaxLength: 20}}},
		{"nested text_config, repetition penalty", map[string]string{
			"config.json": `{"model_type": "gemma3", "text_config": {"num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 1,
				"hidden_size": 128, "head_dim": 64}, "eos_token_id": [1, 106]}`,
			"generation_config.json": `{"repetition_penalty": 1.1, "max_new_tokens": 64}`},
			tasks.LMConfig{ModelType: "gemma3", Layers: 4, Heads: 4, KVHeads: 1, HeadDim: 64, Hidden: 128,
				EOS: []int64{1, 106}, BOS: -1, Pad: -1,
				Generation: tasks.GenerationDefaults{Temperature: 1, TopK: 50, TopP: 1, RepetitionPenalty: 1.1, MaxLength: 20, MaxNewTokens: 64}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			got, err := tasks.ReadLMConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("ReadLMConfig =\n%+v, want\n%+v", *got, tc.want)
			}
		})
	}
}

func TestReadLMConfigErrors(t *testing.T) {
	base := `"num_hidden_layers": 2, "num_attention_heads": 8, "hidden_size": 64`
	for _, tc := range []struct {
		name   string
		files  map[string]string
		wantIn string
	}{
		{"no config.json", map[string]string{}, "config.json"},
		{"missing layers", map[string]string{"config.json": `{"num_attention_heads": 8, "hidden_size": 64}`}, "config.json: num_hidden_layers is missing"},
		{"layers not a number", map[string]string{"config.json": `{"num_hidden_layers": "two", "num_attention_heads": 8, "hidden_size": 64}`}, `config.json: num_hidden_layers: "two" is not a whole number`},
		{"zero heads", map[string]string{"config.json": `{"num_hidden_layers": 2, "num_attention_heads": 0, "hidden_size": 64}`}, "config.json: num_attention_heads: 0, want a positive number"},
		{"kv heads do not divide", map[string]string{"config.json": `{` + base + `, "num_key_value_heads": 3}`}, "num_key_value_heads 3 does not divide"},
		{"eos not an id", map[string]string{"config.json": `{` + base + `}`, "generation_config.json": `{"eos_token_id": "</s>"}`}, `generation_config.json: eos_token_id: "</s>" is not a token id`},
		{"eos beyond vocab", map[string]string{"config.json": `{` + base + `, "vocab_size": 100}`, "generation_config.json": `{"eos_token_id": [5, 100]}`}, "generation_config.json: eos_token_id: 100 is outside the vocabulary (vocab_size 100)"},
		{"bad top_p", map[string]string{"config.json": `{` + base + `}`, "generation_config.json": `{"top_p": 0}`}, "generation_config.json: top_p 0 is outside (0, 1]"},
		{"bad temperature type", map[string]string{"config.json": `{` + base + `}`, "generation_config.json": `{"temperature": "hot"}`}, `generation_config.json: temperature: "hot" is not a number`},
		{"broken json", map[string]string{"config.json": `{`}, "config.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			_, err := tasks.ReadLMConfig(dir)
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Errorf("ReadLMConfig: %v, want an error saying %q", err, tc.wantIn)
			}
		})
	}
}
