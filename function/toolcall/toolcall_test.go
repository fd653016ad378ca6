package toolcall

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sous-ai/sous/function/grammar"
	"github.com/sous-ai/sous/function/prompt"
)

type call struct{ Name, Args string }

var parseCases = []struct {
	name    string
	f       Format
	reply   string
	content string
	calls   []call
}{
	{"hermes one call", Hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "",
		[]call{{"get_weather", `{"city": "Paris"}`}}},
	{"hermes text then two calls", Hermes, "Let me check.\n\n<tool_call>\n{\"name\":\"a\",\"arguments\":{}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}\n</tool_call>\n",
		"Let me check.\n\n", []call{{"a", `{}`}, {"b", `{"x": 1}`}}},
	{"hermes without closing tag at the end", Hermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"s\": \"</tool\"}}", "",
		[]call{{"a", `{"s": "</tool"}`}}},
	{"hermes no arguments member", Hermes, "<tool_call>{\"name\": \"now\"}</tool_call>", "", []call{{"now", "{}"}}},
	{"hermes malformed JSON is content", Hermes, "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": }\n</tool_call> ok",
		"<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": }\n</tool_call> ok", nil},
	{"hermes arguments not an object", Hermes, "<tool_call>{\"name\": \"a\", \"arguments\": [1]}</tool_call>",
		"<tool_call>{\"name\": \"a\", \"arguments\": [1]}</tool_call>", nil},
	{"hermes unclosed garbage", Hermes, "hi <tool_call> {\"name\": ", "hi <tool_call> {\"name\": ", nil},
	{"hermes plain text with a lone <", Hermes, "a < b and <tool", "a < b and <tool", nil},
	{"hermes text after a call", Hermes, "<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>\n\nDone.", "\n\nDone.", []call{{"a", "{}"}}},
	{"llama3 one call", Llama3, " {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", "", []call{{"get_weather", `{"city": "Oslo"}`}}},
	{"llama3 two calls", Llama3, "{\"name\": \"a\", \"parameters\": {\"k\": \"}\"}}; {\"name\": \"b\", \"arguments\": {}}\n", "",
		[]call{{"a", `{"k": "}"}`}, {"b", "{}"}}},
	{"llama3 text", Llama3, "The weather is fine {\"name\": \"a\"}", "The weather is fine {\"name\": \"a\"}", nil},
	{"llama3 object that is no call", Llama3, "{\"answer\": 42}", "{\"answer\": 42}", nil},
	{"llama3 cut off", Llama3, "{\"name\": \"a\", \"parameters\": {\"x\": 1", "{\"name\": \"a\", \"parameters\": {\"x\": 1", nil},
	{"mistral marker", Mistral, "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"x\": 1}}, {\"name\": \"b\", \"arguments\": {}}]", "",
		[]call{{"a", `{"x": 1}`}, {"b", "{}"}}},
	{"mistral marker left out by decoding", Mistral, "[{\"name\": \"a\", \"arguments\": {\"q\": \"[x]\"}}]", "", []call{{"a", `{"q": "[x]"}`}}},
	{"mistral text then marker", Mistral, "Sure. [TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}]", "Sure. ", []call{{"a", "{}"}}},
	{"mistral text with a list", Mistral, "Sure: [1, 2]", "Sure: [1, 2]", nil},
	{"mistral list of no calls", Mistral, "[1, 2]", "[1, 2]", nil},
	{"mistral bad name", Mistral, "[TOOL_CALLS][{\"name\": \"a b\", \"arguments\": {}}]", "[TOOL_CALLS][{\"name\": \"a b\", \"arguments\": {}}]", nil},
}

func calls(cs []prompt.ToolCall) []call {
	var out []call
	for _, c := range cs {
		out = append(out, call{c.Function.Name, c.Function.Arguments})
	}
	return out
}

// A reply parses into its content and calls; streamed in pieces of any
// size, the content handed out and the calls are the same, every call
// has an id of its format and the streamed content never holds markup that
// a call then took.
func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			content, cs := tc.f.Parse(tc.reply)
			if content != tc.content {
				t.Errorf("content %q, want %q", content, tc.content)
			}
			if got := calls(cs); !reflect.DeepEqual(got, tc.calls) {
				t.Errorf("calls %+v, want %+v", got, tc.calls)
			}
			for _, c := range cs {
				if c.Type != "function" || (tc.f == Mistral) != (len(c.ID) == 9) || (tc.f != Mistral && !strings.HasPrefix(c.ID, "call_")) {
					t.Errorf("call %+v: type or id not of format %s", c, tc.f)
				}
			}
			for size := 1; size <= len(tc.reply); size++ {
				var streamed strings.Builder
				var got []prompt.ToolCall
				p := tc.f.NewParser(func(s string) { streamed.WriteString(s) }, func(c prompt.ToolCall) { got = append(got, c) })
				for i := 0; i < len(tc.reply); i += size {
					p.Push(tc.reply[i:min(i+size, len(tc.reply))])
					if len(tc.calls) > 0 && tc.content == "" && streamed.Len() > 0 {
						t.Fatalf("pieces of %d: content %q streamed before the calls", size, streamed.String())
					}
				}
				final, all := p.Finish()
				if streamed.String() != tc.content || final != tc.content {
					t.Fatalf("pieces of %d: streamed %q, final %q, want %q", size, streamed.String(), final, tc.content)
				}
				if !reflect.DeepEqual(calls(all), calls(got)) || len(all) != len(tc.calls) {
					t.Fatalf("pieces of %d: calls handed out %+v, Finish's %+v, want %d", size, calls(got), calls(all), len(tc.calls))
				}
			}
		})
	}
}

// With at most one call (parallel_tool_calls false), later calls are
// dropped: neither calls nor content.
func TestParseMost(t *testing.T) {
	p := Hermes.NewParser(nil, nil).Most(1)
	p.Push("<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>\n<tool_call>{\"name\":\"b\",\"arguments\":{}}</tool_call>")
	content, cs := p.Finish()
	if content != "" || len(cs) != 1 || cs[0].Function.Name != "a" {
		t.Fatalf("content %q, calls %+v: want a alone", content, calls(cs))
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		template string
		want     Format
	}{
		{`{{- '<tool_call>\n{"name": "' }}`, Hermes},
		{`{{- "[TOOL_CALLS] [" }}`, Mistral},
		{`<|start_header_id|>assistant<|end_header_id|>{{- '"parameters": ' }}`, Llama3},
		{`{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}`, ""},
	} {
		if got := Detect(tc.template); got != tc.want {
			t.Errorf("Detect(%q) = %q, want %q", tc.template, got, tc.want)
		}
	}
}

// The constraint's grammar accepts exactly the calls of the tools offered
// with valid arguments, in the format's markup, and what it accepts parses
// back into that call (checked against the parameters by a JSON Schema
// validator of its own).
func TestConstraintRoundTrip(t *testing.T) {
	tools := []Tool{
		{Name: "get_weather", Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"],"additionalProperties":false}`)},
		{Name: "now"},
	}
	for _, tc := range []struct {
		f          Format
		ok, refuse []string
	}{
		{Hermes, []string{"<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":3}}\n</tool_call>",
			"<tool_call>\n{\"name\":\"now\",\"arguments\":{}}\n</tool_call>"},
			[]string{"<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"days\":9}}\n</tool_call>",
				"<tool_call>\n{\"name\":\"other\",\"arguments\":{}}\n</tool_call>", "{\"name\":\"now\",\"arguments\":{}}"}},
		{Llama3, []string{`{"name":"now","parameters":{}}`}, []string{`{"name":"now","arguments":{}}`}},
		{Mistral, []string{`[{"name":"now","arguments":{}},{"name":"get_weather","arguments":{"city":"x","days":1}}]`}, []string{`[]`}},
	} {
		schema, opts := tc.f.Constraint(tools, true)
		g, err := grammar.Compile(schema, opts)
		if err != nil {
			t.Fatalf("%s: %v", tc.f, err)
		}
		for _, s := range tc.ok {
			if ok, complete := g.Match([]byte(s)); !ok || !complete {
				t.Errorf("%s: %q not accepted", tc.f, s)
			}
			_, cs := tc.f.Parse(s)
			if len(cs) == 0 {
				t.Errorf("%s: %q accepted but not parsed", tc.f, s)
			}
			for _, c := range cs {
				for _, tool := range tools {
					if tool.Name != c.Function.Name || tool.Parameters == nil {
						continue
					}
					sch, _ := jsonschema.UnmarshalJSON(strings.NewReader(string(tool.Parameters)))
					comp := jsonschema.NewCompiler()
					comp.AddResource("p.json", sch)
					v, err := comp.Compile("p.json")
					if err != nil {
						t.Fatal(err)
					}
					inst, _ := jsonschema.UnmarshalJSON(strings.NewReader(c.Function.Arguments))
					if err := v.Validate(inst); err != nil {
						t.Errorf("%s: arguments %s: %v", tc.f, c.Function.Arguments, err)
					}
				}
			}
		}
		for _, s := range tc.refuse {
			if ok, complete := g.Match([]byte(s)); ok && complete {
				t.Errorf("%s: %q accepted", tc.f, s)
			}
		}
	}
}
