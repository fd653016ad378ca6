package function

import (
	"encoding/json"
	"testing"
)

// A chat turn sent again with the same Idempotency-Key (a client's retry,
// or a pod's retry of a relay on a new owner) is answered from the
// transcript: same turn number, same text, nothing run or saved twice;
// another key is a new turn; a malformed key is refused.
func TestIdempotencyKeyAnswersARetryFromTheTranscript(t *testing.T) {
	s := genServer(t, nil)
	send := func(key, text string) (int, string, string) {
		h := map[string]string{"X-Sous-Session": "idem"}
		if key != "" {
			h["Idempotency-Key"] = key
		}
		code, hdr, b := chatPost(t, s, h, `{"messages":[{"role":"user","content":"`+text+`"}],"max_tokens":4}`)
		var cc chatCompletion
		json.Unmarshal(b, &cc)
		content := ""
		if len(cc.Choices) == 1 {
			content = cc.Choices[0].Message.Content
		}
		return code, hdr.Get("X-Sous-Turn"), content
	}
	_, turn1, text1 := send("k-1", "hello there")
	code, again, text2 := send("k-1", "hello there")
	if code != 200 || turn1 != "1" || again != "1" || text2 != text1 {
		t.Errorf("retry under the same key: %d turn %s %q, first answer turn %s %q", code, again, text2, turn1, text1)
	}
	if _, next, _ := send("k-2", "and then?"); next != "2" {
		t.Errorf("a new key: turn %s, want 2", next)
	}
	if code, _, _ := send("bad key", "x"); code != 400 {
		t.Errorf("a key with a space: %d, want 400", code)
	}
}
