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
	"regexp"

	"github.com/ardanlabs/jinja"
)

// Message is one message of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// ToolCalls are an assistant message's calls of tools (its content
	// may then be empty).
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID names the call a tool message answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
}

// ToolCall is one call of a tool, in OpenAI's form.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"` // "function"
	Function FunctionCall `json:"function"`
}

// FunctionCall names the function called and its arguments: a JSON
// object's text.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Template is a compiled chat template with the special tokens it uses.
type Template struct {
	tmpl     *jinja.Template
	bos, eos string
	src      string
}

// Source is the template's text as the model directory gives it.
func (t *Template) Source() string { return t.src }

var toolsVariable = regexp.MustCompile(`\btools\b`)

// Tools reports whether the template renders tool definitions (reads its
// tools variable).
func (t *Template) Tools() bool { return toolsVariable.MatchString(t.src) }

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
	t, err := jinja.Compile(renameTojson(src))
	if err != nil {
		return nil, fmt.Errorf("chat_template: %w", err)
	}
	return &Template{tmpl: t, bos: bos, eos: eos, src: src}, nil
}

// Render renders messages, with the assistant's turn opened at the end
// when addGenerationPrompt is set.
func (t *Template) Render(messages []Message, addGenerationPrompt bool) (string, error) {
	return t.RenderTools(messages, nil, addGenerationPrompt)
}

// RenderTools renders messages with tool definitions: tools is a JSON
// list of OpenAI's {"type": "function", "function": {...}} objects (nil:
// none), passed to the template as its tools variable as transformers'
// apply_chat_template passes them. A call's arguments reach the template
// as the object their JSON text holds (templates write them with tojson,
// as transformers' documentation asks), or as the text itself when it is
// no JSON object.
func (t *Template) RenderTools(messages []Message, tools json.RawMessage, addGenerationPrompt bool) (string, error) {
	ms := make([]jinja.Value, len(messages))
	for i, m := range messages {
		ms[i] = messageValue(m)
	}
	data := map[string]jinja.Value{"messages": jinja.NewList(ms), "add_generation_prompt": jinja.NewBool(addGenerationPrompt),
		"bos_token": jinja.NewString(t.bos), "eos_token": jinja.NewString(t.eos), "tools": jinja.None(),
		tojsonName: jinja.NewCallable(tojsonName, tojson)}
	if len(tools) > 0 && string(tools) != "null" {
		v, err := jsonValue(tools)
		if err != nil {
			return "", fmt.Errorf("tools: %w", err)
		}
		data["tools"] = v
	}
	out, err := t.tmpl.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("chat_template: %w", err)
	}
	return out, nil
}

// messageValue is a message as the template sees it: OpenAI's fields.
func messageValue(m Message) jinja.Value {
	v := jinja.NewDict()
	d := v.AsDict()
	d.Set("role", jinja.NewString(m.Role))
	d.Set("content", jinja.NewString(m.Content))
	if len(m.ToolCalls) > 0 {
		calls := make([]jinja.Value, len(m.ToolCalls))
		for i, c := range m.ToolCalls {
			fn := jinja.NewDict()
			fn.AsDict().Set("name", jinja.NewString(c.Function.Name))
			args := jinja.NewString(c.Function.Arguments)
			if a, err := jsonValue([]byte(c.Function.Arguments)); err == nil && a.IsDict() {
				args = a
			}
			fn.AsDict().Set("arguments", args)
			call := jinja.NewDict()
			call.AsDict().Set("id", jinja.NewString(c.ID))
			call.AsDict().Set("type", jinja.NewString(c.Type))
			call.AsDict().Set("function", fn)
			calls[i] = call
		}
		d.Set("tool_calls", jinja.NewList(calls))
	}
	if m.ToolCallID != "" {
		d.Set("tool_call_id", jinja.NewString(m.ToolCallID))
	}
	return v
}
