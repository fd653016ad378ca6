package function

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sous-ai/sous/function/prompt"
)

func chatPost(t *testing.T, s *server, header map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range header {
		h[k] = v
	}
	return s.post(t, "/v1/chat/completions", h, body)
}

type chatCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message      prompt.Message `json:"message"`
		FinishReason string         `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

// POST /v1/chat/completions answers in OpenAI's shape, stateless by
// default; with X-Sous-Session the stored conversation comes first and the
// exchange is saved (the second call's prompt holds the first exchange).
func TestChatCompletions(t *testing.T) {
	s := genServer(t, nil)
	code, _, b := chatPost(t, s, nil, `{"model":"text-generation","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there"}],"max_tokens":6}`)
	var cc chatCompletion
	json.Unmarshal(b, &cc)
	if code != 200 || cc.Object != "chat.completion" || len(cc.Choices) != 1 || cc.Choices[0].Message.Role != "assistant" ||
		cc.Choices[0].Message.Content == "" || cc.Usage.CompletionTokens != 6 || cc.Usage.TotalTokens != cc.Usage.PromptTokens+6 {
		t.Fatalf("%d %s", code, b)
	}
	sess := map[string]string{"X-Sous-Session": "chat-1"}
	_, h1, b1 := chatPost(t, s, sess, `{"messages":[{"role":"user","content":"hello there"}],"max_tokens":4}`)
	_, h2, b2 := chatPost(t, s, sess, `{"messages":[{"role":"user","content":"and then?"}],"max_tokens":4}`)
	var c1, c2 chatCompletion
	json.Unmarshal(b1, &c1)
	json.Unmarshal(b2, &c2)
	if h1.Get("X-Sous-Turn") != "1" || h2.Get("X-Sous-Turn") != "2" || c2.Usage.PromptTokens <= c1.Usage.PromptTokens+4 {
		t.Fatalf("session turns %q %q, prompt tokens %d then %d", h1.Get("X-Sous-Turn"), h2.Get("X-Sous-Turn"), c1.Usage.PromptTokens, c2.Usage.PromptTokens)
	}
	gcode, gb := s.get(t, "/v1/models")
	if gcode != 200 || !strings.Contains(string(gb), `"id":"text-generation"`) {
		t.Errorf("/v1/models: %d %s", gcode, gb)
	}
	for body, want := range map[string]string{
		`{"messages":[{"role":"user","content":"hi"}],"n":2}`: "n: only 1",
		`{"messages":[]}`: "at least one",
		`{"messages":[{"role":"robot","content":"hi"}]}`:                 "role \"robot\"",
		`{"messages":[{"role":"user","content":"hi"}],"temperature":-1}`: "temperature",
		`{"messages":[{"role":"user","content":"hi"}],"stop":3}`:         "stop",
	} {
		code, _, b := chatPost(t, s, nil, body)
		var e struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		json.Unmarshal(b, &e)
		if code != 400 || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, want) {
			t.Errorf("%s: %d %s, want 400 %q", body, code, b, want)
		}
	}
}

// stream: true answers with data: chunks (a role delta, content deltas, a
// finish reason) and data: [DONE].
func TestChatCompletionsStream(t *testing.T) {
	s := genServer(t, nil)
	req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"hello there"}],"max_tokens":8,"stream":true}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var content strings.Builder
	role, finish, done := "", "", false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var ch struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta        map[string]string `json:"delta"`
				FinishReason *string           `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil || ch.Object != "chat.completion.chunk" {
			t.Fatalf("chunk %s: %v", data, err)
		}
		if r := ch.Choices[0].Delta["role"]; r != "" {
			role = r
		}
		content.WriteString(ch.Choices[0].Delta["content"])
		if ch.Choices[0].FinishReason != nil {
			finish = *ch.Choices[0].FinishReason
		}
	}
	if role != "assistant" || content.Len() == 0 || finish != "length" || !done {
		t.Fatalf("role %q, content %q, finish %q, [DONE] %v", role, content.String(), finish, done)
	}
}
