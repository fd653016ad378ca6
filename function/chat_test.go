package function

import (
	"bufio"
	"encoding/json"
	"io"
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
		`{"messages":[{"role":"user","content":"hi"}],"n":9}`:                                                 "n 9: want 1 to 8",
		`{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}`: "renders no tools",
		`{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"xml"}}`:                      `response_format type "xml"`,
		`{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}`:              "WordPiece",
		`{"messages":[{"role":"user","content":"hi"}],"functions":[{"name":"f"}],"metadata":{"a":"b"}}`:       "functions: not supported",
		`{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`:             `part type "image_url"`,
		`{"messages":[{"role":"user","content":"hi"}],"top_logprobs":3}`:                                      "needs logprobs",
		`{"messages":[{"role":"user","content":"hi"}],"presence_penalty":3}`:                                  "presence_penalty",
		`{"messages":[{"role":"user","content":"hi"}],"max_tokens":4,"max_completion_tokens":5}`:              "disagree",
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
	// A message that cannot fit the model's positions with its
	// max_tokens is refused with OpenAI's code, never cut.
	long := strings.Repeat("word ", 5000)
	code, _, b = chatPost(t, s, nil, `{"messages":[{"role":"user","content":"`+long+`"}],"max_tokens":8}`)
	if code != 400 || !strings.Contains(string(b), `"code":"context_length_exceeded"`) {
		t.Errorf("a 5,000-word message: %d %.200s, want 400 context_length_exceeded", code, b)
	}
}

// The OpenAI fields that change the answer: n choices from one prefill
// (greedy: all equal), logprobs with top_logprobs, content as text parts,
// max_completion_tokens.
func TestChatCompletionsFields(t *testing.T) {
	s := genServer(t, nil)
	code, _, b := chatPost(t, s, nil, `{"messages":[{"role":"user","content":[{"type":"text","text":"hello"},{"type":"text","text":"there"}]}],
		"n":3,"max_completion_tokens":5,"logprobs":true,"top_logprobs":2}`)
	var cc struct {
		Choices []struct {
			Message  struct{ Content string }
			Logprobs struct {
				Content []struct {
					Token       string
					Logprob     float64
					Bytes       []int
					TopLogprobs []struct {
						Token   string
						Logprob float64
					} `json:"top_logprobs"`
				}
			}
		}
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal(b, &cc); err != nil || code != 200 || len(cc.Choices) != 3 {
		t.Fatalf("n 3: %d %s", code, b)
	}
	for i, ch := range cc.Choices {
		if ch.Message.Content != cc.Choices[0].Message.Content {
			t.Errorf("greedy choice %d %q differs from choice 0 %q", i, ch.Message.Content, cc.Choices[0].Message.Content)
		}
		if len(ch.Logprobs.Content) != 5 {
			t.Fatalf("choice %d: %d logprobs, want 5", i, len(ch.Logprobs.Content))
		}
		for _, lp := range ch.Logprobs.Content {
			// Greedy: the token taken is the most likely one.
			if len(lp.TopLogprobs) != 2 || lp.Logprob > 0 || lp.TopLogprobs[0].Token != lp.Token || lp.TopLogprobs[0].Logprob != lp.Logprob ||
				lp.TopLogprobs[1].Logprob > lp.Logprob || len(lp.Bytes) != len(lp.Token) {
				t.Errorf("choice %d logprob %+v", i, lp)
			}
		}
	}
	if cc.Usage.CompletionTokens != 15 {
		t.Errorf("usage completion_tokens %d, want 15 (3 choices of 5)", cc.Usage.CompletionTokens)
	}
}

// stream: true answers with data: chunks (a role delta, content deltas, a
// finish reason), with stream_options.include_usage a last chunk with no
// choices and the usage, and data: [DONE].
func TestChatCompletionsStream(t *testing.T) {
	s := genServer(t, nil)
	req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/chat/completions",
		strings.NewReader(`{"messages":[{"role":"user","content":"hello there"}],"max_tokens":8,"stream":true,"stream_options":{"include_usage":true}}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var content strings.Builder
	role, finish, done, usage := "", "", false, 0
	events, end := sseData(t, resp.Body)
	done = end
	for _, data := range events {
		var ch struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta        map[string]string `json:"delta"`
				FinishReason *string           `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil || ch.Object != "chat.completion.chunk" {
			t.Fatalf("chunk %s: %v", data, err)
		}
		if ch.Usage != nil {
			if len(ch.Choices) != 0 || finish == "" {
				t.Errorf("usage chunk %s: want no choices, after the finish", data)
			}
			usage = ch.Usage.CompletionTokens
			continue
		}
		if r := ch.Choices[0].Delta["role"]; r != "" {
			role = r
		}
		content.WriteString(ch.Choices[0].Delta["content"])
		if ch.Choices[0].FinishReason != nil {
			finish = *ch.Choices[0].FinishReason
		}
	}
	if role != "assistant" || content.Len() == 0 || finish != "length" || !done || usage != 8 {
		t.Fatalf("role %q, content %q, finish %q, [DONE] %v, usage %d", role, content.String(), finish, done, usage)
	}
}

// A session's streamed turn cannot carry X-Sous-Turn (its headers leave
// with the first token); its last chunk names the session and the turn.
func TestChatCompletionsStreamNamesTheTurn(t *testing.T) {
	s := genServer(t, nil)
	for want := 1; want <= 2; want++ {
		req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/chat/completions",
			strings.NewReader(`{"messages":[{"role":"user","content":"hello there"}],"max_tokens":4,"stream":true}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Sous-Session", "streamed-turns")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		events, _ := sseData(t, resp.Body)
		resp.Body.Close()
		var turns []int
		for _, data := range events {
			var ch struct {
				Sous *struct {
					Session string `json:"session"`
					Turn    int    `json:"turn"`
				} `json:"sous"`
				Choices []struct {
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
			}
			json.Unmarshal([]byte(data), &ch)
			if ch.Sous != nil {
				if ch.Sous.Session != "streamed-turns" || len(ch.Choices) != 1 || ch.Choices[0].FinishReason == nil {
					t.Errorf("chunk %s: want the session on the finishing chunk", data)
				}
				turns = append(turns, ch.Sous.Turn)
			}
		}
		if len(turns) != 1 || turns[0] != want {
			t.Errorf("streamed turn %d: the chunks name turns %v, want [%d] once", want, turns, want)
		}
	}
}

// sseData reads an OpenAI stream: the data of its events in order, and
// whether it ended with [DONE].
func sseData(t *testing.T, r io.Reader) (events []string, done bool) {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		switch {
		case !ok:
		case data == "[DONE]":
			done = true
		default:
			events = append(events, data)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return events, done
}
