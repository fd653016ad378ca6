package function

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sousce "github.com/sous-ai/sous/function/api/cloudevents"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/sous-ai/sous/function/config"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/turn"
)

type server struct {
	f   *Function
	url string
}

func testConfig(t testing.TB) Config {
	t.Helper()
	cfg, err := config.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Library = model.FindLibrary()
	if _, err := os.Stat(cfg.Library); err != nil {
		t.Fatalf("ONNX Runtime library %s: %v (run `make test`, which fetches it)", cfg.Library, err)
	}
	cfg.Device = "cpu"
	cfg.DrainTimeout = 5 * time.Second
	return cfg
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(io.Discard, nil))
}

// startServer serves a Function on a real loopback listener until the test
// ends.
func startServer(t testing.TB, cfg Config, opts ...Option) *server {
	t.Helper()
	s, stop, done := serve(t, cfg, opts...)
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// serve starts a Function serving on a loopback listener and returns once
// it is ready; stop is its SIGTERM, done gives Serve's result.
func serve(t testing.TB, cfg Config, opts ...Option) (s *server, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	opts = append([]Option{WithLogger(quietLogger())}, opts...)
	f, err := New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Serve(ctx, ln) }()
	for !f.ready.Load() {
		time.Sleep(time.Millisecond)
	}
	return &server{f: f, url: "http://" + ln.Addr().String()}, cancel, errc
}

// post sends a raw request and returns the status, headers and body.
func (s *server) post(t testing.TB, path string, header map[string]string, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func (s *server) get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(s.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type intentOutput struct {
	Intent string             `json:"intent"`
	Scores map[string]float64 `json:"scores"`
}

func decodeReply(t testing.TB, data []byte) (turn.Reply, intentOutput) {
	t.Helper()
	var r turn.Reply
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("reply %s: %v", data, err)
	}
	var out intentOutput
	if err := json.Unmarshal(r.Output, &out); err != nil {
		t.Fatalf("reply output %s: %v", r.Output, err)
	}
	return r, out
}

func binaryHeaders(id, session string) map[string]string {
	return map[string]string{
		"ce-specversion": "1.0", "ce-id": id, "ce-source": "/test", "ce-type": sousce.TypeTurn,
		"ce-subject": session, "Content-Type": "application/json",
	}
}

// Raw HTTP requests written from the CloudEvents HTTP binding spec, one per
// mode, each answered in kind.
func TestCloudEventModesRawHTTP(t *testing.T) {
	s := startServer(t, testConfig(t))

	// Binary mode: attributes in ce-* headers, data in the body.
	code, h, body := s.post(t, "/", binaryHeaders("e1", "s1"), `{"text":"hello there"}`)
	if code != http.StatusOK {
		t.Fatalf("binary: %d %s", code, body)
	}
	if got := h.Get("ce-type"); got != sousce.TypeReply {
		t.Errorf("binary reply ce-type %q, want %s", got, sousce.TypeReply)
	}
	if got := h.Get("ce-subject"); got != "s1" {
		t.Errorf("binary reply ce-subject %q, want s1", got)
	}
	r, out := decodeReply(t, body)
	if r.Turn != 1 || out.Intent != "greeting" || r.Model != "intent" || r.Session != "s1" || r.BatchSize < 1 {
		t.Errorf("binary reply %+v %+v, want turn 1 greeting from intent", r, out)
	}

	// Structured mode: the whole event as JSON.
	code, h, body = s.post(t, "/", map[string]string{"Content-Type": "application/cloudevents+json"},
		`{"specversion":"1.0","id":"e2","source":"/test","type":"ai.sous.turn","subject":"s1","datacontenttype":"application/json","data":{"text":"thanks a lot"}}`)
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/cloudevents+json") {
		t.Fatalf("structured: %d %s %s", code, h.Get("Content-Type"), body)
	}
	var ev struct {
		Type    string          `json:"type"`
		Subject string          `json:"subject"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatal(err)
	}
	r, out = decodeReply(t, ev.Data)
	if ev.Type != sousce.TypeReply || ev.Subject != "s1" || r.Turn != 2 || out.Intent != "thanks" {
		t.Errorf("structured reply %s", body)
	}

	// Batched mode: a JSON array of structured events, answered with one.
	code, h, body = s.post(t, "/", map[string]string{"Content-Type": "application/cloudevents-batch+json"},
		`[{"specversion":"1.0","id":"e3","source":"/test","type":"ai.sous.turn","subject":"s1","data":{"text":"where is my order?"}},
		  {"specversion":"1.0","id":"e4","source":"/test","type":"ai.sous.turn","data":{"session":"s2","text":"bye"}},
		  {"specversion":"1.0","id":"e5","source":"/test","type":"ai.sous.turn","subject":"s1","data":{"text":"see you later"}}]`)
	if code != http.StatusOK || h.Get("Content-Type") != "application/cloudevents-batch+json" {
		t.Fatalf("batch: %d %s %s", code, h.Get("Content-Type"), body)
	}
	var batch []struct {
		ID   string          `json:"id"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &batch); err != nil || len(batch) != 3 {
		t.Fatalf("batch reply %s: %v", body, err)
	}
	want := []struct {
		session, intent string
		turn            int
	}{{"s1", "question", 3}, {"s2", "goodbye", 1}, {"s1", "goodbye", 4}}
	for i, w := range want {
		r, out := decodeReply(t, batch[i].Data)
		if r.Session != w.session || r.Turn != w.turn || out.Intent != w.intent {
			t.Errorf("batch reply %d: %+v %s, want %+v", i, r, out.Intent, w)
		}
	}
}

// The CloudEvents SDK client, in binary and structured mode.
func TestCloudEventsSDKClient(t *testing.T) {
	s := startServer(t, testConfig(t))
	c, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	for i, structured := range []bool{false, true} {
		ev := cloudevents.NewEvent()
		ev.SetID(fmt.Sprintf("sdk-%d", i))
		ev.SetSource("/sdk")
		ev.SetType(sousce.TypeTurn)
		ev.SetSubject("sdk-session")
		if err := ev.SetData(cloudevents.ApplicationJSON, map[string]string{"text": "hello there"}); err != nil {
			t.Fatal(err)
		}
		ctx := cloudevents.ContextWithTarget(context.Background(), s.url+"/")
		if structured {
			ctx = binding.WithForceStructured(ctx)
		}
		reply, result := c.Request(ctx, ev)
		if !cloudevents.IsACK(result) {
			t.Fatalf("structured=%v: %v", structured, result)
		}
		if reply == nil || reply.Type() != sousce.TypeReply {
			t.Fatalf("structured=%v: reply %v", structured, reply)
		}
		r, out := decodeReply(t, reply.Data())
		if r.Turn != i+1 || out.Intent != "greeting" {
			t.Errorf("structured=%v: reply %+v %+v", structured, r, out)
		}
	}
}

func TestTurnRouteAndRedelivery(t *testing.T) {
	s := startServer(t, testConfig(t))
	json := map[string]string{"Content-Type": "application/json"}
	for i, text := range []string{"hello there", "how do I reset my password?"} {
		code, _, body := s.post(t, "/turn", json, fmt.Sprintf(`{"session":"u1","text":%q}`, text))
		r, _ := decodeReply(t, body)
		if code != http.StatusOK || r.Turn != i+1 {
			t.Fatalf("turn %d: %d %s", i+1, code, body)
		}
	}
	// A redelivered CloudEvent is answered from the transcript, not run.
	_, _, first := s.post(t, "/", binaryHeaders("dup", "u2"), `{"text":"hello"}`)
	_, _, again := s.post(t, "/", binaryHeaders("dup", "u2"), `{"text":"hello"}`)
	r1, _ := decodeReply(t, first)
	r2, _ := decodeReply(t, again)
	if r1.Turn != 1 || r2.Turn != 1 {
		t.Errorf("redelivery took turns %d and %d, want 1 and 1", r1.Turn, r2.Turn)
	}
	_, _, next := s.post(t, "/", binaryHeaders("other", "u2"), `{"text":"thanks"}`)
	if r, _ := decodeReply(t, next); r.Turn != 2 {
		t.Errorf("next event took turn %d, want 2", r.Turn)
	}
}

func TestOpenInferenceProtocol(t *testing.T) {
	s := startServer(t, testConfig(t))
	for _, path := range []string{"/v2/health/live", "/v2/health/ready", "/v2/models/intent/ready", "/health/liveness", "/health/readiness"} {
		if code, body := s.get(t, path); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	code, body := s.get(t, "/v2")
	if code != http.StatusOK || !strings.Contains(string(body), `"extensions":[]`) {
		t.Errorf("GET /v2: %d %s", code, body)
	}
	code, body = s.get(t, "/v2/models/intent")
	if code != http.StatusOK || !strings.Contains(string(body), `{"name":"tokens","datatype":"INT64","shape":[-1,-1]}`) {
		t.Errorf("GET /v2/models/intent: %d %s", code, body)
	}
	if code, _ := s.get(t, "/v2/models/nope"); code != http.StatusNotFound {
		t.Errorf("unknown model: %d, want 404", code)
	}

	// Nested and flat data, two rows, one output asked for.
	req := `{"id":"r1","inputs":[
		{"name":"tokens","shape":[2,3],"datatype":"INT64","data":[[5,6,7],[8,9,0]]},
		{"name":"state_in","shape":[2,7],"datatype":"FP32","data":[0,0,0,0,0,0,0, 0,0,0,0,0,0,0]}],
		"outputs":[{"name":"probs"}]}`
	code, _, body = s.post(t, "/v2/models/intent/infer", map[string]string{"Content-Type": "application/json"}, req)
	if code != http.StatusOK {
		t.Fatalf("infer: %d %s", code, body)
	}
	var resp struct {
		ModelName string           `json:"model_name"`
		ID        string           `json:"id"`
		Outputs   []turn.TensorOut `json:"outputs"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.ModelName != "intent" || resp.ID != "r1" || len(resp.Outputs) != 1 || resp.Outputs[0].Name != "probs" ||
		fmt.Sprint(resp.Outputs[0].Shape) != "[2 6]" || resp.Outputs[0].Datatype != "FP32" {
		t.Errorf("infer response %s", body)
	}
	if data, ok := resp.Outputs[0].Data.([]any); !ok || len(data) != 12 {
		t.Errorf("infer data %v, want 12 numbers", resp.Outputs[0].Data)
	}
}

// Every error status sous answers, each with a message.
func TestErrorStatuses(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBody = 4096
	s := startServer(t, cfg)
	jsonCT := map[string]string{"Content-Type": "application/json"}
	structured := map[string]string{"Content-Type": "application/cloudevents+json"}
	withType := func(h map[string]string, k, v string) map[string]string {
		out := map[string]string{}
		for a, b := range h {
			out[a] = b
		}
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
		return out
	}
	infer := "/v2/models/intent/infer"
	tensorReq := func(tokens string) string {
		return `{"inputs":[` + tokens + `,{"name":"state_in","shape":[1,7],"datatype":"FP32","data":[0,0,0,0,0,0,0]}]}`
	}
	for _, tc := range []struct {
		name   string
		path   string
		header map[string]string
		body   string
		code   int
		msg    string
	}{
		{"not a CloudEvent", "/", map[string]string{"Content-Type": "text/plain"}, "hi", 415, "not a CloudEvent"},
		{"missing id", "/", withType(binaryHeaders("x", "s"), "ce-id", ""), `{"text":"hi"}`, 400, "id"},
		{"missing source", "/", withType(binaryHeaders("x", "s"), "ce-source", ""), `{"text":"hi"}`, 400, "source"},
		{"missing type", "/", withType(binaryHeaders("x", "s"), "ce-type", ""), `{"text":"hi"}`, 400, "type"},
		{"wrong specversion", "/", withType(binaryHeaders("x", "s"), "ce-specversion", "0.1"), `{"text":"hi"}`, 400, "specversion"},
		{"wrong type", "/", withType(binaryHeaders("x", "s"), "ce-type", "com.example.other"), `{"text":"hi"}`, 400, "want ai.sous.turn"},
		{"bad structured JSON", "/", structured, `{"specversion":"1.0",`, 400, "not a valid CloudEvent"},
		{"bad data JSON", "/", binaryHeaders("x", "s"), `{"text":`, 400, "invalid JSON"},
		{"invalid UTF-8 data", "/", binaryHeaders("x", "s"), "{\"text\":\"hi \xff\"}", 400, "UTF-8"},
		{"invalid UTF-8 structured", "/", structured, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/x\",\"type\":\"ai.sous.turn\",\"subject\":\"s\",\"data\":{\"text\":\"\xfe\"}}", 400, "UTF-8"},
		{"data not JSON", "/", withType(binaryHeaders("x", "s"), "Content-Type", "text/plain"), "hi", 415, "want application/json"},
		{"no session", "/", withType(binaryHeaders("x", "s"), "ce-subject", ""), `{"text":"hi"}`, 400, "no session"},
		{"bad session id", "/", binaryHeaders("x", "a||b"), `{"text":"hi"}`, 400, "session id"},
		{"long session id", "/turn", jsonCT, `{"session":"` + strings.Repeat("a", 129) + `","text":"hi"}`, 400, "session id"},
		{"control character in session", "/turn", jsonCT, `{"session":"a\u0001b","text":"hi"}`, 400, "session id"},
		{"empty text", "/turn", jsonCT, `{"session":"s","text":"  "}`, 400, "text is empty"},
		{"no text", "/turn", jsonCT, `{"session":"s"}`, 400, "no text and no inputs"},
		{"turn not JSON", "/turn", map[string]string{"Content-Type": "text/plain"}, `x`, 415, "application/json"},
		{"two JSON values", "/turn", jsonCT, `{"session":"s","text":"a"}{}`, 400, "more than one value"},
		{"body over limit", "/turn", jsonCT, `{"session":"s","text":"` + strings.Repeat("a", 5000) + `"}`, 413, "limit"},
		{"tensor wrong name", infer, jsonCT, tensorReq(`{"name":"words","shape":[1,1],"datatype":"INT64","data":[1]}`), 400, `no input "words"`},
		{"tensor wrong dtype", infer, jsonCT, tensorReq(`{"name":"tokens","shape":[1,1],"datatype":"FP32","data":[1]}`), 400, "datatype FP32, model takes INT64"},
		{"tensor unserved dtype", infer, jsonCT, tensorReq(`{"name":"tokens","shape":[1,1],"datatype":"BYTES","data":[1]}`), 400, "not served"},
		{"tensor wrong rank", infer, jsonCT, tensorReq(`{"name":"tokens","shape":[1],"datatype":"INT64","data":[1]}`), 400, "rank"},
		{"tensor count mismatch", infer, jsonCT, tensorReq(`{"name":"tokens","shape":[1,3],"datatype":"INT64","data":[1,2]}`), 400, "holds 3 elements, data has 2"},
		{"tensor overflowing shape", infer, jsonCT, tensorReq(`{"name":"tokens","shape":[4294967296,4294967296],"datatype":"INT64","data":[1]}`), 400, "exceeds the limit"},
		{"tensor not integer", infer, jsonCT, tensorReq(`{"name":"tokens","shape":[1,1],"datatype":"INT64","data":[1.5]}`), 400, "not an INT64"},
		{"tensor out of FP32 range", infer, jsonCT, `{"inputs":[{"name":"tokens","shape":[1,1],"datatype":"INT64","data":[1]},{"name":"state_in","shape":[1,7],"datatype":"FP32","data":[1e39,0,0,0,0,0,0]}]}`, 400, "not a finite FP32"},
		{"tensor NaN", infer, jsonCT, `{"inputs":[{"name":"tokens","shape":[1,1],"datatype":"INT64","data":[1]},{"name":"state_in","shape":[1,7],"datatype":"FP32","data":[NaN,0,0,0,0,0,0]}]}`, 400, "invalid JSON"},
		{"tensor strings", infer, jsonCT, tensorReq(`{"name":"tokens","shape":[1,1],"datatype":"INT64","data":["1"]}`), 400, "numbers only"},
		{"tensor deep nesting", infer, jsonCT, tensorReq(`{"name":"tokens","shape":[1,1],"datatype":"INT64","data":` + strings.Repeat("[", 40) + "1" + strings.Repeat("]", 40) + `}`), 400, "nests deeper"},
		{"state sent to a turn", "/turn", jsonCT, `{"session":"s","inputs":[{"name":"tokens","shape":[1,1],"datatype":"INT64","data":[1]},{"name":"state_in","shape":[1,7],"datatype":"FP32","data":[0,0,0,0,0,0,0]}]}`, 400, "carried by the session"},
		{"unknown model", "/v2/models/other/infer", jsonCT, tensorReq(`{"name":"tokens","shape":[1,1],"datatype":"INT64","data":[1]}`), 404, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := s.post(t, tc.path, tc.header, tc.body)
			var e struct{ Error string }
			json.Unmarshal(body, &e)
			if code != tc.code || !strings.Contains(e.Error, tc.msg) {
				t.Errorf("got %d %s, want %d with an error saying %q", code, body, tc.code, tc.msg)
			}
		})
	}
}

// blockingExec holds every batch until released, so that tests can fill the
// queue or catch turns in flight.
type blockingExec struct {
	entered chan int
	release chan struct{}
}

func (b *blockingExec) wrap(next Executor) Executor {
	return func(ctx context.Context, in []*turn.Job, out []turn.Outcome) error {
		b.entered <- len(in)
		<-b.release
		return next(ctx, in, out)
	}
}

// wantQueueFull posts a turn and expects 503 queue full with Retry-After.
func wantQueueFull(t *testing.T, s *server, what, turn string) {
	t.Helper()
	code, h, body := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"}, turn)
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(string(body), "queue full") {
		t.Errorf("%s: %d Retry-After=%q %s, want 503 queue full", what, code, h.Get("Retry-After"), body)
	}
}

func TestQueueFullIs503WithRetryAfter(t *testing.T) {
	cfg := testConfig(t)
	cfg.Queue, cfg.MaxBatch = 2, 1
	b := &blockingExec{entered: make(chan int, 16), release: make(chan struct{})}
	s := startServer(t, cfg, WithExecutorWrapper(b.wrap))
	jsonCT := map[string]string{"Content-Type": "application/json"}

	var wg sync.WaitGroup
	codes := make(chan int, 3)
	for i := range 3 { // one running, two queued
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, _ := s.post(t, "/turn", jsonCT, fmt.Sprintf(`{"session":"q%d","text":"hi"}`, i))
			codes <- code
		}()
		if i == 0 {
			<-b.entered
		}
	}
	for s.f.turns.Queued() < 2 {
		time.Sleep(time.Millisecond)
	}
	wantQueueFull(t, s, "full queue", `{"session":"q9","text":"hi"}`)
	close(b.release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != http.StatusOK {
			t.Errorf("accepted turn got %d", c)
		}
	}
}

// Turns waiting behind an earlier turn of their session hold queue places
// too: one hot session cannot grow an unbounded line in front of the ring.
func TestHotSessionLineIsBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.Queue, cfg.MaxBatch = 2, 1 // room for 2 waiting + 1 running turn
	b := &blockingExec{entered: make(chan int, 16), release: make(chan struct{})}
	s := startServer(t, cfg, WithExecutorWrapper(b.wrap))
	jsonCT := map[string]string{"Content-Type": "application/json"}

	var wg sync.WaitGroup
	replies := make(chan []byte, 3)
	for i := range 3 { // one running, two waiting for the session
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, body := s.post(t, "/turn", jsonCT, `{"session":"hot","text":"hi"}`)
			if code != http.StatusOK {
				t.Errorf("accepted turn: %d %s", code, body)
			}
			replies <- body
		}()
		if i == 0 {
			<-b.entered
		}
	}
	for s.f.turns.InProgress() < 3 {
		time.Sleep(time.Millisecond)
	}
	if n := s.f.turns.Queued(); n != 0 {
		t.Fatalf("ring holds %d turns; the waiting ones should be in the session's line", n)
	}
	wantQueueFull(t, s, "fourth turn of a full line", `{"session":"hot","text":"hi"}`)
	close(b.release)
	wg.Wait()
	close(replies)
	seen := map[int]bool{}
	for body := range replies {
		r, _ := decodeReply(t, body)
		seen[r.Turn] = true
	}
	if !seen[1] || !seen[2] || !seen[3] {
		t.Errorf("accepted turns numbered %v, want 1, 2 and 3", seen)
	}
	if n := s.f.turns.InProgress(); n != 0 {
		t.Errorf("%d turns still counted after every answer", n)
	}
}

func TestPanickingExecutorFailsOnlyItsBatch(t *testing.T) {
	var mu sync.Mutex
	panicNext := true
	wrap := func(next Executor) Executor {
		return func(ctx context.Context, in []*turn.Job, out []turn.Outcome) error {
			mu.Lock()
			p := panicNext
			panicNext = false
			mu.Unlock()
			if p {
				panic("injected")
			}
			return next(ctx, in, out)
		}
	}
	s := startServer(t, testConfig(t), WithExecutorWrapper(wrap))
	jsonCT := map[string]string{"Content-Type": "application/json"}
	code, _, body := s.post(t, "/turn", jsonCT, `{"session":"p","text":"hi"}`)
	if code != http.StatusInternalServerError || !strings.Contains(string(body), "error") {
		t.Fatalf("panicking batch: %d %s, want 500", code, body)
	}
	code, _, body = s.post(t, "/turn", jsonCT, `{"session":"p","text":"hi"}`)
	r, _ := decodeReply(t, body)
	if code != http.StatusOK || r.Turn != 1 {
		t.Fatalf("after the panic: %d %s, want 200 turn 1 (the failed turn was not stored)", code, body)
	}
}

// Concurrent turns of one session get distinct, gapless numbers, and never
// share a batch; other sessions batch with them.
func TestSessionOrderUnderConcurrency(t *testing.T) {
	var mu sync.Mutex
	shared := 0
	sizes := map[int]int{}
	wrap := func(next Executor) Executor {
		return func(ctx context.Context, in []*turn.Job, out []turn.Outcome) error {
			seen := map[string]bool{}
			mu.Lock()
			sizes[len(in)]++
			for _, j := range in {
				if j.Req.Session != "" && seen[j.Req.Session] {
					shared++
				}
				seen[j.Req.Session] = true
			}
			mu.Unlock()
			return next(ctx, in, out)
		}
	}
	s := startServer(t, testConfig(t), WithExecutorWrapper(wrap))
	const sessions, each = 4, 25
	turns := make([][]int, sessions)
	var wg sync.WaitGroup
	var tmu sync.Mutex
	for sid := range sessions {
		for range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _, body := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"},
					fmt.Sprintf(`{"session":"c%d","text":"hello there"}`, sid))
				if code != http.StatusOK {
					t.Errorf("turn: %d %s", code, body)
					return
				}
				r, _ := decodeReply(t, body)
				tmu.Lock()
				turns[sid] = append(turns[sid], r.Turn)
				tmu.Unlock()
			}()
		}
	}
	wg.Wait()
	for sid, got := range turns {
		seen := map[int]bool{}
		for _, n := range got {
			if n < 1 || n > each || seen[n] {
				t.Errorf("session c%d: turn numbers %v are not 1..%d once each", sid, got, each)
				break
			}
			seen[n] = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if shared != 0 {
		t.Errorf("%d times two turns of one session shared a batch", shared)
	}
	t.Logf("batch sizes: %v", sizes)
}

func TestRawBinaryReplyIsParseableBySDK(t *testing.T) {
	s := startServer(t, testConfig(t))
	req, _ := http.NewRequest(http.MethodPost, s.url+"/", bytes.NewBufferString(`{"text":"hello there"}`))
	for k, v := range binaryHeaders("p1", "sdk") {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ev, err := cehttp.NewEventFromHTTPResponse(resp)
	if err != nil {
		t.Fatalf("reply is not a CloudEvent: %v", err)
	}
	if err := ev.Validate(); err != nil || ev.Type() != sousce.TypeReply || ev.ID() != "p1/reply" {
		t.Errorf("reply event %v: %v", ev, err)
	}
}

// An executor that fails every 3rd batch under concurrent load: those
// turns get 500 and are not stored; every other turn gets 200 with the
// session's next number, so numbers stay gapless and nothing that got a 200
// is lost.
func TestEveryNthBatchFailing(t *testing.T) {
	var batches atomic.Int64
	boom := fmt.Errorf("%w: injected", model.ErrRun)
	wrap := func(next Executor) Executor {
		return func(ctx context.Context, in []*turn.Job, out []turn.Outcome) error {
			if batches.Add(1)%3 == 0 {
				return boom
			}
			return next(ctx, in, out)
		}
	}
	s := startServer(t, testConfig(t), WithExecutorWrapper(wrap))
	const sessions, each = 8, 20
	var mu sync.Mutex
	turns := map[string][]int{}
	codes := map[int]int{}
	var wg sync.WaitGroup
	for sid := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			session := fmt.Sprintf("nth%d", sid)
			for range each {
				code, _, body := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"},
					`{"session":"`+session+`","text":"hello"}`)
				mu.Lock()
				codes[code]++
				if code == http.StatusOK {
					r, _ := decodeReply(t, body)
					turns[session] = append(turns[session], r.Turn)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if codes[200]+codes[500] != sessions*each || codes[500] == 0 || codes[200] == 0 {
		t.Fatalf("answers %v, want only 200s and 500s, some of each", codes)
	}
	for session, got := range turns {
		for i, n := range got {
			if n != i+1 {
				t.Errorf("session %s: turns %v, want 1..%d in order: a failed batch left a gap or a duplicate", session, got, len(got))
				break
			}
		}
	}
	t.Logf("answers %v over %d batches", codes, batches.Load())
}

// After SIGTERM the listener stays open while requests keep coming (a proxy
// in front may still forward some): they get 503 + Retry-After, never a
// refused connection; Serve returns once they stop for DrainQuiet.
func TestDrainKeepsListenerWhileRequestsCome(t *testing.T) {
	cfg := testConfig(t)
	cfg.DrainQuiet = 300 * time.Millisecond
	s, stop, done := serve(t, cfg)
	f := s.f
	stop() // SIGTERM
	for f.ready.Load() {
		time.Sleep(time.Millisecond)
	}
	stopped := time.Now()
	for i := range 10 { // 1s of requests, 100ms apart: longer than DrainQuiet in all
		req, _ := http.NewRequest(http.MethodPost, s.url+"/turn", strings.NewReader(`{"session":"d","text":"hi"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request %d, %s after SIGTERM: %v", i, time.Since(stopped).Round(time.Millisecond), err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("request %d after SIGTERM: %d Retry-After %q", i, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after requests stopped")
	}
	if took := time.Since(stopped); took < time.Second {
		t.Errorf("Serve returned %s after SIGTERM, while requests were still coming", took)
	}
}
