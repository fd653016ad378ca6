// Package toolcall reads tool calls out of a language model's reply in the
// format its family was trained to write them (hermes, llama3, mistral),
// whole or while the reply streams, and gives the JSON Schema and markup
// that make a reply a call of the tools offered (the grammar enforces
// them). Malformed calls are never an error: their text is content.
package toolcall

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"

	"github.com/sous-ai/sous/function/grammar"
)

// Format is a model family's way of writing tool calls.
type Format string

const (
	// Hermes (Qwen2.5, Qwen3, Hermes): each call a JSON object in tags,
	// <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>, after
	// any text.
	Hermes Format = "hermes"
	// Llama3 (Llama 3.1 and later): the reply is the calls, JSON objects
	// {"name": ..., "parameters": {...}} (or "arguments"), separated by
	// ";" or white space.
	Llama3 Format = "llama3"
	// Mistral: [TOOL_CALLS] (a special token, which decoding leaves out)
	// then a JSON list of {"name": ..., "arguments": {...}}.
	Mistral Format = "mistral"
)

// Formats are the formats read.
var Formats = []Format{Hermes, Llama3, Mistral}

// ParseFormat reads a format's name.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("tool parser %q: want hermes, llama3 or mistral", s)
}

// Detect tells the format from the chat template that renders a model's
// tool calls: "" when the template shows none of the three.
func Detect(template string) Format {
	switch {
	case strings.Contains(template, "<tool_call>"):
		return Hermes
	case strings.Contains(template, "[TOOL_CALLS]"):
		return Mistral
	case strings.Contains(template, `"parameters": `) && strings.Contains(template, "<|start_header_id|>"):
		return Llama3
	}
	return ""
}

// Tool is one function a reply may call: its name and its parameters'
// JSON Schema.
type Tool struct {
	Name       string
	Parameters json.RawMessage
}

// noParameters is the schema of a function that takes none (OpenAI's
// meaning of a function without parameters).
var noParameters = json.RawMessage(`{"type":"object","properties":{},"additionalProperties":false}`)

// argumentsKey is the member that holds a call's arguments when the
// grammar writes one.
func (f Format) argumentsKey() string {
	if f == Llama3 {
		return "parameters"
	}
	return "arguments"
}

// Constraint returns the JSON Schema and grammar options of a reply that
// is calls of tools, in f's format: one call of any of tools, with
// arguments valid for its parameters (Mistral: a list of calls, several
// when parallel). Members come in the order name, arguments, compact.
func (f Format) Constraint(tools []Tool, parallel bool) ([]byte, grammar.Options) {
	alts := make([]json.RawMessage, len(tools))
	for i, t := range tools {
		params := t.Parameters
		if len(bytes.TrimSpace(params)) == 0 || string(params) == "null" {
			params = noParameters
		}
		name, _ := json.Marshal(t.Name)
		key, _ := json.Marshal(f.argumentsKey())
		alts[i] = json.RawMessage(fmt.Sprintf(`{"type":"object","properties":{"name":{"type":"string","const":%s},%s:%s},"required":["name",%s],"additionalProperties":false}`,
			name, key, params, key))
	}
	var call []byte
	if len(alts) == 1 {
		call = alts[0]
	} else {
		call, _ = json.Marshal(map[string]any{"anyOf": alts})
	}
	switch f {
	case Hermes:
		return call, grammar.Options{Prefix: "<tool_call>\n", Suffix: "\n</tool_call>"}
	case Mistral:
		most := ""
		if !parallel {
			most = `,"maxItems":1`
		}
		return []byte(fmt.Sprintf(`{"type":"array","items":%s,"minItems":1%s}`, call, most)), grammar.Options{}
	}
	return call, grammar.Options{}
}

// NewID returns a new call id in the form f's templates accept: Mistral's
// refuse any but 9 letters and digits; the others take OpenAI's call_...
func (f Format) NewID() string {
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	n, prefix := 24, "call_"
	if f == Mistral {
		n, prefix = 9, ""
	}
	b := []byte(prefix)
	for range n {
		b = append(b, alnum[rand.IntN(len(alnum))])
	}
	return string(b)
}

// parseCall reads one call's JSON: {"name": string, key: object} (key
// "arguments", or for Llama3 "parameters" as well; arguments given as a
// JSON string holding an object are that object). ok is false for
// anything else.
func (f Format) parseCall(body []byte) (name, args string, ok bool) {
	var c map[string]json.RawMessage
	if json.Unmarshal(body, &c) != nil {
		return "", "", false
	}
	if json.Unmarshal(c["name"], &name) != nil || !validName.MatchString(name) {
		return "", "", false
	}
	raw, found := c["arguments"]
	if !found && f == Llama3 {
		raw, found = c["parameters"]
	}
	for extra := range c {
		if extra != "name" && extra != "arguments" && extra != "parameters" {
			return "", "", false
		}
	}
	if !found {
		return name, "{}", true
	}
	raw = bytes.TrimSpace(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = []byte(strings.TrimSpace(s))
	}
	if len(raw) == 0 || raw[0] != '{' || !json.Valid(raw) {
		return "", "", false
	}
	return name, string(raw), true
}

// validName is a function name as OpenAI allows them.
var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidName reports whether name is a function name OpenAI allows:
// 1-64 of A-Z a-z 0-9 _ -.
func ValidName(name string) bool { return validName.MatchString(name) }

// jsonEnd returns the length of the JSON object or array that s starts
// with, or -1 while it is not complete (strings and escapes followed, so
// a brace inside a string does not count).
func jsonEnd(s string) int {
	depth, inString, escaped := 0, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}
