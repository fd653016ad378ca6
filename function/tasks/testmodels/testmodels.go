// Package testmodels writes small model directories in Hugging Face
// Optimum's export layout (model.onnx with Optimum's input and output
// names, tokenizer.json, tokenizer_config.json, special_tokens_map.json,
// config.json), one per task, for tests and for trying sous with a model
// directory: a sentiment classifier, an embedding model and an entity
// tagger over a real WordPiece vocabulary, with weights set by hand so that
// their answers can be asserted. Output is deterministic.
package testmodels

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/sous-ai/sous/function/model/onnxgen"
	"github.com/sous-ai/sous/function/tokenizer"
)

// Tasks are the directories Write makes, by task name.
var Tasks = []string{"text-classification", "feature-extraction", "token-classification"}

// hidden is the models' width.
const hidden = 16

// Write makes dir/<task> for every task, with tokenizerJSON (a BERT-family
// tokenizer.json) as each model's tokenizer.
func Write(dir string, tokenizerJSON []byte) error {
	tok, err := tokenizer.Parse(tokenizerJSON)
	if err != nil {
		return err
	}
	var vocab struct {
		Model struct {
			Vocab map[string]int64 `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(tokenizerJSON, &vocab); err != nil {
		return err
	}
	v := int64(len(vocab.Model.Vocab))
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

// embeddings returns a deterministic [v, hidden] table of small values.
func embeddings(v int64, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	e := make([]float32, v*hidden)
	for i := range e {
		e[i] = float32(r.NormFloat64() * 0.1)
	}
	return e
}

// id is a word's token id (the word must be one token).
func id(tok *tokenizer.Tokenizer, word string) int64 {
	e := tok.Encode(word)
	if e.Len() != 3 {
		panic(fmt.Sprintf("testmodels: %q is %d tokens", word, e.Len()-2))
	}
	return e.IDs[1]
}

// hiddenNodes: hidden = (E[input_ids] + T[token_type_ids]) * mask.
func hiddenNodes() []onnxgen.Node {
	return []onnxgen.Node{
		{Op: "Gather", Inputs: []string{"word_embeddings", "input_ids"}, Outputs: []string{"words"}},
		{Op: "Gather", Inputs: []string{"type_embeddings", "token_type_ids"}, Outputs: []string{"types"}},
		{Op: "Add", Inputs: []string{"words", "types"}, Outputs: []string{"embedded"}},
		{Op: "Cast", Inputs: []string{"attention_mask"}, Outputs: []string{"maskf"}, Attrs: []onnxgen.Attr{{Name: "to", Kind: onnxgen.AttrInt, Int: onnxgen.Float}}},
		{Op: "Unsqueeze", Inputs: []string{"maskf", "axis2"}, Outputs: []string{"mask3"}},
		{Op: "Mul", Inputs: []string{"embedded", "mask3"}, Outputs: []string{"hidden"}},
	}
}

func commonInits(v int64, seed uint64, emb []float32) []onnxgen.Tensor {
	if emb == nil {
		emb = embeddings(v, seed)
	}
	types := embeddings(2, seed+1)
	return []onnxgen.Tensor{
		onnxgen.FloatTensor("word_embeddings", []int64{v, hidden}, emb),
		onnxgen.FloatTensor("type_embeddings", []int64{2, hidden}, types),
		onnxgen.Int64Tensor("axis1", []int64{1}, []int64{1}),
		onnxgen.Int64Tensor("axis2", []int64{1}, []int64{2}),
	}
}

// Bench writes dir/feature-extraction-bench: the embedder with a per-token
// stack of layers (width wide, depth deep) whose cost grows with the padded
// token count, as a transformer's does; for measuring padding.
func Bench(dir string, tokenizerJSON []byte, width, depth int) error {
	var vocab struct {
		Model struct {
			Vocab map[string]int64 `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(tokenizerJSON, &vocab); err != nil {
		return err
	}
	d := filepath.Join(dir, "feature-extraction-bench")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	g := embedder(int64(len(vocab.Model.Vocab)))
	g.Name = "feature-extraction-bench"
	r := rand.New(rand.NewPCG(41, 7))
	weights := func(name string, in, out int) onnxgen.Tensor {
		w := make([]float32, in*out)
		for i := range w {
			w[i] = float32(r.NormFloat64() / float64(in))
		}
		return onnxgen.FloatTensor(name, []int64{int64(in), int64(out)}, w)
	}
	nodes := g.Nodes[:len(g.Nodes)-1] // all but the Identity to the output
	prev := "hidden"
	g.Initializers = append(g.Initializers, weights("up", hidden, width), weights("down", width, hidden))
	nodes = append(nodes, onnxgen.Node{Op: "MatMul", Inputs: []string{prev, "up"}, Outputs: []string{"h0"}})
	prev = "h0"
	for i := range depth {
		w, h, a := fmt.Sprintf("w%d", i), fmt.Sprintf("m%d", i), fmt.Sprintf("a%d", i)
		g.Initializers = append(g.Initializers, weights(w, width, width))
		nodes = append(nodes, onnxgen.Node{Op: "MatMul", Inputs: []string{prev, w}, Outputs: []string{h}},
			onnxgen.Node{Op: "Relu", Inputs: []string{h}, Outputs: []string{a}})
		prev = a
	}
	nodes = append(nodes, onnxgen.Node{Op: "MatMul", Inputs: []string{prev, "down"}, Outputs: []string{"last_hidden_state"}})
	g.Nodes = nodes
	files := map[string][]byte{"model.onnx": g.Marshal(), "tokenizer.json": tokenizerJSON}
	cfg, _ := json.Marshal(config("feature-extraction", nil))
	files["config.json"] = cfg
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// embedder: last_hidden_state [B, S, hidden] = the masked embeddings.
func embedder(v int64) onnxgen.Graph {
	nodes := hiddenNodes()
	nodes = append(nodes, onnxgen.Node{Op: "Identity", Inputs: []string{"hidden"}, Outputs: []string{"last_hidden_state"}})
	return onnxgen.Graph{Name: "feature-extraction", Opset: 13, Inputs: io(),
		Outputs: []onnxgen.Value{{Name: "last_hidden_state", Type: onnxgen.Float,
			Shape: []onnxgen.Dim{onnxgen.Dynamic("batch_size"), onnxgen.Dynamic("sequence_length"), onnxgen.Fixed(hidden)}}},
		Initializers: commonInits(v, 11, nil), Nodes: nodes}
}

// classifier: mean pooling over the mask, then a linear layer to two
// labels. Dimension 0 of a word's embedding votes positive, 1 negative.
func classifier(tok *tokenizer.Tokenizer, v int64) (onnxgen.Graph, []string) {
	labels := []string{"negative", "positive"}
	emb := embeddings(v, 21)
	for _, w := range []string{"great", "love", "excellent", "thanks", "happy", "perfect"} {
		emb[id(tok, w)*hidden+0] = 3
	}
	for _, w := range []string{"terrible", "hate", "awful", "broken", "worst", "angry"} {
		emb[id(tok, w)*hidden+1] = 3
	}
	w := make([]float32, hidden*2)
	w[0*2+1], w[1*2+0] = 4, 4
	nodes := hiddenNodes()
	nodes = append(nodes,
		onnxgen.Node{Op: "ReduceSum", Inputs: []string{"hidden", "axis1"}, Outputs: []string{"summed"}, Attrs: []onnxgen.Attr{{Name: "keepdims", Kind: onnxgen.AttrInt, Int: 0}}},
		onnxgen.Node{Op: "ReduceSum", Inputs: []string{"mask3", "axis1"}, Outputs: []string{"count"}, Attrs: []onnxgen.Attr{{Name: "keepdims", Kind: onnxgen.AttrInt, Int: 0}}},
		onnxgen.Node{Op: "Div", Inputs: []string{"summed", "count"}, Outputs: []string{"pooled"}},
		onnxgen.Node{Op: "MatMul", Inputs: []string{"pooled", "classifier"}, Outputs: []string{"logits"}},
	)
	inits := append(commonInits(v, 21, emb), onnxgen.FloatTensor("classifier", []int64{hidden, 2}, w))
	return onnxgen.Graph{Name: "text-classification", Opset: 13, Inputs: io(),
		Outputs:      []onnxgen.Value{{Name: "logits", Type: onnxgen.Float, Shape: []onnxgen.Dim{onnxgen.Dynamic("batch_size"), onnxgen.Fixed(2)}}},
		Initializers: inits, Nodes: nodes}, labels
}

// tagger: a linear layer per token over embeddings whose first five
// dimensions are the labels' evidence: every word is O, except names,
// places, and the word pieces sous and ##ville (B-LOC, then a strong O),
// on which the aggregation strategies disagree.
func tagger(tok *tokenizer.Tokenizer, v int64) (onnxgen.Graph, []string) {
	labels := []string{"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
	emb := embeddings(v, 31)
	for i := int64(0); i < v; i++ {
		emb[i*hidden+0] = 2
	}
	set := func(word string, label int, x float32) {
		i := id(tok, word)
		emb[i*hidden+0] = 0
		emb[i*hidden+int64(label)] = x
	}
	for _, w := range []string{"john", "mary", "alice"} {
		set(w, 1, 4)
	}
	for _, w := range []string{"smith", "jones"} {
		set(w, 2, 4)
	}
	for _, w := range []string{"paris", "london", "berlin", "new"} {
		set(w, 3, 4)
	}
	set("york", 4, 4)
	set("sous", 3, 4)
	ville := tok.Encode("sousville").IDs[2] // ##ville
	emb[ville*hidden+0] = 6
	w := make([]float32, hidden*len(labels))
	for l := range labels {
		w[l*len(labels)+l] = 1
	}
	nodes := append(hiddenNodes(), onnxgen.Node{Op: "MatMul", Inputs: []string{"hidden", "classifier"}, Outputs: []string{"logits"}})
	inits := commonInits(v, 31, emb)
	inits[1] = onnxgen.FloatTensor("type_embeddings", []int64{2, hidden}, make([]float32, 2*hidden))
	inits = append(inits, onnxgen.FloatTensor("classifier", []int64{hidden, int64(len(labels))}, w))
	return onnxgen.Graph{Name: "token-classification", Opset: 13, Inputs: io(),
		Outputs: []onnxgen.Value{{Name: "logits", Type: onnxgen.Float,
			Shape: []onnxgen.Dim{onnxgen.Dynamic("batch_size"), onnxgen.Dynamic("sequence_length"), onnxgen.Fixed(int64(len(labels)))}}},
		Initializers: inits, Nodes: nodes}, labels
}
