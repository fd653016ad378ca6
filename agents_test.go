package main

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// testEncoder writes the test encoders (testmodels.Write) and returns the
// feature-extraction model directory.
func testEncoder(t *testing.T) string {
	t.Helper()
	tok, err := os.ReadFile("function/tokenizer/testdata/tokenizers/all-minilm-l6-v2.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := testmodels.Write(dir, tok); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "feature-extraction")
}

// agentsNodeModules is where make test installs Vercel's AI SDK and
// LangChain JS.
func agentsNodeModules(t *testing.T) string {
	t.Helper()
	nm, err := filepath.Abs(".cache/npm-agents/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"ai", "@ai-sdk/openai-compatible", "@langchain/openai", "zod"} {
		if _, err := os.Stat(filepath.Join(nm, p, "package.json")); err != nil {
			t.Fatalf("%s is not installed (make test installs it: make agents-npm): %v", p, err)
		}
	}
	return nm
}

// runNode runs a script with NODE_PATH set to nodePath, its arguments
// after it, and decodes the JSON it prints into out.
func runNode(t *testing.T, nodePath, script string, out any, args ...string) {
	t.Helper()
	cmd := exec.Command("node", append([]string{"-e", script, "--"}, args...)...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node: %v\n%s\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("node printed %s (%v)\n%s", stdout.Bytes(), err, stderr.Bytes())
	}
}

// rawEmbeddings asks sous for texts' embeddings in floats, with Go's own
// HTTP client: what each SDK's decoded vectors must equal.
func rawEmbeddings(t *testing.T, url string, texts []string) [][]float32 {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"input": texts, "encoding_format": "float"})
	resp, err := http.Post(url+"/v1/embeddings", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data []struct {
			Embedding []float32 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 || len(r.Data) != len(texts) {
		t.Fatalf("/v1/embeddings: %d %v %+v", resp.StatusCode, err, r)
	}
	out := make([][]float32, len(texts))
	for i, d := range r.Data {
		out[i] = d.Embedding
	}
	return out
}

// sameVectors fails unless got equals want within float32 rounding, and
// every vector is unit length (sous L2-normalizes them).
func sameVectors(t *testing.T, what string, got, want [][]float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d vectors, want %d", what, len(got), len(want))
	}
	for i := range want {
		var norm float64
		if len(got[i]) != len(want[i]) {
			t.Fatalf("%s[%d]: %d dimensions, want %d", what, i, len(got[i]), len(want[i]))
		}
		for j := range want[i] {
			if math.Abs(float64(got[i][j]-want[i][j])) > 1e-6 {
				t.Fatalf("%s[%d][%d] = %g, sous answered %g", what, i, j, got[i][j], want[i][j])
			}
			norm += float64(got[i][j]) * float64(got[i][j])
		}
		if math.Abs(norm-1) > 1e-4 {
			t.Errorf("%s[%d]: norm² %g", what, i, norm)
		}
	}
}

// The official OpenAI JavaScript SDK's embeddings (base64, its default,
// which it decodes itself; and float) and legacy completions (plain and
// streamed) against sous processes on the test encoder and decoder.
func TestOpenAISDKEmbeddingsAndCompletions(t *testing.T) {
	sdk, err := filepath.Abs(".cache/npm-openai/package")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sdk, "index.js")); err != nil {
		t.Fatalf("the OpenAI SDK is not fetched (make test fetches it): %v", err)
	}
	enc := startSous(t, 0, "SOUS_MODEL="+testEncoder(t), "SOUS_STATE=memory")
	dec := startSous(t, 0, "SOUS_MODEL="+testDecoder(t), "SOUS_STATE=memory")
	texts := []string{"hello there", "John Smith loves Paris", "great!"}
	script := `
const OpenAI = require(process.argv[1]);
(async () => {
  const enc = new OpenAI({ baseURL: process.argv[2] + '/v1', apiKey: 'unused' });
  const dec = new OpenAI({ baseURL: process.argv[3] + '/v1', apiKey: 'unused' });
  const texts = JSON.parse(process.argv[4]);
  const b64 = await enc.embeddings.create({ model: 'feature-extraction', input: texts });
  const flt = await enc.embeddings.create({ model: 'feature-extraction', input: texts, encoding_format: 'float' });
  const one = await enc.embeddings.create({ model: 'feature-extraction', input: texts[0] });
  const plain = await dec.completions.create({ model: 'text-generation', prompt: 'the quick brown fox', max_tokens: 5, temperature: 0 });
  const stream = await dec.completions.create({ model: 'text-generation', prompt: 'the quick brown fox', max_tokens: 5, temperature: 0, stream: true });
  let text = '', finish = null, chunks = 0;
  for await (const c of stream) { chunks++; text += c.choices[0].text; if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason; }
  console.log(JSON.stringify({
    base64: b64.data.map(d => Array.from(d.embedding)), float: flt.data.map(d => d.embedding), one: one.data.map(d => Array.from(d.embedding)),
    usage: b64.usage,
    plain: { text: plain.choices[0].text, finish: plain.choices[0].finish_reason, usage: plain.usage },
    stream: { text, finish, chunks },
  }));
})().catch(e => { console.error(e); process.exit(1); });
`
	var r struct {
		Base64, Float, One [][]float32
		Usage              struct{ Prompt_tokens, Total_tokens int }
		Plain              struct {
			Text, Finish string
			Usage        struct{ Prompt_tokens, Completion_tokens int }
		}
		Stream struct {
			Text, Finish string
			Chunks       int
		}
	}
	tj, _ := json.Marshal(texts)
	runNode(t, "", script, &r, sdk, enc.url, dec.url, string(tj))
	want := rawEmbeddings(t, enc.url, texts)
	sameVectors(t, "base64", r.Base64, want)
	sameVectors(t, "float", r.Float, want)
	sameVectors(t, "one", r.One, want[:1])
	if r.Usage.Prompt_tokens < len(texts) || r.Usage.Total_tokens != r.Usage.Prompt_tokens {
		t.Errorf("embeddings usage %+v", r.Usage)
	}
	if r.Plain.Text == "" || r.Plain.Finish != "length" || r.Plain.Usage.Completion_tokens != 5 || r.Plain.Usage.Prompt_tokens != 4 ||
		r.Stream.Text != r.Plain.Text || r.Stream.Finish != "length" || r.Stream.Chunks < 2 {
		t.Fatalf("completions: %+v", r)
	}
	t.Logf("OpenAI SDK: %d embeddings of %d dimensions (base64 and float); completion %q, streamed in %d chunks", len(r.Base64), len(r.Base64[0]), r.Plain.Text, r.Stream.Chunks)
}

// LangChain JS's OpenAIEmbeddings (embedQuery, embedDocuments) against a
// sous process on the test encoder: the vectors are sous's.
func TestLangChainEmbeddings(t *testing.T) {
	nm := agentsNodeModules(t)
	enc := startSous(t, 0, "SOUS_MODEL="+testEncoder(t), "SOUS_STATE=memory")
	docs := []string{"John Smith loves Paris", "great!", "a much longer sentence to pad against"}
	script := `
const { OpenAIEmbeddings } = require('@langchain/openai');
(async () => {
  const e = new OpenAIEmbeddings({ model: 'feature-extraction', apiKey: 'unused', configuration: { baseURL: process.argv[1] + '/v1' } });
  const query = await e.embedQuery('hello there');
  const docs = await e.embedDocuments(JSON.parse(process.argv[2]));
  console.log(JSON.stringify({ query, docs }));
})().catch(e => { console.error(e); process.exit(1); });
`
	var r struct {
		Query []float32
		Docs  [][]float32
	}
	dj, _ := json.Marshal(docs)
	runNode(t, nm, script, &r, enc.url, string(dj))
	want := rawEmbeddings(t, enc.url, append([]string{"hello there"}, docs...))
	sameVectors(t, "embedQuery", [][]float32{r.Query}, want[:1])
	sameVectors(t, "embedDocuments", r.Docs, want[1:])
}

// validator compiles a JSON schema with santhosh-tekuri/jsonschema, a
// validator sous does not use to decode.
func validator(t *testing.T, schema string) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// validate fails unless the JSON doc validates against s.
func validate(t *testing.T, what string, s *jsonschema.Schema, doc json.RawMessage) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatalf("%s: %s does not parse: %v", what, doc, err)
	}
	if err := s.Validate(v); err != nil {
		t.Errorf("%s: %s does not validate: %v", what, doc, err)
	}
}

// Vercel's AI SDK generateObject, with a zod schema and with a JSON
// schema, through @ai-sdk/openai-compatible (structured outputs on: it
// sends response_format json_schema) against sous on the random-weight
// decoder: the content is noise, but each object is valid for its schema,
// by the SDK's own check and by an independent validator here.
func TestVercelGenerateObject(t *testing.T) {
	nm := agentsNodeModules(t)
	dec := startSous(t, 0, "SOUS_MODEL="+toolDecoder(t), "SOUS_STATE=memory")
	script := `
const { generateObject, jsonSchema } = require('ai');
const { createOpenAICompatible } = require('@ai-sdk/openai-compatible');
const { z } = require('zod');
(async () => {
  const sous = createOpenAICompatible({ name: 'sous', baseURL: process.argv[1] + '/v1', supportsStructuredOutputs: true });
  const model = sous.chatModel('tool-decoder');
  const person = z.object({ name: z.string().max(8), age: z.number().int().min(0).max(120) });
  const colors = jsonSchema({ type: 'object', properties: { colors: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 3 } },
    required: ['colors'], additionalProperties: false });
  const out = { people: [], colors: [] };
  for (const seed of [1, 2, 3]) {
    const p = await generateObject({ model, schema: person, schemaName: 'person', prompt: 'Describe a person.', temperature: 1, seed, maxOutputTokens: 96 });
    out.people.push(p.object);
    const c = await generateObject({ model, schema: colors, schemaName: 'colors', prompt: 'Pick colors.', temperature: 1, seed, maxOutputTokens: 96 });
    out.colors.push(c.object);
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
`
	var r struct {
		People, Colors []json.RawMessage
	}
	runNode(t, nm, script, &r, dec.url)
	person := validator(t, `{"type":"object","properties":{"name":{"type":"string","maxLength":8},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}`)
	colors := validator(t, `{"type":"object","properties":{"colors":{"type":"array","items":{"enum":["red","green","blue"]},"minItems":1,"maxItems":3}},"required":["colors"],"additionalProperties":false}`)
	if len(r.People) != 3 || len(r.Colors) != 3 {
		t.Fatalf("%d people, %d colors", len(r.People), len(r.Colors))
	}
	for i := range r.People {
		validate(t, "person", person, r.People[i])
		validate(t, "colors", colors, r.Colors[i])
	}
	t.Logf("generateObject: %s; %s", r.People, r.Colors)
}

// weatherSchema is the tools' parameters in the tool tests: bounded, so
// that random weights reach the end of a call.
const weatherSchema = `{"type":"object","properties":{"city":{"type":"string","enum":["Paris","Rome"]},"days":{"type":"integer","minimum":1,"maximum":3}},"required":["city","days"],"additionalProperties":false}`

// Vercel's AI SDK generateText with a tool over several steps: each step
// a required call of the tool (sous constrains the reply to it), the SDK
// runs it and sends the result back as a tool message after the
// assistant's call, until the step limit. Every call's arguments are
// valid for the tool's parameters.
func TestVercelGenerateTextToolSteps(t *testing.T) {
	nm := agentsNodeModules(t)
	dec := startSous(t, 0, "SOUS_MODEL="+toolDecoder(t), "SOUS_STATE=memory")
	script := `
const { generateText, tool, stepCountIs, jsonSchema } = require('ai');
const { createOpenAICompatible } = require('@ai-sdk/openai-compatible');
(async () => {
  const sous = createOpenAICompatible({ name: 'sous', baseURL: process.argv[1] + '/v1', supportsStructuredOutputs: true });
  let runs = 0;
  const weather = tool({ description: 'The weather in a city.', inputSchema: jsonSchema(JSON.parse(process.argv[2])),
    execute: async ({ city, days }) => { runs++; return { city, days, celsius: 21 }; } });
  const r = await generateText({ model: sous.chatModel('tool-decoder'), tools: { weather }, toolChoice: 'required',
    stopWhen: stepCountIs(3), prompt: 'What is the weather in Paris?', temperature: 1, seed: 7, maxOutputTokens: 64 });
  console.log(JSON.stringify({ runs, steps: r.steps.map(s => ({ finish: s.finishReason,
    calls: s.toolCalls.map(c => ({ name: c.toolName, id: c.toolCallId, input: c.input })),
    results: s.toolResults.map(x => x.output) })) }));
})().catch(e => { console.error(e); process.exit(1); });
`
	var r struct {
		Runs  int
		Steps []struct {
			Finish string
			Calls  []struct {
				Name, ID string
				Input    json.RawMessage
			}
			Results []json.RawMessage
		}
	}
	runNode(t, nm, script, &r, dec.url, weatherSchema)
	params := validator(t, weatherSchema)
	if len(r.Steps) != 3 || r.Runs < 3 {
		t.Fatalf("%d steps, the tool ran %d times: %+v", len(r.Steps), r.Runs, r)
	}
	for i, s := range r.Steps {
		if s.Finish != "tool-calls" || len(s.Calls) == 0 || len(s.Results) != len(s.Calls) {
			t.Fatalf("step %d: %+v", i, s)
		}
		for _, c := range s.Calls {
			if c.Name != "weather" || c.ID == "" {
				t.Errorf("step %d: call %+v", i, c)
			}
			validate(t, "weather arguments", params, c.Input)
		}
	}
	t.Logf("generateText: %d steps, %d tool runs; first call %s", len(r.Steps), r.Runs, r.Steps[0].Calls[0].Input)
}

// LangChain JS's ChatOpenAI.bindTools: a required call comes back as the
// AIMessage's tool_calls (name, id, arguments valid for the parameters);
// the tool's result sent back as a ToolMessage after it is answered.
func TestLangChainBindTools(t *testing.T) {
	nm := agentsNodeModules(t)
	dec := startSous(t, 0, "SOUS_MODEL="+toolDecoder(t), "SOUS_STATE=memory")
	script := `
const { ChatOpenAI } = require('@langchain/openai');
const { HumanMessage, ToolMessage } = require('@langchain/core/messages');
(async () => {
  const llm = new ChatOpenAI({ model: 'tool-decoder', apiKey: 'unused', configuration: { baseURL: process.argv[1] + '/v1' },
    temperature: 1, maxTokens: 64, maxRetries: 0 });
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city.', parameters: JSON.parse(process.argv[2]) } }];
  const human = new HumanMessage('What is the weather in Paris?');
  const ai = await llm.bindTools(tools, { tool_choice: 'required' }).invoke([human]);
  const results = ai.tool_calls.map(c => new ToolMessage({ tool_call_id: c.id, content: JSON.stringify({ celsius: 21 }) }));
  const next = await llm.bindTools(tools).invoke([human, ai, ...results]);
  console.log(JSON.stringify({ calls: ai.tool_calls.map(c => ({ name: c.name, id: c.id, args: c.args })),
    next: { content: next.content, calls: (next.tool_calls || []).length } }));
})().catch(e => { console.error(e); process.exit(1); });
`
	var r struct {
		Calls []struct {
			Name, ID string
			Args     json.RawMessage
		}
		Next struct {
			Content json.RawMessage
			Calls   int
		}
	}
	runNode(t, nm, script, &r, dec.url, weatherSchema)
	params := validator(t, weatherSchema)
	if len(r.Calls) == 0 {
		t.Fatalf("no tool calls: %+v", r)
	}
	for _, c := range r.Calls {
		if c.Name != "get_weather" || c.ID == "" {
			t.Errorf("call %+v", c)
		}
		validate(t, "get_weather args", params, c.Args)
	}
	t.Logf("bindTools: %d calls, first %s; after the tool message: content %s, %d calls", len(r.Calls), r.Calls[0].Args, r.Next.Content, r.Next.Calls)
}
