package demo

import (
	"bufio"
	"embed"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/sous-ai/sous/function/model/onnxgen"
	"github.com/sous-ai/sous/function/prompt"
)

// Data is the labelled data set the model is fitted to and judged on.
//
//go:embed data
var Data embed.FS

// Example is one labelled utterance.
type Example struct {
	Label int
	Text  string
}

// ReadExamples reads intent<TAB>text lines; # starts a comment.
func ReadExamples(fsys fs.FS, name string) ([]Example, error) {
	convs, err := readConversations(fsys, name)
	if err != nil {
		return nil, err
	}
	var out []Example
	for _, c := range convs {
		out = append(out, c...)
	}
	return out, nil
}

// readConversations reads intent<TAB>text lines, a blank line ending a
// conversation.
func readConversations(fsys fs.FS, name string) ([][]Example, error) {
	return readBlocks(fsys, name, func(text string) (Example, error) {
		label, utt, ok := strings.Cut(text, "\t")
		idx := labelIndex(label)
		if !ok || idx < 0 {
			return Example{}, fmt.Errorf("want intent<TAB>text with a known intent, got %q", text)
		}
		return Example{idx, utt}, nil
	})
}

// readBlocks reads name's blank-line separated blocks (conversations),
// each line parsed by parse; lines starting with # are comments.
func readBlocks[T any](fsys fs.FS, name string, parse func(line string) (T, error)) ([][]T, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var blocks [][]T
	var cur []T
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if strings.HasPrefix(text, "#") {
			continue
		}
		if strings.TrimSpace(text) == "" {
			if len(cur) > 0 {
				blocks = append(blocks, cur)
				cur = nil
			}
			continue
		}
		v, err := parse(text)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		cur = append(cur, v)
	}
	if len(cur) > 0 {
		blocks = append(blocks, cur)
	}
	return blocks, sc.Err()
}

// ReadChat reads the chat model's conversations (data/chat.txt's form):
// blank-line separated blocks of "user: ..." and "assistant: ..." lines.
func ReadChat(fsys fs.FS, name string) ([][]prompt.Message, error) {
	return readBlocks(fsys, name, func(text string) (prompt.Message, error) {
		role, content, ok := strings.Cut(strings.TrimSpace(text), ": ")
		if !ok || (role != "user" && role != "assistant") {
			return prompt.Message{}, fmt.Errorf("want user: or assistant:, got %q", text)
		}
		return prompt.Message{Role: role, Content: content}, nil
	})
}

func labelIndex(s string) int {
	for i, l := range Labels {
		if l == s {
			return i
		}
	}
	return -1
}

const (
	decay    = 0.5   // weight of the history kept each turn
	progress = 0.125 // added to the turn-progress dimension each turn
)

// NextState is the state transition the graph computes, in Go: the
// training uses it with one-hot labels (teacher forcing).
func NextState(state []float64, probs []float64) []float64 {
	next := make([]float64, StateSize)
	for i := range Labels {
		next[i] = math.Min(1, decay*state[i]+(1-decay)*probs[i])
	}
	next[len(Labels)] = math.Min(1, state[len(Labels)]+progress)
	return next
}

type sample struct {
	label  int
	tokens []int64
	state  []float64
}

// weights of the classifier: logits = sum of E[token] + state·Ws + bias.
type weights struct {
	e    [][]float64 // [Vocab][C]
	ws   [][]float64 // [StateSize][C]
	bias []float64
}

func samples(fsys fs.FS) ([]sample, error) {
	first, err := ReadExamples(fsys, "data/train.tsv")
	if err != nil {
		return nil, err
	}
	convs, err := readConversations(fsys, "data/dialogues.txt")
	if err != nil {
		return nil, err
	}
	var out []sample
	for _, ex := range first {
		out = append(out, sample{ex.Label, Tokenize(ex.Text), make([]float64, StateSize)})
	}
	for _, conv := range convs {
		state := make([]float64, StateSize)
		for _, ex := range conv {
			out = append(out, sample{ex.Label, Tokenize(ex.Text), state})
			onehot := make([]float64, len(Labels))
			onehot[ex.Label] = 1
			state = NextState(state, onehot)
		}
	}
	return out, nil
}

// train fits the weights by full-batch gradient descent on softmax cross
// entropy with L2 regularisation: deterministic, so the model's bytes are
// too.
func train(data []sample) weights {
	const epochs, rate, l2 = 600, 2.0, 1e-4
	c := len(Labels)
	w := weights{e: make([][]float64, Vocab), ws: make([][]float64, StateSize), bias: make([]float64, c)}
	for i := range w.e {
		w.e[i] = make([]float64, c)
	}
	for i := range w.ws {
		w.ws[i] = make([]float64, c)
	}
	ge := make([][]float64, Vocab)
	for i := range ge {
		ge[i] = make([]float64, c)
	}
	gws := make([][]float64, StateSize)
	for i := range gws {
		gws[i] = make([]float64, c)
	}
	gb := make([]float64, c)
	n := float64(len(data))
	for range epochs {
		for i := range ge {
			clear(ge[i])
		}
		for i := range gws {
			clear(gws[i])
		}
		clear(gb)
		for _, s := range data {
			p := w.probs(s.tokens, s.state)
			for k := range p {
				d := p[k]
				if k == s.label {
					d--
				}
				for _, t := range s.tokens {
					ge[t][k] += d
				}
				for j, v := range s.state {
					gws[j][k] += d * v
				}
				gb[k] += d
			}
		}
		for t := 1; t < Vocab; t++ {
			for k := range c {
				w.e[t][k] -= rate * (ge[t][k]/n + l2*w.e[t][k])
			}
		}
		for j := range StateSize {
			for k := range c {
				w.ws[j][k] -= rate * (gws[j][k]/n + l2*w.ws[j][k])
			}
		}
		for k := range c {
			w.bias[k] -= rate * gb[k] / n
		}
	}
	return w
}

func (w *weights) probs(tokens []int64, state []float64) []float64 {
	c := len(Labels)
	logits := make([]float64, c)
	copy(logits, w.bias)
	for _, t := range tokens {
		for k := range c {
			logits[k] += w.e[t][k]
		}
	}
	for j, v := range state {
		for k := range c {
			logits[k] += v * w.ws[j][k]
		}
	}
	return softmax(logits)
}

func softmax(x []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, v)
	}
	out := make([]float64, len(x))
	var sum float64
	for i, v := range x {
		out[i] = math.Exp(v - m)
		sum += out[i]
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

func f32(rows [][]float64) []float32 {
	var out []float32
	for _, r := range rows {
		for _, v := range r {
			out = append(out, float32(v))
		}
	}
	return out
}

// BuildIntent fits the demo model to the data in fsys (laid out as Data)
// and returns its ONNX bytes.
func BuildIntent(fsys fs.FS) ([]byte, error) {
	data, err := samples(fsys)
	if err != nil {
		return nil, err
	}
	w := train(data)
	c, h := int64(len(Labels)), int64(StateSize)

	// The state transition as matrices: next = min(1, state·A + probs·B + inc).
	a := make([]float32, h*h)
	for i := range c {
		a[i*h+i] = decay
	}
	a[c*h+c] = 1
	bm := make([]float32, c*h)
	for i := range c {
		bm[i*h+i] = 1 - decay
	}
	inc := make([]float32, h)
	inc[c] = progress

	g := onnxgen.Graph{
		Name:  Name,
		Doc:   "sous demo: conversation-aware intent classifier (see package demo)",
		Opset: 17,
		Inputs: []onnxgen.Value{
			{Name: "tokens", Type: onnxgen.Int64, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Dynamic("seq")}},
			{Name: "state_in", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Fixed(h)}},
		},
		Outputs: []onnxgen.Value{
			{Name: "probs", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Fixed(c)}},
			{Name: "state_out", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Fixed(h)}},
			{Name: "token_logits", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Dynamic("seq"), onnxgen.Fixed(c)}},
		},
		Initializers: []onnxgen.Tensor{
			onnxgen.FloatTensor("embedding", []int64{Vocab, c}, f32(w.e)),
			onnxgen.FloatTensor("state_weights", []int64{h, c}, f32(w.ws)),
			onnxgen.FloatTensor("bias", []int64{c}, f32([][]float64{w.bias})),
			onnxgen.Int64Tensor("seq_axis", []int64{1}, []int64{1}),
			onnxgen.FloatTensor("carry", []int64{h, h}, a),
			onnxgen.FloatTensor("write", []int64{c, h}, bm),
			onnxgen.FloatTensor("step", []int64{h}, inc),
			onnxgen.FloatTensor("one", []int64{1}, []float32{1}),
		},
		Nodes: []onnxgen.Node{
			{Op: "Gather", Inputs: []string{"embedding", "tokens"}, Outputs: []string{"token_logits"},
				Attrs: []onnxgen.Attr{{Name: "axis", Kind: onnxgen.AttrInt, Int: 0}}},
			{Op: "ReduceSum", Inputs: []string{"token_logits", "seq_axis"}, Outputs: []string{"bag"},
				Attrs: []onnxgen.Attr{{Name: "keepdims", Kind: onnxgen.AttrInt, Int: 0}}},
			{Op: "MatMul", Inputs: []string{"state_in", "state_weights"}, Outputs: []string{"context"}},
			{Op: "Add", Inputs: []string{"bag", "context"}, Outputs: []string{"logits0"}},
			{Op: "Add", Inputs: []string{"logits0", "bias"}, Outputs: []string{"logits"}},
			{Op: "Softmax", Inputs: []string{"logits"}, Outputs: []string{"probs"},
				Attrs: []onnxgen.Attr{{Name: "axis", Kind: onnxgen.AttrInt, Int: -1}}},
			{Op: "MatMul", Inputs: []string{"state_in", "carry"}, Outputs: []string{"kept"}},
			{Op: "MatMul", Inputs: []string{"probs", "write"}, Outputs: []string{"written"}},
			{Op: "Add", Inputs: []string{"kept", "written"}, Outputs: []string{"next0"}},
			{Op: "Add", Inputs: []string{"next0", "step"}, Outputs: []string{"next1"}},
			{Op: "Min", Inputs: []string{"next1", "one"}, Outputs: []string{"state_out"}},
		},
		Metadata: [][2]string{
			{"sous.labels", strings.Join(Labels, ",")},
			{"sous.tokenizer", Tokenizer},
		},
	}
	return g.Marshal(), nil
}

// BenchInputs and BenchOutputs are the bench model's widths.
const (
	BenchInputs  = 256
	BenchOutputs = 16
)

// BuildBench returns a compute-heavy MLP for measuring batching:
// x FP32 [batch, 256] -> ReLU layer of width hidden -> depth ReLU layers
// hidden x hidden (sharing one weight matrix, so that compute grows and the
// file does not) -> y FP32 [batch, 16]; 2*(256*h + depth*h*h + 16*h) FLOPs
// per item (17.3 MFLOP at hidden=1024, depth=8). Weights are fixed
// pseudo-random numbers, scaled to keep activations bounded.
func BuildBench(hidden, depth int) []byte {
	rng := rand.New(rand.NewPCG(42, 1024))
	mat := func(rows, cols int) []float32 {
		out := make([]float32, rows*cols)
		scale := math.Sqrt(2 / float64(rows))
		for i := range out {
			out[i] = float32(rng.NormFloat64() * scale)
		}
		return out
	}
	h := int64(hidden)
	nodes := []onnxgen.Node{
		{Op: "MatMul", Inputs: []string{"x", "w1"}, Outputs: []string{"h0"}},
		{Op: "Relu", Inputs: []string{"h0"}, Outputs: []string{"a0"}},
	}
	for i := 1; i <= depth; i++ {
		nodes = append(nodes,
			onnxgen.Node{Op: "MatMul", Inputs: []string{fmt.Sprintf("a%d", i-1), "w2"}, Outputs: []string{fmt.Sprintf("h%d", i)}},
			onnxgen.Node{Op: "Relu", Inputs: []string{fmt.Sprintf("h%d", i)}, Outputs: []string{fmt.Sprintf("a%d", i)}})
	}
	nodes = append(nodes, onnxgen.Node{Op: "MatMul", Inputs: []string{fmt.Sprintf("a%d", depth), "w3"}, Outputs: []string{"y"}})
	g := onnxgen.Graph{
		Name:  "bench",
		Doc:   fmt.Sprintf("sous bench model: MLP 256-%d x%d-16", hidden, depth),
		Opset: 17,
		Inputs: []onnxgen.Value{
			{Name: "x", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Fixed(BenchInputs)}},
		},
		Outputs: []onnxgen.Value{
			{Name: "y", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch"), onnxgen.Fixed(BenchOutputs)}},
		},
		Initializers: []onnxgen.Tensor{
			onnxgen.FloatTensor("w1", []int64{BenchInputs, h}, mat(BenchInputs, hidden)),
			onnxgen.FloatTensor("w2", []int64{h, h}, mat(hidden, hidden)),
			onnxgen.FloatTensor("w3", []int64{h, BenchOutputs}, mat(hidden, BenchOutputs)),
		},
		Nodes: nodes,
	}
	return g.Marshal()
}
