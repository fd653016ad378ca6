package function

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sousce "github.com/sous-ai/sous/function/api/cloudevents"

	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/tasks/testmodels"
	"github.com/sous-ai/sous/function/tokenizer"
	"github.com/sous-ai/sous/function/turn"
)

var (
	modelsOnce sync.Once
	modelsDir  string
	modelsErr  error
)

// testModels writes the test model directories (as make model does) once
// per test binary.
func testModels(t *testing.T) string {
	t.Helper()
	modelsOnce.Do(func() {
		tok, err := os.ReadFile("tokenizer/testdata/tokenizers/all-minilm-l6-v2.json")
		if err != nil {
			modelsErr = err
			return
		}
		modelsDir, modelsErr = os.MkdirTemp("", "sous-models")
		if modelsErr == nil {
			modelsErr = testmodels.Write(modelsDir, tok)
		}
		if modelsErr == nil {
			modelsErr = testmodels.Decoder(modelsDir, tok)
		}
		if modelsErr == nil {
			modelsErr = testmodels.DecoderGQA(modelsDir, tok)
		}
	})
	if modelsErr != nil {
		t.Fatal(modelsErr)
	}
	return modelsDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if modelsDir != "" {
		os.RemoveAll(modelsDir)
	}
	os.Exit(code)
}

func hfServer(t *testing.T, task string, edit func(*Config)) *server {
	t.Helper()
	cfg := testConfig(t)
	cfg.Model = filepath.Join(testModels(t), task)
	if edit != nil {
		edit(&cfg)
	}
	return startServer(t, cfg)
}

func turnJSON(t *testing.T, s *server, session, text string, out any) turn.Reply {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"session": session, "text": text})
	code, _, b := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"}, string(body))
	if code != 200 {
		t.Fatalf("/turn %q: %d %s", text, code, b)
	}
	var r turn.Reply
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(r.Output, out); err != nil {
			t.Fatalf("output %s: %v", r.Output, err)
		}
	}
	return r
}

// A model directory of a text classifier answers text turns with its
// labels from config.json, softmax scores summing to one.
func TestModelDirTextClassification(t *testing.T) {
	s := hfServer(t, "text-classification", nil)
	for text, want := range map[string]string{
		"the support was great, thanks!":        "positive",
		"this is terrible, the app is broken":   "negative",
		"I LOVE it. Perfect.":                   "positive",
		"worst experience ever, I'm so angry 😠": "negative",
	} {
		var out struct {
			Label  string             `json:"label"`
			Score  float32            `json:"score"`
			Scores map[string]float32 `json:"scores"`
		}
		r := turnJSON(t, s, "tc", text, &out)
		sum := out.Scores["positive"] + out.Scores["negative"]
		if out.Label != want || math.Abs(float64(sum-1)) > 1e-5 || out.Score != out.Scores[want] || r.Model != "text-classification" {
			t.Errorf("%q: %+v (model %s), want %s", text, out, r.Model, want)
		}
	}
	// The same text as a binary-mode CloudEvent gets a reply event.
	code, h, b := s.post(t, "/", binaryHeaders("hf-1", "tc-ce"), `{"text":"awful, it arrived broken"}`)
	var r turn.Reply
	json.Unmarshal(b, &r)
	if code != 200 || h.Get("Ce-Type") != sousce.TypeReply || !strings.Contains(string(r.Output), `"label":"negative"`) {
		t.Errorf("CloudEvent turn: %d %s %s", code, h.Get("Ce-Type"), b)
	}
}

// A feature-extraction model answers with an L2-normalized mean-pooled
// embedding.
func TestModelDirEmbeddings(t *testing.T) {
	s := hfServer(t, "feature-extraction", nil)
	var out struct {
		Embedding []float32 `json:"embedding"`
		Dims      int       `json:"dims"`
	}
	turnJSON(t, s, "fe", "hello there", &out)
	var norm float64
	for _, v := range out.Embedding {
		norm += float64(v) * float64(v)
	}
	if out.Dims != 32 || len(out.Embedding) != 32 || math.Abs(norm-1) > 1e-5 {
		t.Fatalf("embedding: dims %d, %d values, norm² %f", out.Dims, len(out.Embedding), norm)
	}
}

// Padding changes nothing: each text's output in one batch with texts of
// other lengths equals its output run alone, for every task (the encoder's
// attention honours the mask; outputs are trimmed to each row's length).
func TestModelDirBatchEqualsAlone(t *testing.T) {
	texts := []string{"hello there", "John Smith loves Paris",
		strings.Repeat("a much longer sentence to pad against ", 3), "great!",
		strings.Repeat("words ", 40) + "from New York"}
	for _, task := range []string{"text-classification", "feature-extraction", "token-classification"} {
		t.Run(task, func(t *testing.T) {
			b := &blockingExec{entered: make(chan int, 16), release: make(chan struct{})}
			cfg := testConfig(t)
			cfg.Model = filepath.Join(testModels(t), task)
			cfg.BatchOrder = "arrival" // one batch of every length
			s := startServer(t, cfg, WithExecutorWrapper(b.wrap))
			alone := make([]turn.Reply, len(texts))
			for i, text := range texts {
				go func() { <-b.entered; b.release <- struct{}{} }()
				alone[i] = turnJSON(t, s, fmt.Sprintf("alone-%d", i), text, nil)
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); turnJSON(t, s, "first", "hold", nil) }()
			<-b.entered // the executor holds the first batch while the rest queue
			batched := make([]turn.Reply, len(texts))
			for i, text := range texts {
				wg.Add(1)
				go func() { defer wg.Done(); batched[i] = turnJSON(t, s, fmt.Sprintf("batched-%d", i), text, nil) }()
			}
			for s.f.turns.Queued() < len(texts) {
				time.Sleep(time.Millisecond)
			}
			close(b.release)
			wg.Wait()
			for i := range texts {
				if batched[i].BatchSize != len(texts) {
					t.Fatalf("batch of %d, want %d", batched[i].BatchSize, len(texts))
				}
				if d := maxDiff(t, alone[i].Output, batched[i].Output); d > 1e-5 {
					t.Errorf("%q: batched output differs from alone by %g:\n%s\n%s", texts[i], d, batched[i].Output, alone[i].Output)
				}
			}
		})
	}
}

// maxDiff is the largest difference between two JSON documents' numbers,
// or +Inf if they differ otherwise.
func maxDiff(t *testing.T, a, b json.RawMessage) float64 {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return math.Inf(1)
	}
	var walk func(x, y any) float64
	walk = func(x, y any) float64 {
		switch xv := x.(type) {
		case float64:
			yv, ok := y.(float64)
			if !ok {
				return math.Inf(1)
			}
			return math.Abs(xv - yv)
		case []any:
			yv, ok := y.([]any)
			if !ok || len(xv) != len(yv) {
				return math.Inf(1)
			}
			d := 0.0
			for i := range xv {
				d = max(d, walk(xv[i], yv[i]))
			}
			return d
		case map[string]any:
			yv, ok := y.(map[string]any)
			if !ok || len(xv) != len(yv) {
				return math.Inf(1)
			}
			d := 0.0
			for k := range xv {
				d = max(d, walk(xv[k], yv[k]))
			}
			return d
		default:
			if fmt.Sprint(x) != fmt.Sprint(y) {
				return math.Inf(1)
			}
			return 0
		}
	}
	return walk(x, y)
}

// Token classification gives entities with character offsets into the
// turn's text, aggregated as Hugging Face's pipeline does.
func TestModelDirEntities(t *testing.T) {
	text := "Hi, I'm John Smith from New York, visiting Sousville and Paris."
	type ent struct {
		Entity string  `json:"entity"`
		Score  float32 `json:"score"`
		Start  int     `json:"start"`
		End    int     `json:"end"`
		Word   string  `json:"word"`
	}
	for _, tc := range []struct {
		aggregation string
		want        []string // entity:word
	}{
		{"none", []string{"B-PER:John", "I-PER:Smith", "B-LOC:New", "I-LOC:York", "B-LOC:Sous", "B-LOC:Paris"}},
		{"simple", []string{"PER:John Smith", "LOC:New York", "LOC:Sous", "LOC:Paris"}},
		{"first", []string{"PER:John Smith", "LOC:New York", "LOC:Sousville", "LOC:Paris"}},
		{"average", []string{"PER:John Smith", "LOC:New York", "LOC:Paris"}},
		{"max", []string{"PER:John Smith", "LOC:New York", "LOC:Paris"}},
	} {
		t.Run(tc.aggregation, func(t *testing.T) {
			s := hfServer(t, "token-classification", func(c *Config) { c.Aggregation = tc.aggregation })
			var out struct {
				Entities []ent `json:"entities"`
			}
			turnJSON(t, s, "tok", text, &out)
			var got []string
			runes := []rune(text)
			for _, e := range out.Entities {
				got = append(got, e.Entity+":"+e.Word)
				if string(runes[e.Start:e.End]) != e.Word || e.Score <= 0 || e.Score > 1 {
					t.Errorf("entity %+v: offsets give %q", e, string(runes[e.Start:e.End]))
				}
			}
			if strings.Join(got, ", ") != strings.Join(tc.want, ", ") {
				t.Errorf("aggregation %s: %v, want %v", tc.aggregation, got, tc.want)
			}
		})
	}
}

// SOUS_CONTEXT_TURNS puts the session's earlier texts, read back through
// the store, in the first segment; the current text is the second and is
// never truncated.
func TestModelDirContextTurns(t *testing.T) {
	store := state.NewMemory(nil)
	cfg := testConfig(t)
	cfg.Model = filepath.Join(testModels(t), "text-classification")
	cfg.ContextTurns = 2
	// What each turn's inputs are as the model gets them: the executor
	// fills them in once it has read the session.
	var mu sync.Mutex
	var inputs [][]int64
	wrap := func(next Executor) Executor {
		return func(ctx context.Context, in []*turn.Job, out []turn.Outcome) error {
			err := next(ctx, in, out)
			mu.Lock()
			for _, j := range in {
				inputs = append(inputs, j.Inputs[0].I64)
			}
			mu.Unlock()
			return err
		}
	}
	s := startServer(t, cfg, WithStore(store), WithExecutorWrapper(wrap))
	tok, err := tokenizer.Load(filepath.Join(cfg.Model, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	turnJSON(t, s, "ctx", "my order arrived broken", nil)
	var out struct {
		Label string `json:"label"`
	}
	turnJSON(t, s, "ctx", "what now?", &out)
	// The second turn's inputs: the pair (first turn's text, second
	// turn's text).
	mu.Lock()
	second := inputs[len(inputs)-1]
	mu.Unlock()
	want, _ := tok.EncodePair("my order arrived broken", "what now?")
	if fmt.Sprint(second) != fmt.Sprint(want.IDs) {
		t.Fatalf("second turn's input ids %v, want the pair %v", second, want.IDs)
	}
	// The first turn's negative words carry into the second turn.
	if out.Label != "negative" {
		t.Errorf("second turn with context: %s, want negative", out.Label)
	}
	// A long history is cut from its oldest tokens; the text stays whole.
	long := strings.Repeat("great ", 600)
	turnJSON(t, s, "ctx2", long, nil)
	turnJSON(t, s, "ctx2", "and then it broke", nil)
	mu.Lock()
	second = inputs[len(inputs)-1]
	mu.Unlock()
	wantTail, _ := tok.EncodeWith(long, ptrTo("and then it broke"), &tokenizer.Truncation{MaxLength: 256, Strategy: "only_first", Left: true})
	if fmt.Sprint(second) != fmt.Sprint(wantTail.IDs) || len(second) != 256 {
		t.Fatalf("long context: %d ids %v…", len(second), second[:min(8, len(second))])
	}
}

func ptrTo[T any](v T) *T { return &v }

// A model directory that does not fit is refused at start-up with the
// reason.
func TestModelDirRefused(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(testModels(t), "text-classification")
	for _, f := range []string{"model.onnx", "config.json"} {
		b, _ := os.ReadFile(filepath.Join(src, f))
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	cfg := testConfig(t)
	cfg.Model = dir
	if _, err := New(cfg, WithLogger(quietLogger())); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("no tokenizer.json: %v", err)
	}
	cfg.Model = filepath.Join(testModels(t), "feature-extraction")
	cfg.Task = "text-classification"
	if _, err := New(cfg, WithLogger(quietLogger())); err == nil || !strings.Contains(err.Error(), "SOUS_TASK text-classification wants output logits") {
		t.Errorf("SOUS_TASK mismatch: %v", err)
	}
}

// OIP v2 takes BYTES text for a model directory, as KServe's Hugging Face
// runtime does, and answers with the task's tensors.
func TestModelDirOIPText(t *testing.T) {
	s := hfServer(t, "text-classification", nil)
	jsonCT := map[string]string{"Content-Type": "application/json"}
	code, _, b := s.post(t, "/v2/models/text-classification/infer", jsonCT,
		`{"id":"r1","inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["great, thanks!","awful and broken"]}]}`)
	var resp struct {
		ID      string `json:"id"`
		Outputs []struct {
			Name     string          `json:"name"`
			Shape    []int64         `json:"shape"`
			Datatype string          `json:"datatype"`
			Data     json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	json.Unmarshal(b, &resp)
	if code != 200 || len(resp.Outputs) != 2 || string(resp.Outputs[0].Data) != `["positive","negative"]` ||
		fmt.Sprint(resp.Outputs[1].Shape) != "[2 2]" || resp.ID != "r1" {
		t.Fatalf("BYTES infer: %d %s", code, b)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"inputs":[{"name":"text","shape":[3],"datatype":"BYTES","data":["a","b"]}]}`, "does not match 2 strings"},
		{`{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":[1]}]}`, "list of strings"},
		{`{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["a"]}],"outputs":[{"name":"nope"}]}`, "its outputs are label, scores"},
	} {
		code, _, b := s.post(t, "/v2/models/text-classification/infer", jsonCT, tc.body)
		if code != 400 || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %s, want 400 %q", tc.body, code, b, tc.want)
		}
	}
	e := hfServer(t, "feature-extraction", nil)
	code, _, b = e.post(t, "/v2/models/feature-extraction/infer", jsonCT,
		`{"inputs":[{"name":"text","shape":[1,1],"datatype":"BYTES","data":[["hello there"]]}]}`)
	if code != 200 || !strings.Contains(string(b), `"name":"embedding","shape":[1,32]`) {
		t.Fatalf("BYTES embedding: %d %s", code, b)
	}
}
