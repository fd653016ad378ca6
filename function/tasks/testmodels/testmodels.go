// Package testmodels writes small model directories in Hugging Face
// Optimum's export layout (model.onnx with Optimum's input and output
// names, tokenizer.json, tokenizer_config.json, special_tokens_map.json,
// config.json), one per task, for tests and for trying sous with a model
// directory: a small BERT encoder (embeddings with positions and types, two
// layers of masked multi-head self-attention, LayerNorm, GELU) with a
// sentiment head, an embedding output and an entity-tagging head, over a
// real WordPiece vocabulary. The encoder's weights are random and small;
// the evidence the heads read is set by hand in a few embedding dimensions,
// so that their answers can be asserted. Output is deterministic.
package testmodels

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/sous-ai/sous/function/model/onnxgen"
	"github.com/sous-ai/sous/function/tokenizer"
)

// Tasks are the directories Write makes, by task name.
var Tasks = []string{"text-classification", "feature-extraction", "token-classification"}

// The test models' encoder: BERT's architecture, small.
const (
	hidden    = 32
	heads     = 2
	layers    = 2
	positions = 512
)

// Write makes dir/<task> for every task, with tokenizerJSON (a BERT-family
// tokenizer.json) as each model's tokenizer.
func Write(dir string, tokenizerJSON []byte) error {
	tok, err := tokenizer.Parse(tokenizerJSON)
	if err != nil {
		return err
	}
	v, err := vocabSize(tokenizerJSON)
	if err != nil {
		return err
	}
	for _, task := range Tasks {
		d := filepath.Join(dir, task)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		var g onnxgen.Graph
		var labels []string
		switch task {
		case "text-classification":
			g, labels = classifier(tok, v)
		case "feature-extraction":
			g = embedder(v)
		case "token-classification":
			g, labels = tagger(tok, v)
		}
		files := map[string]any{
			"config.json":             config(task, labels),
			"tokenizer_config.json":   map[string]any{"model_max_length": 512, "do_lower_case": true, "tokenizer_class": "BertTokenizer"},
			"special_tokens_map.json": map[string]string{"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"},
		}
		for name, content := range files {
			b, _ := json.MarshalIndent(content, "", "  ")
			if err := os.WriteFile(filepath.Join(d, name), append(b, '\n'), 0o644); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(d, "tokenizer.json"), tokenizerJSON, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(d, "model.onnx"), g.Marshal(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// vocabSize is the number of entries in a tokenizer.json's vocabulary.
func vocabSize(tokenizerJSON []byte) (int64, error) {
	var f struct {
		Model struct {
			Vocab map[string]int64 `json:"vocab"`
		} `json:"model"`
		// Added tokens past the model's vocabulary (Qwen3's chat
		// markers) need rows of their own.
		Added []struct {
			ID int64 `json:"id"`
		} `json:"added_tokens"`
	}
	if err := json.Unmarshal(tokenizerJSON, &f); err != nil {
		return 0, err
	}
	n := int64(len(f.Model.Vocab))
	for _, a := range f.Added {
		n = max(n, a.ID+1)
	}
	return n, nil
}

func config(task string, labels []string) map[string]any {
	c := map[string]any{"model_type": "bert", "max_position_embeddings": 512, "hidden_size": hidden,
		"architectures": []string{map[string]string{
			"text-classification": "BertForSequenceClassification", "feature-extraction": "BertModel",
			"token-classification": "BertForTokenClassification"}[task]}}
	if labels != nil {
		id2label := map[string]string{}
		for i, l := range labels {
			id2label[fmt.Sprint(i)] = l
		}
		c["id2label"] = id2label
	}
	return c
}

// io is Optimum's BERT inputs.
func io() []onnxgen.Value {
	seq := []onnxgen.Dim{onnxgen.Dynamic("batch_size"), onnxgen.Dynamic("sequence_length")}
	return []onnxgen.Value{
		{Name: "input_ids", Type: onnxgen.Int64, Shape: seq},
		{Name: "attention_mask", Type: onnxgen.Int64, Shape: seq},
		{Name: "token_type_ids", Type: onnxgen.Int64, Shape: seq},
	}
}

// id is a word's token id (the word must be one token).
func id(tok *tokenizer.Tokenizer, word string) int64 {
	e := tok.Encode(word)
	if e.Len() != 3 {
		panic(fmt.Sprintf("testmodels: %q is %d tokens", word, e.Len()-2))
	}
	return e.IDs[1]
}

// reserved is how many leading dimensions of the word embeddings carry the
// hand-set evidence the heads read; random values fill the rest.
const reserved = 6

// encoder builds a BERT encoder: word, position and type embeddings summed
// and layer-normalized, then layers of multi-head self-attention (the
// attention mask added as -10000 to masked keys' scores) and a GELU
// feed-forward block, each with a residual connection and LayerNorm. Its
// output is "hidden_out" [B, S, width]; "mask3" [B, S, 1] is the mask as
// floats. Weights are random (seeded) and small, so that a token's output
// is mostly its own embedding: the evidence set by hand in a word's first
// dimensions reaches the heads, and everything else (positions, attention
// over the other tokens, and padding if the mask were ignored) moves the
// outputs a little, measurably.
type encoder struct {
	g       onnxgen.Graph
	r       *rand.Rand
	width   int
	vocab   int64
	word    []float32 // [vocab, width], editable before build
	nLayers int
	nHeads  int
	std     float64 // of the linear layers' weights
	// weights, if set, are fitted weights by initializer name: random and
	// constant take them instead of drawing or filling.
	weights map[string][]float32
}

func newEncoder(name string, vocab int64, width, nLayers, nHeads int, seed uint64) *encoder {
	e := &encoder{g: onnxgen.Graph{Name: name, Opset: 17, Inputs: io()}, r: rand.New(rand.NewPCG(seed, 7)),
		width: width, vocab: vocab, nLayers: nLayers, nHeads: nHeads, std: 0.02}
	e.word = make([]float32, vocab*int64(width))
	for i := range vocab {
		for j := reserved; j < width; j++ {
			e.word[i*int64(width)+int64(j)] = float32(e.r.NormFloat64() * 0.5)
		}
	}
	return e
}

// random adds a weight of small random values; with skipReserved the
// evidence dimensions (the last axis's first few) stay zero.
func (e *encoder) random(name string, dims []int64, std float64, skipReserved bool) {
	last := dims[len(dims)-1]
	e.weight(name, dims, func(w []float32) {
		for i := range w {
			if skipReserved && int64(i)%last < reserved {
				continue
			}
			w[i] = float32(e.r.NormFloat64() * std)
		}
	})
}

func (e *encoder) constant(name string, dims []int64, v float32) {
	e.weight(name, dims, func(w []float32) {
		for i := range w {
			w[i] = v
		}
	})
}

// weight adds the initializer name of dims: the fitted weight of that
// name if there is one (and then fill is not called: no random draw is
// spent), else one that fill fills. A fitted weight of the wrong size is a
// bug in the caller: it panics.
func (e *encoder) weight(name string, dims []int64, fill func(w []float32)) {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	w, ok := e.weights[name]
	if !ok {
		w = make([]float32, n)
		fill(w)
	} else if int64(len(w)) != n {
		panic(fmt.Sprintf("testmodels: fitted weight %s has %d values, want %v", name, len(w), dims))
	}
	e.g.Initializers = append(e.g.Initializers, onnxgen.FloatTensor(name, dims, w))
}

func (e *encoder) node(op string, ins []string, out string, attrs ...onnxgen.Attr) {
	e.g.Nodes = append(e.g.Nodes, onnxgen.Node{Op: op, Inputs: ins, Outputs: []string{out}, Attrs: attrs})
}

func (e *encoder) layerNorm(in, prefix, out string) {
	w := int64(e.width)
	e.constant(prefix+".gamma", []int64{w}, 1)
	e.constant(prefix+".beta", []int64{w}, 0)
	e.node("LayerNormalization", []string{in, prefix + ".gamma", prefix + ".beta"}, out,
		onnxgen.Attr{Name: "axis", Kind: onnxgen.AttrInt, Int: -1}, onnxgen.Attr{Name: "epsilon", Kind: onnxgen.AttrFloat, Float: 1e-12})
}

func (e *encoder) linear(in, prefix string, din, dout int, out string) {
	e.random(prefix+".weight", []int64{int64(din), int64(dout)}, e.std, false)
	e.constant(prefix+".bias", []int64{int64(dout)}, 0)
	e.node("MatMul", []string{in, prefix + ".weight"}, prefix+".mm")
	e.node("Add", []string{prefix + ".mm", prefix + ".bias"}, out)
}

func (e *encoder) build() {
	w, hd := int64(e.width), int64(e.width/e.nHeads)
	i64 := func(name string, dims []int64, v ...int64) {
		e.g.Initializers = append(e.g.Initializers, onnxgen.Int64Tensor(name, dims, v))
	}
	e.constants(hd)
	i64("axes2", []int64{1}, 2)

	e.g.Initializers = append(e.g.Initializers, onnxgen.FloatTensor("word_embeddings", []int64{e.vocab, w}, e.word))
	e.random("position_embeddings", []int64{positions, w}, 0.02, true)
	e.random("type_embeddings", []int64{2, w}, 0.02, true)
	e.node("Gather", []string{"word_embeddings", "input_ids"}, "words")
	e.node("Gather", []string{"type_embeddings", "token_type_ids"}, "types")
	e.node("Shape", []string{"input_ids"}, "ids_shape")
	e.node("Gather", []string{"ids_shape", "one"}, "seq_len")
	e.node("Range", []string{"zero", "seq_len", "one"}, "position_ids")
	e.node("Gather", []string{"position_embeddings", "position_ids"}, "positions")
	e.node("Add", []string{"words", "types"}, "emb0")
	e.node("Add", []string{"emb0", "positions"}, "emb1")
	e.layerNorm("emb1", "embeddings.norm", "x0")

	e.node("Cast", []string{"attention_mask"}, "maskf", onnxgen.Attr{Name: "to", Kind: onnxgen.AttrInt, Int: onnxgen.Float})
	e.node("Unsqueeze", []string{"maskf", "axes2"}, "mask3")
	e.node("Sub", []string{"one_f", "maskf"}, "unmask")
	e.node("Mul", []string{"unmask", "neg"}, "mask_bias2")
	e.node("Unsqueeze", []string{"mask_bias2", "axes12"}, "mask_bias") // [B, 1, 1, S]

	perm := func(p ...int64) onnxgen.Attr { return onnxgen.Attr{Name: "perm", Kind: onnxgen.AttrInts, Ints: p} }
	x := "x0"
	for l := range e.nLayers {
		p := fmt.Sprintf("layer%d", l)
		for _, m := range []string{"query", "key", "value"} {
			e.linear(x, p+"."+m, e.width, e.width, p+"."+m+".out")
			e.node("Reshape", []string{p + "." + m + ".out", "heads_shape"}, p+"."+m+".heads")
		}
		e.node("Transpose", []string{p + ".query.heads"}, p+".q", perm(0, 2, 1, 3))
		e.node("Transpose", []string{p + ".key.heads"}, p+".kT", perm(0, 2, 3, 1))
		e.node("Transpose", []string{p + ".value.heads"}, p+".v", perm(0, 2, 1, 3))
		e.node("MatMul", []string{p + ".q", p + ".kT"}, p+".scores0")
		e.node("Mul", []string{p + ".scores0", "scale"}, p+".scores1")
		e.node("Add", []string{p + ".scores1", "mask_bias"}, p+".scores")
		e.node("Softmax", []string{p + ".scores"}, p+".probs", onnxgen.Attr{Name: "axis", Kind: onnxgen.AttrInt, Int: -1})
		e.node("MatMul", []string{p + ".probs", p + ".v"}, p+".ctx0")
		e.node("Transpose", []string{p + ".ctx0"}, p+".ctx1", perm(0, 2, 1, 3))
		e.node("Reshape", []string{p + ".ctx1", "merged_shape"}, p+".ctx")
		e.linear(p+".ctx", p+".attention.output", e.width, e.width, p+".attn")
		e.node("Add", []string{x, p + ".attn"}, p+".res1")
		e.layerNorm(p+".res1", p+".attention.norm", p+".x1")
		e.linear(p+".x1", p+".intermediate", e.width, 2*e.width, p+".h")
		// GELU, erf form: 0.5 x (1 + erf(x / sqrt 2)).
		e.node("Mul", []string{p + ".h", "rsqrt2"}, p+".hs")
		e.node("Erf", []string{p + ".hs"}, p+".erf")
		e.node("Add", []string{p + ".erf", "one_f"}, p+".erf1")
		e.node("Mul", []string{p + ".h", p + ".erf1"}, p+".gelu0")
		e.node("Mul", []string{p + ".gelu0", "half"}, p+".gelu")
		e.linear(p+".gelu", p+".output", 2*e.width, e.width, p+".ffn")
		e.node("Add", []string{p + ".x1", p + ".ffn"}, p+".res2")
		e.layerNorm(p+".res2", p+".output.norm", p+".out")
		x = p + ".out"
	}
	e.node("Identity", []string{x}, "hidden_out")
}

// constants adds the scalars and shapes both graphs use: zero, one,
// axes1, axes12, the head split and merge shapes, and the float constants
// of the mask, the attention scale and GELU.
func (e *encoder) constants(hd int64) {
	i64 := func(name string, dims []int64, v ...int64) {
		e.g.Initializers = append(e.g.Initializers, onnxgen.Int64Tensor(name, dims, v))
	}
	i64("zero", nil, 0)
	i64("one", nil, 1)
	i64("axes1", []int64{1}, 1)
	i64("axes12", []int64{2}, 1, 2)
	i64("heads_shape", []int64{4}, 0, 0, int64(e.nHeads), hd)
	i64("merged_shape", []int64{3}, 0, 0, int64(e.width))
	e.constant("one_f", nil, 1)
	e.constant("neg", nil, -10000)
	e.constant("scale", nil, float32(1/math.Sqrt(float64(hd))))
	e.constant("half", nil, 0.5)
	e.constant("rsqrt2", nil, float32(1/math.Sqrt2))
}

func seqOut(name string, last int64) onnxgen.Value {
	return onnxgen.Value{Name: name, Type: onnxgen.Float,
		Shape: []onnxgen.Dim{onnxgen.Dynamic("batch_size"), onnxgen.Dynamic("sequence_length"), onnxgen.Fixed(last)}}
}

// embedder: last_hidden_state [B, S, hidden], the encoder's output.
func embedder(v int64) onnxgen.Graph {
	e := newEncoder("feature-extraction", v, hidden, layers, heads, 11)
	e.build()
	e.node("Identity", []string{"hidden_out"}, "last_hidden_state")
	e.g.Outputs = []onnxgen.Value{seqOut("last_hidden_state", hidden)}
	return e.g
}

// classifier: mean pooling over the mask, then a linear layer to two
// labels. Evidence dimension 0 votes positive, 1 negative.
func classifier(tok *tokenizer.Tokenizer, v int64) (onnxgen.Graph, []string) {
	labels := []string{"negative", "positive"}
	e := newEncoder("text-classification", v, hidden, layers, heads, 21)
	for _, w := range []string{"great", "love", "excellent", "thanks", "happy", "perfect"} {
		e.word[id(tok, w)*hidden+0] = 3
	}
	for _, w := range []string{"terrible", "hate", "awful", "broken", "worst", "angry"} {
		e.word[id(tok, w)*hidden+1] = 3
	}
	e.build()
	w := make([]float32, hidden*2)
	w[0*2+1], w[1*2+0] = 4, 4
	e.g.Initializers = append(e.g.Initializers, onnxgen.FloatTensor("classifier", []int64{hidden, 2}, w))
	keep0 := onnxgen.Attr{Name: "keepdims", Kind: onnxgen.AttrInt, Int: 0}
	e.node("Mul", []string{"hidden_out", "mask3"}, "masked")
	e.node("ReduceSum", []string{"masked", "axes1"}, "summed", keep0)
	e.node("ReduceSum", []string{"mask3", "axes1"}, "count", keep0)
	e.node("Div", []string{"summed", "count"}, "pooled")
	e.node("MatMul", []string{"pooled", "classifier"}, "logits")
	e.g.Outputs = []onnxgen.Value{{Name: "logits", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch_size"), onnxgen.Fixed(2)}}}
	return e.g, labels
}

// tagger: a linear layer per token over the evidence dimensions: every
// word is O, except names, places, and the word pieces sous (B-LOC, less
// sure) and ##ville (a strong O), on which the aggregation strategies
// disagree.
func tagger(tok *tokenizer.Tokenizer, v int64) (onnxgen.Graph, []string) {
	labels := []string{"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
	e := newEncoder("token-classification", v, hidden, layers, heads, 31)
	for i := range v {
		e.word[i*hidden+0] = 2
	}
	set := func(i int64, label int, x float32) {
		e.word[i*hidden+0] = 0
		e.word[i*hidden+int64(label)] = x
	}
	for _, w := range []string{"john", "mary", "alice"} {
		set(id(tok, w), 1, 4)
	}
	for _, w := range []string{"smith", "jones"} {
		set(id(tok, w), 2, 4)
	}
	for _, w := range []string{"paris", "london", "berlin", "new"} {
		set(id(tok, w), 3, 4)
	}
	set(id(tok, "york"), 4, 4)
	sous := id(tok, "sous")
	set(sous, 3, 4)
	e.word[sous*hidden+0] = 2
	set(tok.Encode("sousville").IDs[2], 5, 6) // ##ville: the strong-O dimension
	e.build()
	w := make([]float32, hidden*len(labels))
	for l := range labels {
		w[l*len(labels)+l] = 1
	}
	w[5*len(labels)+0] = 1.5
	e.g.Initializers = append(e.g.Initializers, onnxgen.FloatTensor("classifier", []int64{hidden, int64(len(labels))}, w))
	e.node("MatMul", []string{"hidden_out", "classifier"}, "logits")
	e.g.Outputs = []onnxgen.Value{seqOut("logits", int64(len(labels)))}
	return e.g, labels
}

// Bench writes dir/feature-extraction-bench: the encoder width wide and
// depth layers deep, whose cost grows with the padded token count (and
// attention's with its square), for measuring padding.
func Bench(dir string, tokenizerJSON []byte, width, depth int) error {
	v, err := vocabSize(tokenizerJSON)
	if err != nil {
		return err
	}
	d := filepath.Join(dir, "feature-extraction-bench")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	e := newEncoder("feature-extraction-bench", v, width, depth, 4, 41)
	e.build()
	e.node("Identity", []string{"hidden_out"}, "last_hidden_state")
	e.g.Outputs = []onnxgen.Value{seqOut("last_hidden_state", int64(width))}
	cfg, _ := json.Marshal(config("feature-extraction", nil))
	for name, b := range map[string][]byte{"model.onnx": e.g.Marshal(), "tokenizer.json": tokenizerJSON, "config.json": cfg} {
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
