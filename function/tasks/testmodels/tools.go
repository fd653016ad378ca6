package testmodels

import (
	"os"
	"path/filepath"
)

// ToolDecoder writes dir/tool-decoder: the test decoder (random weights,
// Optimum's form) over qwen3Dir's tokenizer.json, with its
// tokenizer_config.json (Qwen3's chat template, which renders tools and
// reads calls in the hermes format): what tests of tool calling serve.
func ToolDecoder(dir, qwen3Dir string) error {
	tok, err := os.ReadFile(filepath.Join(qwen3Dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	tc, err := os.ReadFile(filepath.Join(qwen3Dir, "tokenizer_config.json"))
	if err != nil {
		return err
	}
	if err := DecoderSized(dir, "tool-decoder", tok, decHidden, decLayers, decHeads); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tool-decoder", "tokenizer_config.json"), tc, 0o644)
}
