// Package prompt builds a decoder model's prompt from a conversation: the
// model's chat template (tokenizer_config.json's chat_template, Jinja)
// rendered into the text the model was trained on, and a stored transcript
// windowed to fit the model's positions (window.go). Templates run on
// github.com/ardanlabs/jinja, a pure-Go Jinja engine built for chat
// templates. Renderings are held to @huggingface/jinja's (the engine
// transformers.js applies chat templates with) on committed conversations
// (testdata/).
package prompt

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/ardanlabs/jinja"
)

// Message is one message of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Template is a compiled chat template with the special tokens it uses.
type Template struct {
	tmpl     *jinja.Template
	bos, eos string
}

// Load reads a tokenizer_config.json's chat template; it returns nil, nil
// when the file or its chat_template is absent.
func Load(path string) (*Template, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cfg struct {
		ChatTemplate json.RawMessage `json:"chat_template"`
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	src, err := templateSource(cfg.ChatTemplate)
	if err != nil || src == "" {
		return nil, err
	}
	return Compile(src, token(cfg.BOS), token(cfg.EOS))
}

// templateSource takes chat_template as a string, or as a list of named
// templates (the one named "default").
func templateSource(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var named []struct{ Name, Template string }
	if err := json.Unmarshal(raw, &named); err != nil {
		return "", fmt.Errorf("chat_template: want a string or a list of {name, template}")
	}
	for _, n := range named {
		if n.Name == "default" {
			return n.Template, nil
		}
	}
	return "", fmt.Errorf("chat_template: no template named default")
}

// token reads a special token given as a string or as {"content": ...}.
func token(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var t struct{ Content string }
	json.Unmarshal(raw, &t)
	return t.Content
}

// Compile compiles a chat template with its bos and eos tokens.
func Compile(src, bos, eos string) (*Template, error) {
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("chat_template: %w", err)
	}
	return &Template{tmpl: t, bos: bos, eos: eos}, nil
}

// Render renders messages, with the assistant's turn opened at the end
// when addGenerationPrompt is set.
func (t *Template) Render(messages []Message, addGenerationPrompt bool) (string, error) {
	ms := make([]any, len(messages))
	for i, m := range messages {
		ms[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	out, err := t.tmpl.Render(map[string]any{"messages": ms, "add_generation_prompt": addGenerationPrompt,
		"bos_token": t.bos, "eos_token": t.eos})
	if err != nil {
		return "", fmt.Errorf("chat_template: %w", err)
	}
	return out, nil
}
