package function

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sousce "github.com/sous-ai/sous/function/api/cloudevents"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/tokenizer"
	"github.com/sous-ai/sous/function/turn"
)

func genServer(t *testing.T, store state.Store) *server {
	t.Helper()
	return genServerModel(t, store, "text-generation")
}

// genServerModel serves the test model directory name.
func genServerModel(t *testing.T, store state.Store, name string) *server {
	t.Helper()
	cfg := testConfig(t)
	cfg.Model = filepath.Join(testModels(t), name)
	var opts []Option
	if store != nil {
		opts = append(opts, WithStore(store))
	}
	return startServer(t, cfg, opts...)
}

func genTurn(t *testing.T, s *server, body string) (turn.Reply, turn.GenOutput) {
	t.Helper()
	code, _, b := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"}, body)
	if code != 200 {
		t.Fatalf("/turn %s: %d %s", body, code, b)
	}
	var r turn.Reply
	var out turn.GenOutput
	json.Unmarshal(b, &r)
	if err := json.Unmarshal(r.Output, &out); err != nil {
		t.Fatalf("output %s: %v", r.Output, err)
	}
	return r, out
}

// A decoder model directory makes each turn a generated reply; the
// conversation continues from the transcript in the store: the second
// turn's prompt is the first exchange plus the new text. Both model forms:
// Optimum's and GroupQueryAttention's.
func TestGeneratedTurnsContinueFromTheStore(t *testing.T) {
	for _, name := range []string{"text-generation", "text-generation-gqa"} {
		t.Run(name, func(t *testing.T) { testGeneratedTurnsContinueFromTheStore(t, name) })
	}
}

func testGeneratedTurnsContinueFromTheStore(t *testing.T, name string) {
	store := state.NewMemory(nil)
	s := genServerModel(t, store, name)
	r1, o1 := genTurn(t, s, `{"session":"g1","text":"hello there","max_tokens":8}`)
	if r1.Turn != 1 || o1.Text == "" || o1.CompletionTokens == 0 || o1.CompletionTokens > 8 ||
		(o1.FinishReason != "length" && o1.FinishReason != "stop") || r1.Model != name {
		t.Fatalf("turn 1: %+v %+v", r1, o1)
	}
	r2, o2 := genTurn(t, s, `{"session":"g1","text":"and then?","max_tokens":8}`)
	tok, err := tokenizer.Load(filepath.Join(testModels(t), name, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := prompt.Load(filepath.Join(testModels(t), name, "tokenizer_config.json"))
	if err != nil || tmpl == nil {
		t.Fatalf("chat template: %v", err)
	}
	rendered, err := tmpl.Render([]prompt.Message{{Role: "user", Content: "hello there"}, {Role: "assistant", Content: o1.Text},
		{Role: "user", Content: "and then?"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	want := len(tok.IDs(rendered))
	if r2.Turn != 2 || o2.PromptTokens != want {
		t.Fatalf("turn 2: turn %d, prompt %d tokens, want %d (the chat template over the first exchange and the new text)", r2.Turn, o2.PromptTokens, want)
	}
	got, err := store.GetBulk(t.Context(), []string{"g1"})
	if err != nil || len(got[0].Session.History) != 2 || !strings.Contains(string(got[0].Session.History[0].Output), o1.Text) {
		t.Fatalf("store: %+v %v", got, err)
	}
	// Greedy is deterministic: the same conversation on a fresh session
	// gives the same replies.
	_, again := genTurn(t, s, `{"session":"g2","text":"hello there","max_tokens":8}`)
	if again.Text != o1.Text {
		t.Errorf("greedy replies differ: %q vs %q", again.Text, o1.Text)
	}
	t.Logf("turn 1 %q (%s), turn 2 %q from a %d-token prompt", o1.Text, o1.FinishReason, o2.Text, o2.PromptTokens)
}

// /turn with "stream": true sends the reply as server-sent events, token
// pieces in order, then the summary; the pieces make the summary's text.
func TestStreamedTurn(t *testing.T) {
	s := genServer(t, nil)
	req, _ := http.NewRequest(http.MethodPost, s.url+"/turn", strings.NewReader(`{"session":"st","text":"hello there","max_tokens":10,"stream":true}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var pieces strings.Builder
	var done turn.Reply
	events := 0
	sc := bufio.NewScanner(resp.Body)
	name := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := strings.TrimPrefix(line, "data: ")
			switch name {
			case "token":
				var p struct{ Text string }
				json.Unmarshal([]byte(data), &p)
				pieces.WriteString(p.Text)
				events++
			case "done":
				json.Unmarshal([]byte(data), &done)
			default:
				t.Fatalf("event %q: %s", name, data)
			}
		}
	}
	var out turn.GenOutput
	json.Unmarshal(done.Output, &out)
	if events == 0 || done.Turn != 1 || out.Text != pieces.String() {
		t.Fatalf("%d token events making %q; done %+v", events, pieces.String(), out)
	}
	t.Logf("%d token events, then done: %q (%s)", events, out.Text, out.FinishReason)
}

// A CloudEvent turn generates too; generation settings are checked; a
// model that does not generate refuses them.
func TestGeneratedTurnsOverCloudEventsAndErrors(t *testing.T) {
	s := genServer(t, nil)
	code, h, b := s.post(t, "/", binaryHeaders("g-1", "ce-gen"), `{"text":"hi","max_tokens":4,"temperature":0.7,"seed":3}`)
	var r turn.Reply
	json.Unmarshal(b, &r)
	if code != 200 || h.Get("Ce-Type") != sousce.TypeReply || !strings.Contains(string(r.Output), `"completion_tokens"`) {
		t.Fatalf("CloudEvent: %d %s", code, b)
	}
	jsonCT := map[string]string{"Content-Type": "application/json"}
	for body, want := range map[string]string{
		`{"session":"e","text":"hi","max_tokens":0}`:                                       "max_tokens 0",
		`{"session":"e","text":"hi","temperature":-1}`:                                     "temperature -1",
		`{"session":"e","text":"hi","top_p":1.5}`:                                          "top_p 1.5",
		`{"session":"e","text":"hi","stop":[""]}`:                                          "stop strings",
		`{"session":"e","inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`: "generates from text",
		`{"session":"e","text":"hi","max_tokens":100000}`:                                  "max_tokens 100000",
	} {
		code, _, b := s.post(t, "/turn", jsonCT, body)
		if code != 400 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %s, want 400 %q", body, code, b, want)
		}
	}
	plain := startServer(t, testConfig(t))
	code, _, b = plain.post(t, "/turn", jsonCT, `{"session":"e","text":"hi","max_tokens":4}`)
	if code != 400 || !strings.Contains(string(b), "does not generate") {
		t.Errorf("demo model with max_tokens: %d %s", code, b)
	}
}

// SIGTERM while a reply is being generated: the generation finishes within
// the drain and its caller gets the whole reply; new turns get 503.
func TestSIGTERMFinishesGenerations(t *testing.T) {
	cfg := testConfig(t)
	cfg.Model = filepath.Join(testModels(t), "text-generation")
	s, stop, done := serve(t, cfg)
	req, _ := http.NewRequest(http.MethodPost, s.url+"/turn", strings.NewReader(`{"session":"term","text":"hello there","max_tokens":200,"stream":true}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var doneData string
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		if line == "event: token" && !signalled {
			signalled = true
			stop() // SIGTERM after the first token
			for s.f.ready.Load() {
				time.Sleep(time.Millisecond)
			}
			code, h, _ := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"}, `{"session":"late","text":"hi"}`)
			if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
				t.Errorf("a turn after SIGTERM: %d", code)
			}
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"turn"`) {
			doneData = strings.TrimPrefix(line, "data: ")
		}
	}
	var r turn.Reply
	var out turn.GenOutput
	json.Unmarshal([]byte(doneData), &r)
	json.Unmarshal(r.Output, &out)
	if !signalled || out.FinishReason == "" || (out.FinishReason == "length" && out.CompletionTokens != 200) {
		t.Fatalf("after SIGTERM the stream ended with %q", doneData)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGTERM after the first token: the reply finished (%s, %d tokens)", out.FinishReason, out.CompletionTokens)
}

// A generated turn's trace has its prefill span under the turn and decode
// step spans linked to it.
func TestGenerationSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	cfg := testConfig(t)
	cfg.Model = filepath.Join(testModels(t), "text-generation")
	s := startServer(t, cfg, WithTracerProvider(tp))
	genTurn(t, s, `{"session":"sp","text":"hello there","max_tokens":4}`)
	var turn, prefill sdktrace.ReadOnlySpan
	steps := 0
	for _, sp := range exp.GetSpans().Snapshots() {
		switch sp.Name() {
		case "sous.turn":
			turn = sp
		case "sous.generate.prefill":
			prefill = sp
		case "sous.generate.decode_step":
			steps++
			if len(sp.Links()) != 1 {
				t.Errorf("decode step with %d links", len(sp.Links()))
			}
		}
	}
	if turn == nil || prefill == nil || prefill.Parent().SpanID() != turn.SpanContext().SpanID() || steps != 3 {
		t.Fatalf("turn %v, prefill %v (parent %v), %d decode steps (want 3: 4 tokens, the first from the prefill)", turn != nil, prefill != nil, prefill, steps)
	}
}

// A stop string ends the reply before it, with finish_reason stop, and the
// streamed text stops there too.
func TestStopString(t *testing.T) {
	s := genServer(t, nil)
	_, full := genTurn(t, s, `{"session":"stop-a","text":"hello there","max_tokens":10}`)
	words := strings.Fields(full.Text)
	if len(words) < 4 {
		t.Fatalf("reply too short to cut: %q", full.Text)
	}
	stop := " " + words[2]
	want := full.Text[:strings.Index(full.Text, stop)]
	body, _ := json.Marshal(map[string]any{"session": "stop-b", "text": "hello there", "max_tokens": 10, "stop": []string{"never", stop}})
	_, cut := genTurn(t, s, string(body))
	if cut.Text != want || cut.FinishReason != "stop" {
		t.Fatalf("stop %q: %q (%s), want %q (stop)", stop, cut.Text, cut.FinishReason, want)
	}
}

// A conversation longer than the model's window loses its oldest
// exchanges in blocks, so that its prompts keep their start for several
// turns and the prefix cache serves most of them; no prompt outgrows the
// window.
func TestLongConversationKeepsItsPrefix(t *testing.T) {
	s := genServer(t, nil)
	window := 256 - 8 // the test decoder's positions, less max_tokens
	served, cut := 0, 0
	last := 0
	for turn := 1; turn <= 24; turn++ {
		_, o := genTurn(t, s, fmt.Sprintf(`{"session":"long","text":"and what about item %d?","max_tokens":8}`, turn))
		if o.PromptTokens > window {
			t.Fatalf("turn %d: a %d-token prompt in a %d-token window", turn, o.PromptTokens, window)
		}
		if o.PromptTokens < last {
			cut++
		}
		last = o.PromptTokens
		if turn > 1 && o.CachedTokens > o.PromptTokens/2 {
			served++
		}
	}
	if cut < 3 {
		t.Fatalf("the transcript was cut %d times: the window was not reached", cut)
	}
	if served < 23*3/4-1 {
		t.Errorf("the prefix cache served %d of 23 turns; cut in blocks of %d exchanges it should serve about 3 in 4", served, prompt.DropBlock)
	}
	t.Logf("24 turns: cut %d times, %d of 23 served mostly from the cache", cut, served)
}
