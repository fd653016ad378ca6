package testmodels_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/sous-ai/sous/function"
	"github.com/sous-ai/sous/function/config"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// servingMatches serves dir's variant with sous itself (the model
// directory read as SOUS_MODEL and SOUS_MODEL_DTYPE name it) and holds it
// to transformers.js: the prompt ids sous renders with the model's chat
// template and tokenizer equal apply_chat_template's, and its greedy chat
// completions, one session per conversation all at once (continuous
// batching), carry the tokens generate() made (logprobs give each token's
// bytes). One at a time for q8, whose activation scale is per batch.
func servingMatches(t *testing.T, dir, dtype string, refs []reference, oneAtATime, constrained bool) {
	t.Helper()
	m, err := tasks.OpenVariant(dir, "", "", dtype, "")
	if err != nil {
		t.Fatal(err)
	}
	for c, conv := range llmConversations {
		var msgs []prompt.Message
		for _, x := range conv {
			msgs = append(msgs, prompt.Message{Role: x["role"], Content: x["content"]})
		}
		b := prompt.Builder{Template: m.Chat, Encode: m.Tok.IDs, Positions: m.MaxLength}
		ids, err := b.Build(nil, msgs, llmNewTokens)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, refs[c].PromptIDs) {
			t.Fatalf("conversation %d: sous's prompt ids %v, transformers.js's apply_chat_template %v", c, ids, refs[c].PromptIDs)
		}
	}

	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Model, cfg.ModelDType, cfg.Library, cfg.Device = dir, dtype, model.FindLibrary(), "cpu"
	// Chunks of 7 tokens: every prompt spans several (sous prefills a q8
	// graph's whole).
	cfg.PrefillChunk = 7
	f, err := function.New(cfg, function.WithLogger(slog.New(slog.NewJSONHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.Serve(ctx, ln) }()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	url := "http://" + ln.Addr().String() + "/v1/chat/completions"

	chat := func(c int) error {
		body, _ := json.Marshal(map[string]any{"messages": llmConversations[c], "max_tokens": llmNewTokens,
			"temperature": 0, "logprobs": true})
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Sous-Session", fmt.Sprintf("%s-%d", filepath.Base(dir), c))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("conversation %d: %d %s", c, resp.StatusCode, b)
		}
		// Bytes come as a list of numbers: read them as such.
		var cc struct {
			Choices []struct {
				Logprobs struct {
					Content []struct {
						Bytes []int `json:"bytes"`
					} `json:"content"`
				} `json:"logprobs"`
			} `json:"choices"`
			Usage struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(b, &cc); err != nil || len(cc.Choices) != 1 {
			return fmt.Errorf("conversation %d: reply %s: %v", c, b, err)
		}
		ref := refs[c]
		want := ref.GeneratedIDs
		if n := len(want); n > 0 && slices.Contains(testmodels.LLMEOS, want[n-1]) {
			want = want[:n-1] // the end of sequence is no content token
		}
		got := cc.Choices[0].Logprobs.Content
		if len(got) != len(want) || cc.Usage.CompletionTokens != len(ref.GeneratedIDs) || cc.Usage.PromptTokens != len(ref.PromptIDs) {
			return fmt.Errorf("conversation %d: %d content tokens (usage %d prompt, %d completion), transformers.js %d (%d prompt, %d generated)",
				c, len(got), cc.Usage.PromptTokens, cc.Usage.CompletionTokens, len(want), len(ref.PromptIDs), len(ref.GeneratedIDs))
		}
		for i, id := range want {
			tb := m.Tok.TokenBytes(id)
			gb := make([]byte, len(got[i].Bytes))
			for j, x := range got[i].Bytes {
				gb[j] = byte(x)
			}
			if string(gb) != string(tb) {
				return fmt.Errorf("conversation %d token %d: sous %q, transformers.js %d %q", c, i, gb, id, tb)
			}
		}
		return nil
	}
	// Structured outputs in the same batches: sampled (temperature 1) under
	// JSON schemas, every reply parses and validates with an independent
	// validator, while the greedy ones beside them stay equal to
	// transformers.js's.
	var wgc sync.WaitGroup
	var cmu sync.Mutex
	var cerrs []error
	finishes := map[string]int{}
	if constrained {
		for i, schema := range structuredSchemas {
			for rep := range 2 {
				wgc.Add(1)
				go func() {
					defer wgc.Done()
					finish, err := structured(url, schema, uint64(100*i+rep+1))
					cmu.Lock()
					defer cmu.Unlock()
					finishes[finish]++
					if err != nil {
						cerrs = append(cerrs, fmt.Errorf("schema %d: %w", i, err))
					}
				}()
			}
		}
	}
	errs := make([]error, len(refs))
	if oneAtATime {
		for c := range refs {
			errs[c] = chat(c)
		}
	} else {
		var wg sync.WaitGroup
		for c := range refs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[c] = chat(c) }()
		}
		wg.Wait()
	}
	wgc.Wait()
	for _, err := range append(errs, cerrs...) {
		if err != nil {
			t.Error(err)
		}
	}
	if constrained {
		t.Logf("structured outputs: %d replies, finish reasons %v", 2*len(structuredSchemas), finishes)
	}
}

// structuredSchemas are bounded schemas, so that random weights reach
// their end (an unbounded string rarely closes).
var structuredSchemas = []string{
	`{"type":"object","properties":{"name":{"type":"string","maxLength":8},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}`,
	`{"type":"array","items":{"enum":["red","green","blue"]},"minItems":1,"maxItems":3}`,
	`{"type":"object","properties":{"ok":{"type":"boolean"},"note":{"anyOf":[{"type":"null"},{"type":"string","maxLength":5}]},"kind":{"const":"reply"}},"required":["ok","note","kind"],"additionalProperties":false}`,
	`{"$defs":{"p":{"type":"object","properties":{"x":{"type":"integer","minimum":-5,"maximum":5}},"required":["x"],"additionalProperties":false}},"type":"object","properties":{"a":{"$ref":"#/$defs/p"},"b":{"type":"array","items":{"$ref":"#/$defs/p"},"maxItems":2}},"required":["a","b"],"additionalProperties":false}`,
}

// structured asks for one reply under schema and validates it with
// santhosh-tekuri/jsonschema. It returns the finish reason.
func structured(url, schema string, seed uint64) (string, error) {
	body := fmt.Sprintf(`{"messages":[{"role":"user","content":"Answer in JSON."}],"max_tokens":96,"temperature":1,"seed":%d,
		"response_format":{"type":"json_schema","json_schema":{"name":"t","strict":true,"schema":%s}}}`, seed, schema)
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%d %s", resp.StatusCode, b)
	}
	var cc struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &cc); err != nil || len(cc.Choices) != 1 {
		return "", fmt.Errorf("reply %s: %v", b, err)
	}
	ch := cc.Choices[0]
	if ch.FinishReason != "stop" {
		// Every schema here is bounded: the grammar ends it within
		// max_tokens.
		return ch.FinishReason, fmt.Errorf("finish %q, want stop: %q", ch.FinishReason, ch.Message.Content)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		return ch.FinishReason, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		return ch.FinishReason, err
	}
	sch, err := c.Compile("schema.json")
	if err != nil {
		return ch.FinishReason, err
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(ch.Message.Content))
	if err != nil {
		return ch.FinishReason, fmt.Errorf("reply %q does not parse: %v", ch.Message.Content, err)
	}
	if err := sch.Validate(inst); err != nil {
		return ch.FinishReason, fmt.Errorf("reply %q does not validate: %v", ch.Message.Content, err)
	}
	return ch.FinishReason, nil
}
