package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// sdkSchema is the schema of the structured-outputs SDK example: bounded,
// so that the random-weight test LLM can close every value within its
// tokens (an unbounded string rarely closes at random).
const sdkSchema = `{"type":"object","properties":{
 "intent":{"enum":["order","refund","other"]},
 "order":{"type":"integer","minimum":1000,"maximum":9999},
 "note":{"anyOf":[{"type":"string","maxLength":8},{"type":"null"}]}},
 "required":["intent","order","note"],"additionalProperties":false}`

// The official OpenAI JavaScript SDK asks for structured outputs as its
// users do: chat.completions.parse with a json_schema response_format
// (the SDK parses the content itself), non-streamed and streamed, sampled
// at temperature 1 on the test LLM (Qwen3's tokenizer, random weights).
// Every reply must parse and validate against the schema, checked by a
// validator that is not sous's, and finish "stop".
func TestOpenAISDKStructuredOutputs(t *testing.T) {
	sdk, err := filepath.Abs(".cache/npm-openai/package")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sdk, "index.js")); err != nil {
		t.Fatalf("the OpenAI SDK is not fetched (make test fetches it): %v", err)
	}
	qwen3, err := filepath.Abs(".cache/llm-tokenizers/qwen3")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := testmodels.LLM(dir, qwen3); err != nil {
		t.Fatalf("the test LLM (make llm-tokenizers fetches its tokenizer): %v", err)
	}
	s := startSous(t, 0, "SOUS_MODEL="+filepath.Join(dir, "llm"), "SOUS_MODEL_DTYPE=q4", "SOUS_STATE=memory")
	script := `
const OpenAI = require(process.argv[1]);
(async () => {
  const client = new OpenAI({ baseURL: process.argv[2] + '/v1', apiKey: 'unused' });
  const response_format = { type: 'json_schema', json_schema: { name: 'reply', strict: true, schema: JSON.parse(process.argv[3]) } };
  const replies = [];
  for (let seed = 1; seed <= 4; seed++) {
    const r = await client.chat.completions.parse({
      model: 'llm', temperature: 1, seed, max_tokens: 96, response_format,
      messages: [{ role: 'user', content: 'where is my order?' }],
    });
    replies.push({ content: r.choices[0].message.content, parsed: r.choices[0].message.parsed, finish: r.choices[0].finish_reason });
  }
  const stream = await client.chat.completions.create({
    model: 'llm', temperature: 1, seed: 9, max_tokens: 96, response_format, stream: true,
    messages: [{ role: 'user', content: 'where is my order?' }],
  });
  let content = '', finish = null;
  for await (const chunk of stream) {
    content += chunk.choices[0].delta.content || '';
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  replies.push({ content, parsed: JSON.parse(content), finish });
  console.log(JSON.stringify(replies));
})().catch(e => { console.error(e); process.exit(1); });
`
	out, err := exec.Command("node", "-e", script, "--", sdk, s.url, sdkSchema).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var replies []struct {
		Content string
		Parsed  json.RawMessage
		Finish  string
	}
	if err := json.Unmarshal(out, &replies); err != nil {
		t.Fatalf("node printed %s: %v", out, err)
	}
	v := validator(t, sdkSchema)
	if len(replies) != 5 {
		t.Fatalf("got %d replies, want 5: %s", len(replies), out)
	}
	for i, r := range replies {
		validate(t, fmt.Sprintf("reply %d", i), v, json.RawMessage(r.Content))
		var parsed, content any
		if json.Unmarshal(r.Parsed, &parsed) != nil || json.Unmarshal([]byte(r.Content), &content) != nil || !jsonEqual(parsed, content) {
			t.Errorf("reply %d: the SDK parsed %s from content %q", i, r.Parsed, r.Content)
		}
		if r.Finish != "stop" {
			t.Errorf("reply %d: finish %q, want stop (a complete value ends the reply)", i, r.Finish)
		}
	}
}

// jsonEqual compares two decoded JSON values.
func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
