package tasks

import (
	"os"
	"path/filepath"
	"testing"
)

// A model directory whose tokenizer.json is a language model's (byte-level
// BPE, BPE with byte fallback) opens, with that file's chat template; the
// files come from make llm-tokenizers.
func TestOpenLanguageModelTokenizers(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"qwen3", "llama3", "gpt4o", "llama2", "gemma3"} {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(root, ".cache", "llm-tokenizers", name)
			if _, err := os.Stat(filepath.Join(src, "tokenizer.json")); err != nil {
				t.Fatalf("%s: run make llm-tokenizers (%v)", src, err)
			}
			dir := t.TempDir()
			for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
				if err := os.Symlink(filepath.Join(src, f), filepath.Join(dir, f)); err != nil {
					t.Fatal(err)
				}
			}
			// Open reads the graph's file only later, when a session binds it.
			for f, b := range map[string]string{"model.onnx": "", "config.json": `{"eos_token_id": 2}`} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(b), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m, err := Open(dir, TextGeneration, "")
			if err != nil {
				t.Fatal(err)
			}
			if ids := m.Tok.IDs("Hello world"); len(ids) == 0 || m.Tok.Decode(ids) != "Hello world" {
				t.Errorf("Hello world: ids %v decode to %q", ids, m.Tok.Decode(ids))
			}
		})
	}
}
