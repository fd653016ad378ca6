package function

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/tasks/testmodels"
)

var (
	toolModelOnce sync.Once
	toolModelDir  string
	toolModelErr  error
)

// toolModel writes, once per test binary, the test decoder over Qwen3's
// tokenizer and chat template (testmodels.ToolDecoder).
func toolModel(t *testing.T) string {
	t.Helper()
	qwen3, err := filepath.Abs("../.cache/llm-tokenizers/qwen3")
	if err == nil {
		_, err = os.Stat(filepath.Join(qwen3, "tokenizer.json"))
	}
	if err != nil {
		t.Fatalf("Qwen3's tokenizer: %v (run `make llm-tokenizers`, which `make test` does)", err)
	}
	toolModelOnce.Do(func() {
		dir := filepath.Join(testModels(t), "tools")
		toolModelErr = testmodels.ToolDecoder(dir, qwen3)
		toolModelDir = filepath.Join(dir, "tool-decoder")
	})
	if toolModelErr != nil {
		t.Fatal(toolModelErr)
	}
	return toolModelDir
}

func toolServer(t *testing.T) *server {
	t.Helper()
	cfg := testConfig(t)
	cfg.Model = toolModel(t)
	return startServer(t, cfg)
}

// testTools are bounded, so that random weights reach the end of a call.
const testTools = `[{"type":"function","function":{"name":"get_weather","description":"Weather in a city.","parameters":{"type":"object",
"properties":{"city":{"type":"string","maxLength":10},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"],"additionalProperties":false}}},
{"type":"function","function":{"name":"now","description":"The time."}}]`

type toolReply struct {
	Choices []struct {
		Message struct {
			Role      string            `json:"role"`
			Content   *string           `json:"content"`
			ToolCalls []prompt.ToolCall `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
	} `json:"usage"`
}

func toolChat(t *testing.T, s *server, header map[string]string, body string) toolReply {
	t.Helper()
	code, _, b := chatPost(t, s, header, body)
	var r toolReply
	if code != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
		t.Fatalf("%s: %d %s", body, code, b)
	}
	return r
}

// parametersValidator compiles a tool's parameters with a validator that is
// not sous's own.
func parametersValidator(t *testing.T, tools, name string) *jsonschema.Schema {
	t.Helper()
	var defs []struct {
		Function struct {
			Name       string          `json:"name"`
			Parameters json.RawMessage `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal([]byte(tools), &defs); err != nil {
		t.Fatal(err)
	}
	for _, d := range defs {
		if d.Function.Name != name {
			continue
		}
		params := d.Function.Parameters
		if params == nil {
			params = json.RawMessage(`{"type":"object","properties":{},"additionalProperties":false}`)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(params))
		if err != nil {
			t.Fatal(err)
		}
		c := jsonschema.NewCompiler()
		c.AddResource("p.json", doc)
		sch, err := c.Compile("p.json")
		if err != nil {
			t.Fatal(err)
		}
		return sch
	}
	t.Fatalf("the model called %q, which is not among the tools", name)
	return nil
}

// checkCall holds a reply to one valid call: finish_reason tool_calls, no
// content, an id, the function wanted (any of the tools when want is ""),
// arguments valid for its parameters.
func checkCall(t *testing.T, r toolReply, want string) prompt.ToolCall {
	t.Helper()
	ch := r.Choices[0]
	if ch.FinishReason != "tool_calls" || ch.Message.Content != nil || len(ch.Message.ToolCalls) != 1 {
		t.Fatalf("want one call, no content, finish tool_calls: %+v", ch)
	}
	c := ch.Message.ToolCalls[0]
	if !strings.HasPrefix(c.ID, "call_") || c.Type != "function" || (want != "" && c.Function.Name != want) {
		t.Fatalf("call %+v: want an id call_..., type function, function %q", c, want)
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(c.Function.Arguments))
	if err != nil {
		t.Fatalf("arguments %q do not parse: %v", c.Function.Arguments, err)
	}
	if err := parametersValidator(t, testTools, c.Function.Name).Validate(inst); err != nil {
		t.Fatalf("arguments %s are not valid for %s: %v", c.Function.Arguments, c.Function.Name, err)
	}
	return c
}

// tool_choice required and a named function are enforced: with random
// weights, sampled, every reply is one call of a tool offered (the one
// named), its arguments valid for the function's parameters.
func TestToolChoiceEnforced(t *testing.T) {
	s := toolServer(t)
	names := map[string]int{}
	for seed := range 8 {
		r := toolChat(t, s, nil, fmt.Sprintf(`{"messages":[{"role":"user","content":"Weather in Paris?"}],"tools":%s,
			"tool_choice":"required","temperature":1,"seed":%d,"max_tokens":200}`, testTools, seed))
		c := checkCall(t, r, "")
		names[c.Function.Name]++
		if seed == 0 {
			t.Logf("required: %s(%s)", c.Function.Name, c.Function.Arguments)
		}
	}
	for _, name := range []string{"get_weather", "now"} {
		for seed := range 3 {
			r := toolChat(t, s, nil, fmt.Sprintf(`{"messages":[{"role":"user","content":"Weather in Paris?"}],"tools":%s,
				"tool_choice":{"type":"function","function":{"name":%q}},"temperature":1,"seed":%d,"max_tokens":200}`, testTools, name, seed))
			c := checkCall(t, r, name)
			if seed == 0 {
				t.Logf("named %s: %s(%s)", name, c.Function.Name, c.Function.Arguments)
			}
		}
	}
	t.Logf("required: calls by name %v", names)
}

// Requests the tools cannot serve are 400s in OpenAI's shape, naming why.
func TestToolsRefused(t *testing.T) {
	s := toolServer(t)
	plain := genServer(t, nil) // ChatML: its template renders no tools
	user := `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		s    *server
		body string
		want string
	}{
		{s, `{` + user + `,"tools":` + testTools + `,"tool_choice":{"type":"function","function":{"name":"fly"}}}`, `no tool named "fly"`},
		{s, `{` + user + `,"tools":` + testTools + `,"tool_choice":"sometimes"}`, `tool_choice "sometimes"`},
		{s, `{` + user + `,"tool_choice":"required"}`, "no tools given"},
		{s, `{` + user + `,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"nope"}}}]}`, "tools[0] f: parameters"},
		{s, `{` + user + `,"tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]}`, "must be a JSON Schema object"},
		{s, `{` + user + `,"tools":[{"type":"function","function":{"name":"bad name"}}]}`, `function name "bad name"`},
		{s, `{` + user + `,"tools":[{"type":"retrieval"}]}`, "only type function"},
		{s, `{` + user + `,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"string","format":"ipv6"}}}}}],"tool_choice":"required"}`, "cannot be enforced"},
		{s, `{` + user + `,"tools":` + testTools + `,"tool_choice":"required","response_format":{"type":"json_object"}}`, "cannot both hold"},
		{s, `{"messages":[{"role":"tool","content":"18"}],"tools":` + testTools + `}`, "needs tool_call_id"},
		{s, `{` + user + `,"logit_bias":{"1":5}}`, "logit_bias: not supported"},
		{plain, `{` + user + `,"tools":` + testTools + `}`, "renders no tools"},
	} {
		code, _, b := chatPost(t, tc.s, nil, tc.body)
		var e struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		json.Unmarshal(b, &e)
		if code != 400 || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, tc.want) {
			t.Errorf("%s: %d %s, want 400 naming %q", tc.body, code, b, tc.want)
		}
	}
}

// Streamed, a required call comes as OpenAI streams one: the id, type and
// name first, then the arguments; no content, none of the call's markup;
// finish_reason tool_calls. Reassembled it is the call the same greedy
// request gets unstreamed.
func TestToolCallsStream(t *testing.T) {
	s := toolServer(t)
	body := `{"messages":[{"role":"user","content":"Weather?"}],"tools":` + testTools + `,"tool_choice":"required","max_tokens":200,"temperature":0`
	want := checkCall(t, toolChat(t, s, nil, body+`}`), "")
	code, _, b := chatPost(t, s, nil, body+`,"stream":true}`)
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	var id, name, args, content, finish string
	first := true
	events, _ := sseData(t, bytes.NewReader(b))
	for _, data := range events {
		var ch struct {
			Choices []struct {
				Delta struct {
					Content   *string `json:"content"`
					ToolCalls []struct {
						Index    int     `json:"index"`
						ID       *string `json:"id"`
						Type     *string `json:"type"`
						Function struct {
							Name      *string `json:"name"`
							Arguments *string `json:"arguments"`
						} `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil || len(ch.Choices) != 1 {
			t.Fatalf("chunk %s: %v", data, err)
		}
		d := ch.Choices[0].Delta
		if d.Content != nil {
			content += *d.Content
		}
		for _, tc := range d.ToolCalls {
			if tc.Index != 0 {
				t.Fatalf("chunk %s: index %d, want 0", data, tc.Index)
			}
			if first != (tc.ID != nil) || first != (tc.Function.Name != nil) || first != (tc.Type != nil) {
				t.Fatalf("chunk %s: id, type and name come in the call's first chunk alone", data)
			}
			if first {
				id, name = *tc.ID, *tc.Function.Name
				first = false
			}
			if tc.Function.Arguments != nil {
				args += *tc.Function.Arguments
			}
		}
		if f := ch.Choices[0].FinishReason; f != nil {
			finish = *f
		}
	}
	if content != "" || finish != "tool_calls" || !strings.HasPrefix(id, "call_") || name != want.Function.Name || args != want.Function.Arguments {
		t.Fatalf("streamed content %q, finish %q, call %s %s(%s); unstreamed %s(%s)", content, finish, id, name, args, want.Function.Name, want.Function.Arguments)
	}
}

// A tool loop in a session: the call is saved in the transcript, and the
// next request carries only the tool's result; the prompt it gets is the
// one a client that sends the whole conversation gets (the stored call,
// content null, and the result rendered by the template alike).
func TestToolLoopInSession(t *testing.T) {
	s := toolServer(t)
	sess := map[string]string{"X-Sous-Session": "tools-1"}
	first := toolChat(t, s, sess, `{"messages":[{"role":"user","content":"Weather in Oslo?"}],"tools":`+testTools+`,"tool_choice":"required","max_tokens":200,"temperature":0}`)
	c := checkCall(t, first, "")
	result := fmt.Sprintf(`{"role":"tool","tool_call_id":%q,"content":"-3 and snowing"}`, c.ID)
	second := toolChat(t, s, sess, `{"messages":[`+result+`],"tools":`+testTools+`,"max_tokens":4,"temperature":0}`)
	call, _ := json.Marshal(c)
	whole := toolChat(t, s, nil, `{"messages":[{"role":"user","content":"Weather in Oslo?"},{"role":"assistant","content":null,"tool_calls":[`+
		string(call)+`]},`+result+`],"tools":`+testTools+`,"max_tokens":4,"temperature":0}`)
	if second.Usage.PromptTokens != whole.Usage.PromptTokens || second.Usage.PromptTokens <= first.Usage.PromptTokens {
		t.Fatalf("prompt tokens: session turn 2 %d, the whole conversation sent %d (turn 1 %d)", second.Usage.PromptTokens, whole.Usage.PromptTokens, first.Usage.PromptTokens)
	}
	if a, b := replyText(second), replyText(whole); a != b {
		t.Errorf("greedy replies differ: session %s, whole conversation %s", a, b)
	}
}

// replyText is a reply's content and calls, ids aside (they are drawn).
func replyText(r toolReply) string {
	m := r.Choices[0].Message
	s := "content " + fmt.Sprint(m.Content != nil)
	if m.Content != nil {
		s += " " + *m.Content
	}
	for _, c := range m.ToolCalls {
		s += "; " + c.Function.Name + c.Function.Arguments
	}
	return s + "; " + r.Choices[0].FinishReason
}

// tool_choice none keeps the tools in the prompt (as auto does: the model
// knows them, as OpenAI's does) and reads no calls from the reply.
func TestToolChoiceNone(t *testing.T) {
	s := toolServer(t)
	ask := `{"messages":[{"role":"user","content":"Weather?"}],"max_tokens":4,"temperature":0`
	none := toolChat(t, s, nil, ask+`,"tools":`+testTools+`,"tool_choice":"none"}`)
	auto := toolChat(t, s, nil, ask+`,"tools":`+testTools+`}`)
	bare := toolChat(t, s, nil, ask+`}`)
	if none.Usage.PromptTokens != auto.Usage.PromptTokens || none.Usage.PromptTokens <= bare.Usage.PromptTokens+50 {
		t.Errorf("prompt tokens: none %d, auto %d, without tools %d", none.Usage.PromptTokens, auto.Usage.PromptTokens, bare.Usage.PromptTokens)
	}
	if m := none.Choices[0].Message; m.Content == nil || m.ToolCalls != nil || none.Choices[0].FinishReason == "tool_calls" {
		t.Errorf("tool_choice none: %+v", none.Choices[0])
	}
}
