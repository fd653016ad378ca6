package prompt

import (
	"bufio"
	"encoding/json"
	"os"
	"testing"
)

// Every committed conversation renders, with each template, exactly as
// @huggingface/jinja renders it (testdata/gen.js wrote expected.jsonl).
func TestRenderingsMatchHuggingFace(t *testing.T) {
	var templates map[string]struct {
		ChatTemplate string  `json:"chat_template"`
		BOS          *string `json:"bos_token"`
		EOS          *string `json:"eos_token"`
	}
	b, err := os.ReadFile("testdata/templates.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &templates); err != nil {
		t.Fatal(err)
	}
	var convs []struct {
		Messages            []Message `json:"messages"`
		AddGenerationPrompt bool      `json:"add_generation_prompt"`
	}
	lines := func(path string, fn func([]byte)) {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<22)
		for sc.Scan() {
			fn(sc.Bytes())
		}
	}
	lines("testdata/conversations.jsonl", func(l []byte) {
		var c struct {
			Messages            []Message `json:"messages"`
			AddGenerationPrompt bool      `json:"add_generation_prompt"`
		}
		json.Unmarshal(l, &c)
		convs = append(convs, c)
	})
	compiled := map[string]*Template{}
	for name, tc := range templates {
		str := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		tmpl, err := Compile(tc.ChatTemplate, str(tc.BOS), str(tc.EOS))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		compiled[name] = tmpl
	}
	same, all := 0, 0
	lines("testdata/expected.jsonl", func(l []byte) {
		var want struct {
			Template     string
			Conversation int
			Text         string
		}
		json.Unmarshal(l, &want)
		all++
		c := convs[want.Conversation]
		got, err := compiled[want.Template].Render(c.Messages, c.AddGenerationPrompt)
		if err != nil || got != want.Text {
			t.Errorf("%s, conversation %d: %v\ngot  %q\nwant %q", want.Template, want.Conversation, err, got, want.Text)
			return
		}
		same++
	})
	if all < 21 {
		t.Fatalf("%d expected renderings, want 21", all)
	}
	t.Logf("%d of %d renderings equal to @huggingface/jinja's (%d templates × %d conversations)", same, all, len(templates), len(convs))
}

// Conversations with tools (definitions, assistant tool calls with null
// content, several calls at once, tool results, arguments that are no
// JSON) render with Qwen3's, a Llama 3.1-style and a Mistral-style
// template exactly as transformers.js's apply_chat_template renders them
// (testdata/tools_gen.js wrote tools_expected.jsonl); a conversation a
// template refuses is refused here too.
func TestToolRenderingsMatchTransformersJS(t *testing.T) {
	var templates map[string]struct {
		ChatTemplate string  `json:"chat_template"`
		BOS          *string `json:"bos_token"`
		EOS          *string `json:"eos_token"`
	}
	b, err := os.ReadFile("testdata/tool_templates.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &templates); err != nil {
		t.Fatal(err)
	}
	type conversation struct {
		Tools               json.RawMessage `json:"tools"`
		Messages            []Message       `json:"messages"`
		AddGenerationPrompt bool            `json:"add_generation_prompt"`
	}
	var convs []conversation
	readLines(t, "testdata/tools.jsonl", func(l []byte) {
		var c conversation
		if err := json.Unmarshal(l, &c); err != nil {
			t.Fatal(err)
		}
		convs = append(convs, c)
	})
	same, all := 0, 0
	readLines(t, "testdata/tools_expected.jsonl", func(l []byte) {
		var want struct {
			Template     string
			Conversation int
			Text         *string
			Error        string
		}
		if err := json.Unmarshal(l, &want); err != nil {
			t.Fatal(err)
		}
		all++
		tc, ok := templates[want.Template]
		if !ok {
			t.Fatalf("template %q is not in tool_templates.json", want.Template)
		}
		str := func(p *string) string {
			if p == nil {
				return ""
			}
			return *p
		}
		tmpl, err := Compile(tc.ChatTemplate, str(tc.BOS), str(tc.EOS))
		if err != nil {
			t.Fatalf("%s: %v", want.Template, err)
		}
		if !tmpl.Tools() {
			t.Errorf("%s: Tools() is false for a template that renders tools", want.Template)
		}
		c := convs[want.Conversation]
		got, err := tmpl.RenderTools(c.Messages, c.Tools, c.AddGenerationPrompt)
		switch {
		case want.Text == nil && err == nil:
			t.Errorf("%s, conversation %d: rendered, transformers.js refused it (%s)", want.Template, want.Conversation, want.Error)
		case want.Text == nil:
			same++
		case err != nil || got != *want.Text:
			t.Errorf("%s, conversation %d: %v\ngot  %q\nwant %q", want.Template, want.Conversation, err, got, *want.Text)
		default:
			same++
		}
	})
	if all < 15 {
		t.Fatalf("%d expected renderings, want 15", all)
	}
	t.Logf("%d of %d renderings with tools equal to transformers.js's", same, all)
}

func readLines(t *testing.T, path string, fn func([]byte)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		fn(sc.Bytes())
	}
}
