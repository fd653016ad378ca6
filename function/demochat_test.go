package function

import (
	"encoding/json"
	"testing"

	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/prompt"
)

// chatReply sends one user message of session's chat ("" for none) and
// returns the reply.
func chatReply(t *testing.T, s *server, session, text string) string {
	t.Helper()
	var h map[string]string
	if session != "" {
		h = map[string]string{"X-Sous-Session": session}
	}
	body, _ := json.Marshal(map[string]any{"model": "chat", "messages": []prompt.Message{{Role: "user", Content: text}}, "max_tokens": 40})
	code, _, b := chatPost(t, s, h, string(body))
	var cc chatCompletion
	if code != 200 || json.Unmarshal(b, &cc) != nil || len(cc.Choices) != 1 {
		t.Fatalf("%q: %d %s", text, code, b)
	}
	if cc.Choices[0].FinishReason != "stop" {
		t.Errorf("%q: finish %s: the reply did not end with <|im_end|>", text, cc.Choices[0].FinishReason)
	}
	return cc.Choices[0].Message.Content
}

// The bundled chat model (SOUS_MODEL=chat) answers the user lines it was
// fitted to with their replies, greedily; and what it answers to an order
// number depends on what the conversation asked before it.
func TestDemoChatModel(t *testing.T) {
	cfg := testConfig(t)
	cfg.Model = demo.ChatName
	s := startServer(t, cfg)
	replies := conversationsReplies(t)
	for _, q := range []string{"hello", "where is my order?", "i want a refund.", "how do i reset my password?",
		"what are your opening hours?", "is shipping free?", "my card was declined.", "i got a damaged item."} {
		want, ok := replies[q]
		if !ok {
			t.Fatalf("%q is not a first line of data/chat.txt", q)
		}
		if got := chatReply(t, s, "", q); got != want {
			t.Errorf("%q: %q, the data's reply is %q", q, got, want)
		}
	}
	// One user line, two conversations: the reply follows the first turn.
	for session, c := range map[string][2]string{
		"cancel": {"i want to cancel my order.", "done. your order is cancelled and you will not be charged."},
		"track":  {"where is my order?", "your order ships today and arrives in two days."},
		"broken": {"my item arrived broken.", "we will send a new one today, free of charge."},
	} {
		chatReply(t, s, session, c[0])
		if got := chatReply(t, s, session, "it is 4521."); got != c[1] {
			t.Errorf("%s: %q after %q, want %q", session, got, c[0], c[1])
		}
	}
}

// conversationsReplies maps each conversation's first user line in
// data/chat.txt to the assistant's reply.
func conversationsReplies(t *testing.T) map[string]string {
	t.Helper()
	convs, err := demo.ReadChat(demo.Data, "data/chat.txt")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, c := range convs {
		if len(c) >= 2 && c[0].Role == "user" && c[1].Role == "assistant" {
			out[c[0].Content] = c[1].Content
		}
	}
	return out
}
