package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sous-ai/sous/internal/daprtest"
)

// chatTurn posts one message of session's chat and returns the reply and
// the prompt tokens that came from the pod's prefix cache.
func chatTurn(t *testing.T, base, session, text string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(fmt.Sprintf(`{"messages":[{"role":"user","content":%q}],"max_tokens":8}`, text)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sous-Session", session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokensDetails struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &r) != nil || len(r.Choices) != 1 {
		t.Fatalf("%s: %d %s", text, resp.StatusCode, b)
	}
	return r.Choices[0].Message.Content, r.Usage.PromptTokensDetails.CachedTokens
}

// A chat continues on another pod through the Dapr state store, and each
// pod's prefix cache serves only the turns that follow its own: pod A's
// second turn starts from its first turn's KV; B, which never saw the
// session, prefills it whole; A, back again, finds its entry stale (B
// wrote the transcript since) and prefills whole, then caches again. Every
// reply equals the reply of a pod with no cache at all (greedy).
func TestDaprChatPrefixCacheAcrossPods(t *testing.T) {
	modelEnv := "SOUS_MODEL=" + testDecoder(t)
	ref := startSous(t, 0, modelEnv, "SOUS_STATE=memory", "SOUS_PREFIX_CACHE_BYTES=0")
	redis := daprtest.StartRedis(t)
	a := startPod(t, redis, "", modelEnv)
	b := startPod(t, redis, "", modelEnv)

	steps := []struct {
		pod    *pod
		name   string
		text   string
		cached bool
	}{
		{a, "A", "hello, my order has not arrived", false},
		{a, "A", "it was order 1234", true},
		{b, "B", "can you check again?", false},
		{a, "A", "thanks, and the refund?", false},
		{a, "A", "great, bye", true},
	}
	for i, s := range steps {
		want, _ := chatTurn(t, ref.url, "ref", s.text)
		got, cached := chatTurn(t, s.pod.sous.url, "chat", s.text)
		if got != want {
			t.Errorf("turn %d on %s: %q, a pod without a cache says %q", i+1, s.name, got, want)
		}
		if (cached > 0) != s.cached {
			t.Errorf("turn %d on %s: %d prompt tokens from the cache, want cached=%v", i+1, s.name, cached, s.cached)
		}
		t.Logf("turn %d on %s: %d cached prompt tokens, reply %q", i+1, s.name, cached, got)
	}
	st, _ := stored(t, a.daprd, "chat")
	if st.Turn != len(steps) {
		t.Errorf("stored transcript at turn %d, want %d", st.Turn, len(steps))
	}
}
