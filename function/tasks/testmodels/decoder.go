package testmodels

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sous-ai/sous/function/model/onnxgen"
)

// The test decoder: GPT-like, small.
const (
	decHidden = 32
	decHeads  = 2
	decLayers = 2
)

// Decoder writes dir/text-generation: a decoder-only model in Optimum's
// export form (input_ids, attention_mask, position_ids,
// past_key_values.{i}.key/value → logits, present.{i}.key/value; the first
// step passes zero-length pasts), 2 layers of causal multi-head attention
// over the past and the new tokens, with the attention mask honoured over
// both, and a vocabulary from tokenizerJSON. Weights are random (seeded):
// its text is nonsense, but deterministic, which is what tests of batching
// need.
func Decoder(dir string, tokenizerJSON []byte) error {
	return DecoderSized(dir, "text-generation", tokenizerJSON, decHidden, decLayers, decHeads)
}

// DecoderGQA writes dir/text-generation-gqa: the test decoder in the form
// ONNX Runtime GenAI's model builder gives (com.microsoft.GroupQueryAttention
// with 4 query heads sharing 2 key/value heads, past and present sharing one
// fixed buffer per sequence, seqlens_k and total_sequence_length computed
// from the attention mask in the graph), with a genai_config.json that says
// the buffer is shared and how long it is.
func DecoderGQA(dir string, tokenizerJSON []byte) error {
	return DecoderForm(dir, "text-generation-gqa", tokenizerJSON, decHidden, decLayers, 2*decHeads, decHeads, true)
}

// DecoderSized writes dir/name: the test decoder width wide, with layers
// layers of heads heads (for benchmarks: a decoder whose weights do not
// fit in cache, as a real one's do not).
func DecoderSized(dir, name string, tokenizerJSON []byte, width, layers, heads int) error {
	return DecoderForm(dir, name, tokenizerJSON, width, layers, heads, heads, false)
}

// DecoderForm writes dir/name: the test decoder with heads query heads and
// kvHeads key/value heads, in Optimum's form or (gqa) the
// GroupQueryAttention form. With kvHeads == heads both forms have the same
// weights, so they must generate the same tokens.
func DecoderForm(dir, name string, tokenizerJSON []byte, width, layers, heads, kvHeads int, gqa bool) error {
	v, err := vocabSize(tokenizerJSON)
	if err != nil {
		return err
	}
	if heads%kvHeads != 0 || width%heads != 0 || (!gqa && kvHeads != heads) {
		return fmt.Errorf("testmodels: width %d, %d heads, %d kv heads (gqa %v) do not fit", width, heads, kvHeads, gqa)
	}
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	g := decoder(v, width, layers, heads, kvHeads, gqa, nil)
	cfg, _ := json.MarshalIndent(map[string]any{"model_type": "gpt2", "n_layer": layers, "n_head": heads,
		"n_embd": width, "vocab_size": v, "eos_token_id": 102, "n_positions": positions, "architectures": []string{"GPT2LMHeadModel"}}, "", "  ")
	// ChatML, as many chat models ship it: prompts are rendered with it.
	tc, _ := json.MarshalIndent(map[string]any{"model_max_length": positions, "eos_token": "[SEP]",
		"chat_template": "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"}, "", "  ")
	files := map[string][]byte{"model.onnx": g.Marshal(), "tokenizer.json": tokenizerJSON, "config.json": cfg, "tokenizer_config.json": tc}
	if gqa {
		// As ONNX Runtime GenAI's builder writes it (the fields sous reads,
		// and the ones that describe the graph).
		files["genai_config.json"], _ = json.MarshalIndent(map[string]any{
			"model": map[string]any{"type": "gpt2", "context_length": positions, "eos_token_id": 102, "vocab_size": v,
				"decoder": map[string]any{"filename": "model.onnx", "head_size": width / heads, "hidden_size": width,
					"num_attention_heads": heads, "num_key_value_heads": kvHeads, "num_hidden_layers": layers,
					"inputs": map[string]any{"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
						"past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
					"outputs": map[string]any{"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"}}},
			"search": map[string]any{"max_length": gqaBuffer, "past_present_share_buffer": true}}, "", "  ")
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Fitted returns the ONNX bytes of the test decoder's graph (Optimum's
// form) with fitted weights, by initializer name: word_embeddings [vocab,
// width], position_embeddings [512, width], h{i}.ln_1.gamma/beta,
// h{i}.{query,key,value}.weight [width, width] and .bias,
// h{i}.attn.c_proj.weight/bias, h{i}.ln_2.gamma/beta,
// h{i}.mlp.c_fc.weight [width, 2 width] and .bias,
// h{i}.mlp.c_proj.weight [2 width, width] and .bias, ln_f.gamma/beta,
// lm_head [width, vocab]. Missing weights are drawn as the test decoder's
// are. The demo chat model is this graph, fitted (tools/chatmodel).
func Fitted(vocab int64, width, layers, heads int, weights map[string][]float32) []byte {
	g := decoder(vocab, width, layers, heads, heads, false, weights)
	g.Name = "chat"
	return g.Marshal()
}

// Positions is the test decoders' position table's length.
const Positions = positions

// gqaBuffer is the GQA test decoder's KV buffer per sequence, in positions.
const gqaBuffer = 256

func decoder(v int64, width, layers, heads, kvHeads int, gqa bool, weights map[string][]float32) onnxgen.Graph {
	hd := int64(width / heads)
	e := newEncoder("text-generation", v, width, layers, heads, 51)
	e.std = 0.3 // attention and context matter: a batching bug changes tokens
	for i := range e.word {
		if e.word[i] == 0 {
			e.word[i] = float32(e.r.NormFloat64() * 0.5)
		}
	}
	if weights != nil {
		e.weights = weights
		if w, ok := weights["word_embeddings"]; ok {
			if int64(len(w)) != v*int64(width) {
				panic(fmt.Sprintf("testmodels: fitted word_embeddings has %d values, want %d x %d", len(w), v, width))
			}
			e.word = w
		}
	}
	dyn := onnxgen.Dynamic
	e.g.Inputs = []onnxgen.Value{
		{Name: "input_ids", Type: onnxgen.Int64, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("sequence_length")}},
		{Name: "attention_mask", Type: onnxgen.Int64, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("past_sequence_length + sequence_length")}},
		{Name: "position_ids", Type: onnxgen.Int64, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("sequence_length")}},
	}
	kv := []onnxgen.Dim{dyn("batch_size"), onnxgen.Fixed(int64(kvHeads)), dyn("past_sequence_length"), onnxgen.Fixed(hd)}
	kvOut := []onnxgen.Dim{dyn("batch_size"), onnxgen.Fixed(int64(kvHeads)), dyn("past_sequence_length + sequence_length"), onnxgen.Fixed(hd)}
	if gqa { // one buffer, past and present
		kv = []onnxgen.Dim{dyn("batch_size"), onnxgen.Fixed(int64(kvHeads)), dyn("max_sequence_length"), onnxgen.Fixed(hd)}
		kvOut = kv
	}
	e.g.Outputs = []onnxgen.Value{{Name: "logits", Type: onnxgen.Float, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("sequence_length"), onnxgen.Fixed(v)}}}
	for l := range layers {
		for _, kind := range []string{"key", "value"} {
			e.g.Inputs = append(e.g.Inputs, onnxgen.Value{Name: fmt.Sprintf("past_key_values.%d.%s", l, kind), Type: onnxgen.Float, Shape: kv})
			e.g.Outputs = append(e.g.Outputs, onnxgen.Value{Name: fmt.Sprintf("present.%d.%s", l, kind), Type: onnxgen.Float, Shape: kvOut})
		}
	}

	w := int64(width)
	i64 := func(name string, dims []int64, vals ...int64) {
		e.g.Initializers = append(e.g.Initializers, onnxgen.Int64Tensor(name, dims, vals))
	}
	e.constants(hd)
	i64("axes0", []int64{1}, 0)
	e.g.Initializers = append(e.g.Initializers, onnxgen.FloatTensor("word_embeddings", []int64{v, w}, e.word))
	e.random("position_embeddings", []int64{positions, w}, 0.1, false)

	e.node("Gather", []string{"word_embeddings", "input_ids"}, "words")
	e.node("Gather", []string{"position_embeddings", "position_ids"}, "positions")
	e.node("Add", []string{"words", "positions"}, "x0")

	if gqa {
		// What GroupQueryAttention takes besides Q, K, V: each row's last
		// position (its ones in the mask, less one) and the batch's total
		// length, as the GenAI builder computes them.
		e.node("ReduceSum", []string{"attention_mask", "axes1"}, "mask_sum", onnxgen.Attr{Name: "keepdims", Kind: onnxgen.AttrInt, Int: 0})
		e.node("Sub", []string{"mask_sum", "one"}, "seqlens64")
		e.node("Cast", []string{"seqlens64"}, "seqlens_k", onnxgen.Attr{Name: "to", Kind: onnxgen.AttrInt, Int: onnxgen.Int32})
		e.node("Shape", []string{"attention_mask"}, "mask_shape")
		e.node("Gather", []string{"mask_shape", "one"}, "total_len")
		e.node("Cast", []string{"total_len"}, "total_sequence_length", onnxgen.Attr{Name: "to", Kind: onnxgen.AttrInt, Int: onnxgen.Int32})
	} else {
		// Padding: -10000 on every key position the attention mask zeroes,
		// past or new. [B, 1, 1, P+S]
		e.node("Cast", []string{"attention_mask"}, "maskf", onnxgen.Attr{Name: "to", Kind: onnxgen.AttrInt, Int: onnxgen.Float})
		e.node("Sub", []string{"one_f", "maskf"}, "unmask")
		e.node("Mul", []string{"unmask", "neg"}, "pad_bias2")
		e.node("Unsqueeze", []string{"pad_bias2", "axes12"}, "pad_bias")
		// Causality: new token i (at key position P+i) sees keys 0..P+i.
		// [S, P+S], broadcast over batch and heads.
		e.node("Shape", []string{"input_ids"}, "ids_shape")
		e.node("Gather", []string{"ids_shape", "one"}, "seq_len")
		e.node("Shape", []string{"attention_mask"}, "mask_shape")
		e.node("Gather", []string{"mask_shape", "one"}, "total_len")
		e.node("Sub", []string{"total_len", "seq_len"}, "past_len")
		e.node("Range", []string{"past_len", "total_len", "one"}, "q_pos")
		e.node("Unsqueeze", []string{"q_pos", "axes1"}, "q_pos2") // [S, 1]
		e.node("Range", []string{"zero", "total_len", "one"}, "k_pos")
		e.node("Unsqueeze", []string{"k_pos", "axes0"}, "k_pos2") // [1, P+S]
		e.node("Greater", []string{"k_pos2", "q_pos2"}, "future")
		e.node("Cast", []string{"future"}, "futuref", onnxgen.Attr{Name: "to", Kind: onnxgen.AttrInt, Int: onnxgen.Float})
		e.node("Mul", []string{"futuref", "neg"}, "causal_bias")
		e.node("Add", []string{"pad_bias", "causal_bias"}, "attn_bias") // [B, 1, S, P+S]
	}

	perm := func(p ...int64) onnxgen.Attr { return onnxgen.Attr{Name: "perm", Kind: onnxgen.AttrInts, Ints: p} }
	x := "x0"
	kvWidth := kvHeads * int(hd)
	for l := range layers {
		p := fmt.Sprintf("h%d", l)
		pastK, pastV := fmt.Sprintf("past_key_values.%d.key", l), fmt.Sprintf("past_key_values.%d.value", l)
		presentK, presentV := fmt.Sprintf("present.%d.key", l), fmt.Sprintf("present.%d.value", l)
		e.layerNorm(x, p+".ln_1", p+".in")
		e.linear(p+".in", p+".query", width, width, p+".query.out")
		e.linear(p+".in", p+".key", width, kvWidth, p+".key.out")
		e.linear(p+".in", p+".value", width, kvWidth, p+".value.out")
		if gqa {
			e.g.Nodes = append(e.g.Nodes, onnxgen.Node{Op: "GroupQueryAttention", Domain: onnxgen.MSDomain,
				Inputs:  []string{p + ".query.out", p + ".key.out", p + ".value.out", pastK, pastV, "seqlens_k", "total_sequence_length"},
				Outputs: []string{p + ".ctx", presentK, presentV},
				Attrs: []onnxgen.Attr{{Name: "num_heads", Kind: onnxgen.AttrInt, Int: int64(heads)},
					{Name: "kv_num_heads", Kind: onnxgen.AttrInt, Int: int64(kvHeads)}}})
		} else {
			for _, m := range []string{"query", "key", "value"} {
				e.node("Reshape", []string{p + "." + m + ".out", "heads_shape"}, p+"."+m+".heads")
			}
			e.node("Transpose", []string{p + ".query.heads"}, p+".q", perm(0, 2, 1, 3))
			e.node("Transpose", []string{p + ".key.heads"}, p+".k_new", perm(0, 2, 1, 3))
			e.node("Transpose", []string{p + ".value.heads"}, p+".v_new", perm(0, 2, 1, 3))
			axis2 := onnxgen.Attr{Name: "axis", Kind: onnxgen.AttrInt, Int: 2}
			e.g.Nodes = append(e.g.Nodes,
				onnxgen.Node{Op: "Concat", Inputs: []string{pastK, p + ".k_new"}, Outputs: []string{presentK}, Attrs: []onnxgen.Attr{axis2}},
				onnxgen.Node{Op: "Concat", Inputs: []string{pastV, p + ".v_new"}, Outputs: []string{presentV}, Attrs: []onnxgen.Attr{axis2}})
			e.node("Transpose", []string{presentK}, p+".kT", perm(0, 1, 3, 2))
			e.node("MatMul", []string{p + ".q", p + ".kT"}, p+".scores0")
			e.node("Mul", []string{p + ".scores0", "scale"}, p+".scores1")
			e.node("Add", []string{p + ".scores1", "attn_bias"}, p+".scores")
			e.node("Softmax", []string{p + ".scores"}, p+".probs", onnxgen.Attr{Name: "axis", Kind: onnxgen.AttrInt, Int: -1})
			e.node("MatMul", []string{p + ".probs", presentV}, p+".ctx0")
			e.node("Transpose", []string{p + ".ctx0"}, p+".ctx1", perm(0, 2, 1, 3))
			e.node("Reshape", []string{p + ".ctx1", "merged_shape"}, p+".ctx")
		}
		e.linear(p+".ctx", p+".attn.c_proj", width, width, p+".attn")
		e.node("Add", []string{x, p + ".attn"}, p+".res1")
		e.layerNorm(p+".res1", p+".ln_2", p+".mid")
		e.linear(p+".mid", p+".mlp.c_fc", width, 2*width, p+".h")
		e.node("Mul", []string{p + ".h", "rsqrt2"}, p+".hs")
		e.node("Erf", []string{p + ".hs"}, p+".erf")
		e.node("Add", []string{p + ".erf", "one_f"}, p+".erf1")
		e.node("Mul", []string{p + ".h", p + ".erf1"}, p+".gelu0")
		e.node("Mul", []string{p + ".gelu0", "half"}, p+".gelu")
		e.linear(p+".gelu", p+".mlp.c_proj", 2*width, width, p+".ffn")
		e.node("Add", []string{p + ".res1", p + ".ffn"}, p+".out")
		x = p + ".out"
	}
	e.layerNorm(x, "ln_f", "final")
	e.random("lm_head", []int64{w, v}, 0.5, false)
	e.node("MatMul", []string{"final", "lm_head"}, "logits")
	return e.g
}
