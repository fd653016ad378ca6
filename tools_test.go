package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// toolDecoder writes the test decoder over Qwen3's tokenizer and chat
// template (testmodels.ToolDecoder) and returns its model directory.
func toolDecoder(t *testing.T) string {
	t.Helper()
	qwen3, err := filepath.Abs(".cache/llm-tokenizers/qwen3")
	if err == nil {
		_, err = os.Stat(filepath.Join(qwen3, "tokenizer.json"))
	}
	if err != nil {
		t.Fatalf("Qwen3's tokenizer: %v (run `make llm-tokenizers`, which `make test` does)", err)
	}
	dir := t.TempDir()
	if err := testmodels.ToolDecoder(dir, qwen3); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "tool-decoder")
}

// weatherParameters is bounded, so that random weights reach the end of a
// call.
const weatherParameters = `{"type":"object","properties":{"city":{"type":"string","maxLength":10},
"unit":{"enum":["celsius","fahrenheit"]},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","unit","days"],"additionalProperties":false}`

// validArguments checks a call's arguments against weatherParameters with
// a JSON Schema validator that is not sous's own.
func validArguments(t *testing.T, args string) error {
	t.Helper()
	sch := validator(t, weatherParameters)
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(args))
	if err != nil {
		return fmt.Errorf("arguments %q do not parse: %v", args, err)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("arguments %s: %v", args, err)
	}
	return nil
}

// The official OpenAI JavaScript SDK calls tools on a sous process serving
// the test decoder over Qwen3's template: tool_choice required and a named
// function (each call's arguments valid for the parameters), a streamed
// call the SDK reassembles, the SDK's tool runner (streaming) parsing the
// arguments and running the function, and a tool result continued.
func TestOpenAISDKTools(t *testing.T) {
	sdk, err := filepath.Abs(".cache/npm-openai/package")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sdk, "index.js")); err != nil {
		t.Fatalf("the OpenAI SDK is not fetched (make test fetches it): %v", err)
	}
	s := startSous(t, 0, "SOUS_MODEL="+toolDecoder(t), "SOUS_STATE=memory")
	script := `
const OpenAI = require(process.argv[1]);
const parameters = JSON.parse(process.argv[3]);
(async () => {
  const client = new OpenAI({ baseURL: process.argv[2] + '/v1', apiKey: 'unused' });
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters } },
    { type: 'function', function: { name: 'now', description: 'The time' } }];
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const base = { model: 'tool-decoder', messages, tools, max_tokens: 200, temperature: 1 };
  const pick = (c) => ({ finish: c.choices[0].finish_reason, content: c.choices[0].message.content,
    calls: c.choices[0].message.tool_calls, prompt_tokens: c.usage && c.usage.prompt_tokens });
  const out = { required: [] };
  for (let seed = 0; seed < 3; seed++) {
    out.required.push(pick(await client.chat.completions.create({ ...base, seed, tool_choice: 'required' })));
  }
  const named = await client.chat.completions.create({ ...base, seed: 7,
    tool_choice: { type: 'function', function: { name: 'get_weather' } } });
  out.named = pick(named);
  const stream = client.chat.completions.stream({ ...base, seed: 3, tool_choice: 'required', stream: true });
  let chunks = 0;
  stream.on('chunk', () => chunks++);
  out.stream = pick(await stream.finalChatCompletion());
  out.stream.chunks = chunks;
  let ran = null;
  const runner = client.chat.completions.runTools({ ...base, seed: 5, stream: true,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    tools: [{ type: 'function', function: { name: 'get_weather', parameters, parse: JSON.parse,
      function: async (args) => { ran = args; return { temperature: 21 }; } } }] });
  await runner.done();
  out.runner = { ran, messages: runner.messages.map((m) => m.role) };
  const call = named.choices[0].message.tool_calls[0];
  out.continued = pick(await client.chat.completions.create({ ...base, max_tokens: 8, seed: 1,
    messages: [...messages, named.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"temperature": 21}' }] }));
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
`
	cmd := exec.Command("node", "-e", script, "--", sdk, s.url, weatherParameters)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	type reply struct {
		Finish       string
		Content      *string
		Calls        []prompt.ToolCall
		PromptTokens int `json:"prompt_tokens"`
		Chunks       int
	}
	var r struct {
		Required []reply
		Named    reply
		Stream   reply
		Runner   struct {
			Ran      json.RawMessage
			Messages []string
		}
		Continued reply
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	check := func(what string, x reply, name string) {
		if x.Finish != "tool_calls" || x.Content != nil || len(x.Calls) != 1 || !strings.HasPrefix(x.Calls[0].ID, "call_") || x.Calls[0].Type != "function" {
			t.Errorf("%s: want one call, content null, finish tool_calls: %+v", what, x)
			return
		}
		c := x.Calls[0].Function
		switch {
		case c.Name == "get_weather":
			if err := validArguments(t, c.Arguments); err != nil {
				t.Errorf("%s: %v", what, err)
			}
		case c.Name != "now" || c.Arguments != "{}" || name != "":
			t.Errorf("%s: called %s(%s), want %s", what, c.Name, c.Arguments, name)
		}
		if name != "" && c.Name != name {
			t.Errorf("%s: called %s, want %s", what, c.Name, name)
		}
	}
	for i, x := range r.Required {
		check(fmt.Sprintf("required, seed %d", i), x, "")
	}
	check("named", r.Named, "get_weather")
	check("streamed", r.Stream, "")
	if r.Stream.Chunks < 4 {
		t.Errorf("streamed call in %d chunks, want role, call head, arguments, finish", r.Stream.Chunks)
	}
	if err := validArguments(t, string(r.Runner.Ran)); err != nil || strings.Join(r.Runner.Messages, ",") != "user,assistant,tool" {
		t.Errorf("tool runner: ran with %s (%v), messages %v", r.Runner.Ran, err, r.Runner.Messages)
	}
	if r.Continued.Finish == "" || r.Continued.PromptTokens <= r.Named.PromptTokens {
		t.Errorf("continued after the tool result: %+v (the call's prompt: %d tokens)", r.Continued, r.Named.PromptTokens)
	}
	t.Logf("OpenAI SDK: required %s(%s); named %s(%s); streamed in %d chunks %s(%s); runner ran get_weather(%s); continued: %d prompt tokens, %s",
		r.Required[0].Calls[0].Function.Name, r.Required[0].Calls[0].Function.Arguments, r.Named.Calls[0].Function.Name, r.Named.Calls[0].Function.Arguments,
		r.Stream.Chunks, r.Stream.Calls[0].Function.Name, r.Stream.Calls[0].Function.Arguments, r.Runner.Ran, r.Continued.PromptTokens, r.Continued.Finish)
}
