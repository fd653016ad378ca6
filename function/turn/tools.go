package turn

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/sous-ai/sous/function/grammar"
	"github.com/sous-ai/sous/function/toolcall"
)

// toolDef is one of OpenAI's tool definitions.
type toolDef struct {
	Type     string `json:"type"`
	Function *struct {
		Name        string          `json:"name"`
		Description *string         `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
}

// toolSettings checks a request's tools and tool_choice into s: the tool
// definitions for the template, whether replies are read for calls, and
// for required or a named function the constraint that enforces a call
// (in the model's format, its arguments valid for the function's
// parameters).
func (r *generationRunner) toolSettings(g *GenParams, s *generateSettings) error {
	choice, named, err := parseToolChoice(g.ToolChoice)
	if err != nil {
		return err
	}
	raw := bytes.TrimSpace(g.Tools)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == "[]" {
		if choice == "required" || named != "" {
			return BadRequest("tool_choice %s: no tools given", g.ToolChoice)
		}
		return nil
	}
	if r.dir.Chat == nil || !r.dir.Chat.Tools() {
		return BadRequest("tools: model %s's chat template renders no tools", r.m.Name())
	}
	if r.toolFormat == "" {
		return BadRequest("tools: the format of model %s's tool calls is not known from its chat template; set SOUS_TOOL_PARSER (hermes, llama3 or mistral)", r.m.Name())
	}
	var defs []toolDef
	if err := json.Unmarshal(raw, &defs); err != nil {
		return BadRequest("tools: want a list of {\"type\": \"function\", \"function\": {...}}: %v", err)
	}
	if len(defs) > maxTools {
		return BadRequest("tools: %d given, at most %d", len(defs), maxTools)
	}
	var tools []toolcall.Tool
	seen := map[string]bool{}
	for i, d := range defs {
		if d.Type != "function" || d.Function == nil {
			return BadRequest("tools[%d]: type %q: only type function with a function object is supported", i, d.Type)
		}
		f := d.Function
		if !toolcall.ValidName(f.Name) {
			return BadRequest("tools[%d]: function name %q: want 1-64 of a-z A-Z 0-9 _ -", i, f.Name)
		}
		if seen[f.Name] {
			return BadRequest("tools[%d]: function %q is defined twice", i, f.Name)
		}
		seen[f.Name] = true
		params := bytes.TrimSpace(f.Parameters)
		if len(params) > 0 && string(params) != "null" {
			if params[0] != '{' {
				return BadRequest("tools[%d] %s: parameters must be a JSON Schema object", i, f.Name)
			}
			// A schema that is not valid is refused even where the call is
			// not enforced; one the grammar cannot enforce only matters
			// where it is.
			if _, err := grammar.Compile(params, grammar.Options{}); err != nil {
				var se *grammar.SchemaError
				if errors.As(err, &se) {
					return BadRequest("tools[%d] %s: parameters: %v", i, f.Name, err)
				}
			}
		} else {
			params = nil
		}
		tools = append(tools, toolcall.Tool{Name: f.Name, Parameters: params})
	}
	if named != "" && !seen[named] {
		return BadRequest("tool_choice: no tool named %q among the tools given", named)
	}
	s.tools, s.parse = raw, choice != "none"
	parallel := g.ParallelToolCalls == nil || *g.ParallelToolCalls
	if !parallel {
		s.most = 1
	}
	if choice != "required" && named == "" {
		return nil
	}
	if s.constraint != nil {
		return BadRequest("tool_choice %s and response_format %s cannot both hold: a reply is a call or a value", g.ToolChoice, g.ResponseFormat)
	}
	if err := r.checkGrammarTokenizer("tool_choice " + string(g.ToolChoice)); err != nil {
		return err
	}
	if named != "" {
		for _, t := range tools {
			if t.Name == named {
				tools = []toolcall.Tool{t}
				break
			}
		}
	}
	schema, opts := r.toolFormat.Constraint(tools, parallel)
	gr, err := grammar.Compile(schema, opts)
	if err != nil {
		return BadRequest("tool_choice %s: the tools' parameters cannot be enforced: %v", g.ToolChoice, err)
	}
	s.constraint, err = r.bind(gr)
	return err
}

// maxTools bounds the tools of one request.
const maxTools = 128

// parseToolChoice reads tool_choice: "auto" (also when absent), "none",
// "required", or a named function (named is its name).
func parseToolChoice(raw json.RawMessage) (choice, named string, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "auto", "", nil
	}
	if json.Unmarshal(raw, &choice) == nil {
		switch choice {
		case "auto", "none", "required":
			return choice, "", nil
		}
		return "", "", BadRequest("tool_choice %q: want auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}", choice)
	}
	var c struct {
		Type     string `json:"type"`
		Function *struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.Type != "function" || c.Function == nil || c.Function.Name == "" {
		return "", "", BadRequest("tool_choice %s: want auto, none, required or {\"type\": \"function\", \"function\": {\"name\": ...}}", raw)
	}
	return "function", c.Function.Name, nil
}
