package function

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/tokenizer"
)

func embeddingsPost(t *testing.T, s *server, body string) (int, []byte) {
	t.Helper()
	code, _, b := s.post(t, "/v1/embeddings", map[string]string{"Content-Type": "application/json"}, body)
	return code, b
}

type embeddingsReply struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// POST /v1/embeddings answers a list of texts in OpenAI's shape: each
// text's vector is the one a /turn of that text gives (in float and in
// base64, little-endian float32, as the OpenAI SDKs decode it), usage
// counts the texts' tokens, and the list's texts are items of the ring:
// queued together, they run as one batch.
func TestEmbeddingsEndpoint(t *testing.T) {
	texts := []string{"hello there", "John Smith loves Paris", strings.Repeat("a longer sentence ", 5), "great!"}
	b := &blockingExec{entered: make(chan int, 16), release: make(chan struct{})}
	cfg := testConfig(t)
	cfg.Model = filepath.Join(testModels(t), "feature-extraction")
	cfg.BatchOrder = "arrival" // one batch of every length
	s := startServer(t, cfg, WithExecutorWrapper(b.wrap))

	want := make([][]float32, len(texts))
	for i, text := range texts {
		go func() { <-b.entered; b.release <- struct{}{} }()
		var out struct {
			Embedding []float32 `json:"embedding"`
		}
		turnJSON(t, s, "fe", text, &out)
		want[i] = out.Embedding
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); turnJSON(t, s, "first", "hold", nil) }()
	if n := <-b.entered; n != 1 {
		t.Fatalf("holding batch of %d", n)
	}
	body, _ := json.Marshal(map[string]any{"model": "feature-extraction", "input": texts, "encoding_format": "float"})
	var code int
	var got []byte
	wg.Add(1)
	go func() { defer wg.Done(); code, got = embeddingsPost(t, s, string(body)) }()
	for deadline := time.Now().Add(10 * time.Second); s.f.turns.Queued() < len(texts); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the list's %d texts queued together", s.f.turns.Queued(), len(texts))
		}
	}
	sizes := make(chan int, 1)
	go func() { sizes <- <-b.entered; b.release <- struct{}{} }()
	b.release <- struct{}{} // the held batch
	wg.Wait()
	if n := <-sizes; n != len(texts) {
		t.Errorf("the list ran in a batch of %d, want %d", n, len(texts))
	}
	close(b.release)

	tokJSON, err := os.ReadFile("tokenizer/testdata/tokenizers/all-minilm-l6-v2.json")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Parse(tokJSON)
	if err != nil {
		t.Fatal(err)
	}
	tokens := 0
	for _, text := range texts {
		tokens += tok.Encode(text).Len()
	}
	check := func(code int, got []byte, decode func(json.RawMessage) []float32) {
		t.Helper()
		var r embeddingsReply
		if err := json.Unmarshal(got, &r); err != nil || code != 200 || r.Object != "list" || r.Model != "feature-extraction" || len(r.Data) != len(texts) {
			t.Fatalf("%d %s", code, got)
		}
		if r.Usage.PromptTokens != tokens || r.Usage.TotalTokens != tokens {
			t.Errorf("usage %+v, want %d tokens", r.Usage, tokens)
		}
		for i, d := range r.Data {
			v := decode(d.Embedding)
			if d.Object != "embedding" || d.Index != i || len(v) != len(want[i]) {
				t.Fatalf("data[%d]: %s %d, %d values, want %d", i, d.Object, d.Index, len(v), len(want[i]))
			}
			for j := range v {
				if math.Abs(float64(v[j]-want[i][j])) > 1e-5 {
					t.Fatalf("data[%d][%d] %g, /turn gave %g", i, j, v[j], want[i][j])
				}
			}
		}
	}
	check(code, got, func(raw json.RawMessage) []float32 {
		var v []float32
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("float embedding %s: %v", raw, err)
		}
		return v
	})
	body, _ = json.Marshal(map[string]any{"input": texts, "encoding_format": "base64", "dimensions": len(want[0])})
	code, got = embeddingsPost(t, s, string(body))
	check(code, got, func(raw json.RawMessage) []float32 {
		var s string
		json.Unmarshal(raw, &s)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b)%4 != 0 {
			t.Fatalf("base64 embedding %s: %v", raw, err)
		}
		v := make([]float32, len(b)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return v
	})
}

// What /v1/embeddings cannot honour is refused by name, in OpenAI's error
// shape; a model that does not embed answers 404.
func TestEmbeddingsRefused(t *testing.T) {
	s := hfServer(t, "feature-extraction", nil)
	long := strings.Repeat("word ", 600)
	for _, tc := range []struct {
		name, body string
		code       int
		msg, ecode string
	}{
		{"token ids", `{"input":[101,7592,102]}`, 400, "token id arrays are not supported", ""},
		{"token id lists", `{"input":[[101,7592,102]]}`, 400, "token id arrays are not supported", ""},
		{"dimensions", `{"input":"hi","dimensions":8}`, 400, "dimensions 8: model feature-extraction embeds in 32", ""},
		{"format", `{"input":"hi","encoding_format":"int8"}`, 400, `encoding_format "int8"`, ""},
		{"unknown field", `{"input":"hi","truncate":"END"}`, 400, "truncate: not supported", ""},
		{"no input", `{"model":"x"}`, 400, "input: required", ""},
		{"empty list", `{"input":[]}`, 400, "input: 0 texts", ""},
		{"empty text", `{"input":["a",""]}`, 400, "input[1]: empty text", ""},
		{"too long", `{"input":["a","` + long + `"]}`, 400, "input[1] is 602 tokens, model feature-extraction holds 256", "context_length_exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := embeddingsPost(t, s, tc.body)
			checkInvalidRequest(t, code, b, tc.code, tc.msg, tc.ecode)
		})
	}
	for _, task := range []string{"text-classification", "text-generation"} {
		other := hfServer(t, task, nil)
		code, b := embeddingsPost(t, other, `{"input":"hi"}`)
		if code != 404 || !strings.Contains(string(b), "does not embed text") || !strings.Contains(string(b), `"type":"invalid_request_error"`) {
			t.Errorf("%s: %d %s, want 404 naming it", task, code, b)
		}
	}
}

// checkInvalidRequest checks an OpenAI error answer: the status, an
// invalid_request_error whose message holds msg, and its code (ecode, ""
// for null).
func checkInvalidRequest(t *testing.T, code int, b []byte, wantCode int, msg, ecode string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(b, &e)
	got := ""
	if e.Error.Code != nil {
		got = *e.Error.Code
	}
	if code != wantCode || !strings.Contains(e.Error.Message, msg) || e.Error.Type != "invalid_request_error" || got != ecode {
		t.Errorf("got %d %s, want %d saying %q (code %q)", code, b, wantCode, msg, ecode)
	}
}
