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
func servingMatches(t *testing.T, dir, dtype string, refs []reference, oneAtATime bool) {
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
		var cc struct {
			Choices []struct {
				Logprobs struct {
					Content []struct{ Bytes []byte }
				}
			}
			Usage struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("conversation %d: %d %s", c, resp.StatusCode, b)
		}
		// Bytes come as a list of numbers: read them as such.
		var raw struct {
			Choices []struct {
				Logprobs struct {
					Content []struct {
						Bytes []int `json:"bytes"`
					} `json:"content"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		json.Unmarshal(b, &cc)
		json.Unmarshal(b, &raw)
		ref := refs[c]
		want := ref.GeneratedIDs
		if n := len(want); n > 0 && slices.Contains(testmodels.LLMEOS, want[n-1]) {
			want = want[:n-1] // the end of sequence is no content token
		}
		got := raw.Choices[0].Logprobs.Content
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
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
