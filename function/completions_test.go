package function

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/sous-ai/sous/function/tokenizer"
)

type completion struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int    `json:"index"`
		Text         string `json:"text"`
		FinishReason string `json:"finish_reason"`
		Logprobs     *struct {
			Tokens        []string             `json:"tokens"`
			TokenLogprobs []float32            `json:"token_logprobs"`
			TopLogprobs   []map[string]float32 `json:"top_logprobs"`
			TextOffset    []int                `json:"text_offset"`
		} `json:"logprobs"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

func complete(t *testing.T, s *server, body string) completion {
	t.Helper()
	code, _, b := s.post(t, "/v1/completions", map[string]string{"Content-Type": "application/json"}, body)
	var c completion
	if err := json.Unmarshal(b, &c); err != nil || code != 200 || c.Object != "text_completion" || c.Model != "text-generation" {
		t.Fatalf("%s: %d %s", body, code, b)
	}
	return c
}

// POST /v1/completions continues the prompt as it is (no chat template:
// prompt_tokens are the prompt's own tokens), greedily the same alone, as
// n choices sharing one prefill, and among a list of prompts; echo,
// stop, legacy logprobs and streaming as OpenAI's legacy API has them.
func TestCompletionsEndpoint(t *testing.T) {
	s := genServer(t, nil)
	tokJSON, err := os.ReadFile("tokenizer/testdata/tokenizers/all-minilm-l6-v2.json")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Parse(tokJSON)
	if err != nil {
		t.Fatal(err)
	}
	const p, q = "the quick brown fox", "once upon a time there"
	alone := complete(t, s, `{"model":"text-generation","prompt":"`+p+`","max_tokens":6,"temperature":0}`)
	if len(alone.Choices) != 1 || alone.Choices[0].Text == "" || alone.Choices[0].FinishReason != "length" ||
		alone.Usage.PromptTokens != len(tok.IDs(p)) || alone.Usage.CompletionTokens != 6 || alone.Usage.TotalTokens != len(tok.IDs(p))+6 {
		t.Fatalf("alone: %+v (the prompt is %d tokens)", alone, len(tok.IDs(p)))
	}
	text := alone.Choices[0].Text
	aloneQ := complete(t, s, `{"prompt":"`+q+`","max_tokens":6,"temperature":0}`)
	t.Logf("%q continues greedily as %q; %q as %q", p, text, q, aloneQ.Choices[0].Text)

	n := complete(t, s, `{"prompt":"`+p+`","max_tokens":6,"temperature":0,"n":3}`)
	if len(n.Choices) != 3 || n.Usage.CompletionTokens != 18 || n.Usage.PromptTokens != alone.Usage.PromptTokens {
		t.Fatalf("n=3: %+v", n)
	}
	for i, c := range n.Choices {
		if c.Index != i || c.Text != text {
			t.Errorf("n=3 choice %d: %d %q, alone %q", i, c.Index, c.Text, text)
		}
	}

	list := complete(t, s, `{"prompt":["`+p+`","`+q+`"],"max_tokens":6,"temperature":0,"n":2}`)
	if len(list.Choices) != 4 || list.Usage.PromptTokens != alone.Usage.PromptTokens+aloneQ.Usage.PromptTokens || list.Usage.CompletionTokens != 24 {
		t.Fatalf("list: %+v", list)
	}
	for i, c := range list.Choices {
		want := []string{text, text, aloneQ.Choices[0].Text, aloneQ.Choices[0].Text}[i]
		if c.Index != i || c.Text != want {
			t.Errorf("list choice %d: %d %q, want %q", i, c.Index, c.Text, want)
		}
	}

	echo := complete(t, s, `{"prompt":"`+p+`","max_tokens":6,"temperature":0,"echo":true}`)
	if got := echo.Choices[0].Text; got != p+text {
		t.Errorf("echo: %q, want %q", got, p+text)
	}
	words := strings.Fields(text)
	if len(words) > 1 {
		stop := complete(t, s, `{"prompt":"`+p+`","max_tokens":6,"temperature":0,"stop":"`+words[1]+`"}`)
		if c := stop.Choices[0]; c.FinishReason != "stop" || !strings.HasPrefix(text, c.Text) || strings.Contains(c.Text, words[1]) {
			t.Errorf("stop %q: %q (%s), the whole text %q", words[1], c.Text, c.FinishReason, text)
		}
	}

	lp := complete(t, s, `{"prompt":"`+p+`","max_tokens":6,"temperature":0,"logprobs":2}`)
	l := lp.Choices[0].Logprobs
	if l == nil || len(l.Tokens) != 6 || len(l.TokenLogprobs) != 6 || len(l.TopLogprobs) != 6 || len(l.TextOffset) != 6 || lp.Choices[0].Text != text {
		t.Fatalf("logprobs: %+v", lp.Choices[0])
	}
	for i, tk := range l.Tokens {
		top := l.TopLogprobs[i]
		if len(top) < 1 || len(top) > 3 || top[tk] != l.TokenLogprobs[i] || l.TokenLogprobs[i] > 0 {
			t.Errorf("token %d %q: logprob %g, top %v", i, tk, l.TokenLogprobs[i], top)
		}
		for _, v := range top {
			if v > l.TokenLogprobs[i] { // greedy: the token is the likeliest
				t.Errorf("token %d %q (%g) is not its step's likeliest: %v", i, tk, l.TokenLogprobs[i], top)
			}
		}
		if i > 0 && l.TextOffset[i] <= l.TextOffset[i-1] {
			t.Errorf("text_offset %v does not grow", l.TextOffset)
		}
	}

	// Streamed: the same text in pieces, the finish, usage, [DONE]; with
	// echo, the prompt first.
	for _, echo := range []bool{false, true} {
		want := text
		if echo {
			want = p + text
		}
		got, finish, usage, chunks, done := streamCompletion(t, s,
			fmt.Sprintf(`{"prompt":"%s","max_tokens":6,"temperature":0,"echo":%v,"stream":true,"stream_options":{"include_usage":true}}`, p, echo))
		if got != want || finish != "length" || !done || usage != 6 || chunks < 2 {
			t.Errorf("stream (echo %v): %q (%s) in %d chunks, usage %d, [DONE] %v; want %q", echo, got, finish, chunks, usage, done, want)
		}
	}
}

// streamCompletion reads a streamed completion: its text, finish reason,
// usage chunk's completion tokens, text chunks and whether [DONE] came.
func streamCompletion(t *testing.T, s *server, body string) (text, finish string, usage, chunks int, done bool) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var streamed strings.Builder
	events, end := sseData(t, resp.Body)
	done = end
	for _, data := range events {
		var ch struct {
			Object  string `json:"object"`
			Choices []struct {
				Text         string  `json:"text"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil || ch.Object != "text_completion" {
			t.Fatalf("chunk %s: %v", data, err)
		}
		if ch.Usage != nil {
			usage = ch.Usage.CompletionTokens
			continue
		}
		chunks++
		streamed.WriteString(ch.Choices[0].Text)
		if ch.Choices[0].FinishReason != nil {
			finish = *ch.Choices[0].FinishReason
		}
	}
	return streamed.String(), finish, usage, chunks, done
}

// What /v1/completions cannot honour is refused by name, in OpenAI's
// error shape.
func TestCompletionsRefused(t *testing.T) {
	s := genServer(t, nil)
	long := strings.Repeat("word ", 600)
	for _, tc := range []struct {
		name, body string
		header     map[string]string
		code       int
		msg, ecode string
	}{
		{"suffix", `{"prompt":"a","suffix":"b"}`, nil, 400, "suffix: not supported", ""},
		{"best_of", `{"prompt":"a","best_of":3}`, nil, 400, "best_of 3: not supported", ""},
		{"logit_bias", `{"prompt":"a","logit_bias":{"7":100}}`, nil, 400, "logit_bias: not supported", ""},
		{"logprobs stream", `{"prompt":"a","logprobs":1,"stream":true}`, nil, 400, "logprobs with stream", ""},
		{"logprobs echo", `{"prompt":"a","logprobs":1,"echo":true}`, nil, 400, "logprobs with echo", ""},
		{"logprobs range", `{"prompt":"a","logprobs":21}`, nil, 400, "logprobs 21: want 0 to 20", ""},
		{"token ids", `{"prompt":[1996,4248]}`, nil, 400, "token id arrays are not supported", ""},
		{"no prompt", `{"max_tokens":3}`, nil, 400, "prompt: required", ""},
		{"unknown field", `{"prompt":"a","min_p":0.1}`, nil, 400, "min_p: not supported", ""},
		{"n", `{"prompt":"a","n":9}`, nil, 400, "n 9: want 1 to 8", ""},
		{"n stream", `{"prompt":"a","n":2,"stream":true}`, nil, 400, "n above 1 does not stream", ""},
		{"stream echo max_tokens", `{"prompt":"a","max_tokens":9999,"stream":true,"echo":true}`, nil, 400, "max_tokens 9999", ""},
		{"session", `{"prompt":"a"}`, map[string]string{"X-Sous-Session": "s1"}, 400, "continues no session", ""},
		{"too long", `{"prompt":"` + long + `"}`, nil, 400, "600 prompt tokens and max_tokens 16", "context_length_exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Content-Type": "application/json"}
			for k, v := range tc.header {
				h[k] = v
			}
			code, _, b := s.post(t, "/v1/completions", h, tc.body)
			checkInvalidRequest(t, code, b, tc.code, tc.msg, tc.ecode)
		})
	}
	other := hfServer(t, "feature-extraction", nil)
	code, _, b := other.post(t, "/v1/completions", map[string]string{"Content-Type": "application/json"}, `{"prompt":"a"}`)
	if code != 404 || !strings.Contains(string(b), "does not generate") {
		t.Errorf("feature-extraction: %d %s, want 404", code, b)
	}
}
