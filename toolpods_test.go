package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/internal/daprtest"
)

// toolChat posts a chat completion (session "" : stateless) and returns the
// reply's message, finish reason and prompt tokens.
func toolChat(t *testing.T, base, session, body string) (prompt.Message, string, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if session != "" {
		req.Header.Set("X-Sous-Session", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Choices []struct {
			Message      prompt.Message `json:"message"`
			FinishReason string         `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
		t.Fatalf("%s: %d %s", body, resp.StatusCode, b)
	}
	return r.Choices[0].Message, r.Choices[0].FinishReason, r.Usage.PromptTokens
}

// A session's tool loop continues on another pod from the Dapr state
// store: pod A answers with a call (saved in the transcript), pod B gets
// only the tool's result and builds the prompt from the store: the same
// prompt, and the same greedy reply, as a client sending the whole
// conversation gets. The transcript holds the call and the result.
func TestDaprToolLoopAcrossPods(t *testing.T) {
	modelEnv := "SOUS_MODEL=" + toolDecoder(t)
	redis := daprtest.StartRedis(t)
	a := startPod(t, redis, "", modelEnv)
	b := startPod(t, redis, "", modelEnv)
	tools := `[{"type":"function","function":{"name":"get_weather","parameters":` + weatherParameters + `}}]`
	user := `{"role":"user","content":"Weather in Oslo?"}`

	m1, finish1, _ := toolChat(t, a.sous.url, "loop", `{"messages":[`+user+`],"tools":`+tools+`,"tool_choice":"required","max_tokens":200,"temperature":0}`)
	if finish1 != "tool_calls" || len(m1.ToolCalls) != 1 {
		t.Fatalf("pod A: finish %s, message %+v: want one call", finish1, m1)
	}
	if err := validArguments(t, m1.ToolCalls[0].Function.Arguments); err != nil {
		t.Fatal(err)
	}
	result := fmt.Sprintf(`{"role":"tool","tool_call_id":%q,"content":"-3 and snowing"}`, m1.ToolCalls[0].ID)
	m2, finish2, p2 := toolChat(t, b.sous.url, "loop", `{"messages":[`+result+`],"tools":`+tools+`,"max_tokens":8,"temperature":0}`)
	call, _ := json.Marshal(m1.ToolCalls[0])
	whole, finishWhole, pWhole := toolChat(t, a.sous.url, "", `{"messages":[`+user+`,{"role":"assistant","content":null,"tool_calls":[`+string(call)+`]},`+
		result+`],"tools":`+tools+`,"max_tokens":8,"temperature":0}`)
	if p2 != pWhole || finish2 != finishWhole || m2.Content != whole.Content {
		t.Errorf("pod B from the store: %d prompt tokens, %s %q; the whole conversation sent: %d, %s %q", p2, finish2, m2.Content, pWhole, finishWhole, whole.Content)
	}
	st, _ := stored(t, b.daprd, "loop")
	if st.Turn != 2 || len(st.History) != 2 {
		t.Fatalf("stored transcript at turn %d with %d entries, want 2", st.Turn, len(st.History))
	}
	var out1 struct {
		ToolCalls []prompt.ToolCall `json:"tool_calls"`
	}
	var in2 []prompt.Message
	json.Unmarshal(st.History[0].Output, &out1)
	json.Unmarshal(st.History[1].Messages, &in2)
	if len(out1.ToolCalls) != 1 || out1.ToolCalls[0] != m1.ToolCalls[0] || len(in2) != 1 || in2[0].Role != "tool" || in2[0].ToolCallID != m1.ToolCalls[0].ID {
		t.Errorf("transcript: turn 1 output %s, turn 2 messages %s", st.History[0].Output, st.History[1].Messages)
	}
	t.Logf("pod A called %s(%s); pod B, from the store: %d prompt tokens (the whole conversation: %d), %s %q",
		m1.ToolCalls[0].Function.Name, m1.ToolCalls[0].Function.Arguments, p2, pWhole, finish2, m2.Content)
}
