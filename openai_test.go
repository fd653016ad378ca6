package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// testDecoder writes the test decoder (testmodels.Decoder) and returns its
// model directory.
func testDecoder(t *testing.T) string {
	t.Helper()
	tok, err := os.ReadFile("function/tokenizer/testdata/tokenizers/all-minilm-l6-v2.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := testmodels.Decoder(dir, tok); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "text-generation")
}

// The official OpenAI JavaScript SDK (npm openai, fetched by make test
// into .cache/npm-openai) runs a non-streaming and a streaming chat
// against a sous process serving the test decoder.
func TestOpenAISDKChat(t *testing.T) {
	sdk, err := filepath.Abs(".cache/npm-openai/package")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sdk, "index.js")); err != nil {
		t.Fatalf("the OpenAI SDK is not fetched (make test fetches it): %v", err)
	}
	s := startSous(t, 0, "SOUS_MODEL="+testDecoder(t), "SOUS_STATE=memory")
	script := `
const OpenAI = require(process.argv[1]);
(async () => {
  const client = new OpenAI({ baseURL: process.argv[2] + '/v1', apiKey: 'unused' });
  const models = await client.models.list();
  const plain = await client.chat.completions.create({
    model: 'text-generation', max_tokens: 6,
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello there' }],
  });
  const stream = await client.chat.completions.create({
    model: 'text-generation', max_tokens: 6, stream: true,
    messages: [{ role: 'user', content: 'hello there' }],
  });
  let content = '', finish = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    content += chunk.choices[0].delta.content || '';
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  console.log(JSON.stringify({
    models: models.data.map(m => m.id),
    plain: { content: plain.choices[0].message.content, finish: plain.choices[0].finish_reason, usage: plain.usage },
    stream: { content, finish, chunks },
  }));
})().catch(e => { console.error(e); process.exit(1); });
`
	out, err := exec.Command("node", "-e", script, "--", sdk, s.url).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var r struct {
		Models []string
		Plain  struct {
			Content, Finish string
			Usage           struct{ Completion_tokens int }
		}
		Stream struct {
			Content, Finish string
			Chunks          int
		}
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if strings.Join(r.Models, ",") != "text-generation" || r.Plain.Content == "" || r.Plain.Finish != "length" ||
		r.Plain.Usage.Completion_tokens != 6 || r.Stream.Content == "" || r.Stream.Finish != "length" || r.Stream.Chunks < 3 {
		t.Fatalf("SDK saw %s", out)
	}
	t.Logf("OpenAI SDK: models %v; create: %q (%s); stream: %d chunks, %q (%s)", r.Models, r.Plain.Content, r.Plain.Finish, r.Stream.Chunks, r.Stream.Content, r.Stream.Finish)
}
