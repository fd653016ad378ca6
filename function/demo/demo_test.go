package demo_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/model"
)

func engine(t testing.TB) *model.Engine {
	t.Helper()
	lib := model.FindLibrary()
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("ONNX Runtime library %s: %v (run `make test`, which fetches it)", lib, err)
	}
	e, err := model.New(model.Params{Library: lib, Data: demo.ONNX, Name: demo.Name, Device: model.DeviceCPU})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// turn runs one text through the model with the given state and returns
// the intent and the next state.
func turn(t *testing.T, e *model.Engine, text string, state []float32) (string, []float32) {
	t.Helper()
	tok := demo.Tokenize(text)
	out, err := e.Run(context.Background(), [][]model.Tensor{{
		{Name: "tokens", DType: model.INT64, Shape: []int64{1, int64(len(tok))}, I64: tok},
		{Name: "state_in", DType: model.FP32, Shape: []int64{1, demo.StateSize}, F32: state},
	}})
	if err != nil {
		t.Fatal(err)
	}
	probs := out[0][0].F32
	return demo.Labels[slices.Index(probs, slices.Max(probs))], out[0][1].F32
}

func TestAnswersMakeSense(t *testing.T) {
	e := engine(t)
	for text, want := range map[string]string{
		"hello there":                 "greeting",
		"thanks a lot":                "thanks",
		"Hello there!":                "greeting",
		"how do I reset my password?": "question",
		"this is terrible":            "complaint",
		"bye":                         "goodbye",
		"the sky is blue":             "other",
	} {
		if got, _ := turn(t, e, text, make([]float32, demo.StateSize)); got != want {
			t.Errorf("%q -> %s, want %s", text, got, want)
		}
	}
}

func TestHeldOutAccuracy(t *testing.T) {
	const goal = 0.9
	e := engine(t)
	examples, err := demo.ReadExamples(demo.Data, "data/heldout.tsv")
	if err != nil {
		t.Fatal(err)
	}
	right := 0
	for _, ex := range examples {
		got, _ := turn(t, e, ex.Text, make([]float32, demo.StateSize))
		if got == demo.Labels[ex.Label] {
			right++
		} else {
			t.Logf("miss: %q -> %s, labelled %s", ex.Text, got, demo.Labels[ex.Label])
		}
	}
	acc := float64(right) / float64(len(examples))
	t.Logf("held-out accuracy %.3f (%d/%d)", acc, right, len(examples))
	if acc < goal {
		t.Errorf("held-out accuracy %.3f, want >= %.2f", acc, goal)
	}
}

// The carried state decides an ambiguous turn.
func TestConversationDecidesAmbiguousTurn(t *testing.T) {
	e := engine(t)
	for _, tc := range []struct{ first, reply, want string }{
		{"hi there", "you too", "greeting"},
		{"see you tomorrow", "you too", "goodbye"},
		{"hey nice to meet you", "same to you", "greeting"},
		{"have a good one", "same to you", "goodbye"},
	} {
		_, state := turn(t, e, tc.first, make([]float32, demo.StateSize))
		if got, _ := turn(t, e, tc.reply, state); got != tc.want {
			t.Errorf("%q then %q -> %s, want %s", tc.first, tc.reply, got, tc.want)
		}
	}
}

// The committed models are exactly what `make model` writes.
func TestModelsAreReproducible(t *testing.T) {
	intent, err := demo.BuildIntent(demo.Data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(intent, demo.ONNX) {
		t.Error("intent.onnx differs from what BuildIntent writes: run `make model` and commit")
	}
	bench, err := os.ReadFile("bench.onnx")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bench, demo.BuildBench(1024, 8)) {
		t.Error("bench.onnx differs from what BuildBench(1024, 8) writes: run `make model` and commit")
	}
}

func TestTokenize(t *testing.T) {
	for _, tc := range []struct {
		text  string
		words string
	}{
		{"Hello, World!", "[hello world]"},
		{"what's up", "[whats up]"},
		{"Grüße aus Köln", "[grüße aus köln]"},
		{"bad\xffbyte", "[bad byte]"},
		{"!!! ...", "[]"},
	} {
		if got := fmt.Sprint(demo.Words(tc.text)); got != tc.words {
			t.Errorf("Words(%q) = %s, want %s", tc.text, got, tc.words)
		}
	}
	if got := demo.Tokenize("?!"); len(got) != 1 || got[0] != 0 {
		t.Errorf("Tokenize of a text without words = %v, want [0]", got)
	}
	long := bytes.Repeat([]byte("word "), 10000)
	if got := len(demo.Tokenize(string(long))); got != demo.MaxTokens {
		t.Errorf("Tokenize of 10000 words gave %d tokens, want MaxTokens=%d", got, demo.MaxTokens)
	}
	for _, id := range demo.Tokenize("the quick brown fox") {
		if id < 1 || id >= demo.Vocab {
			t.Errorf("token id %d outside [1, %d)", id, demo.Vocab)
		}
	}
}

func FuzzTokenize(f *testing.F) {
	for _, s := range []string{"hello there", "", "\xff\xfe", "Grüße", "a'b’c", "你好 世界"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := demo.Tokenize(s)
		if len(ids) == 0 || len(ids) > demo.MaxTokens {
			t.Fatalf("Tokenize(%q) gave %d tokens", s, len(ids))
		}
		for _, id := range ids {
			if id < 0 || id >= demo.Vocab {
				t.Fatalf("Tokenize(%q): id %d out of range", s, id)
			}
		}
	})
}
