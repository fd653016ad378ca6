package testmodels

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/sous-ai/sous/function/model/onnxgen"
)

// The Llama-architecture test decoder: small layers over a real vocabulary.
const (
	// LLMVocab is Qwen3's tokenizer size with its added tokens: the
	// logits' width (real Qwen3 pads to 151,936; with random weights
	// padded ids would be generated, so the test model does not pad).
	LLMVocab   = 151669
	LLMHidden  = 64
	LLMLayers  = 2
	LLMHeads   = 8
	LLMKVHeads = 2
	// LLMHeadDim is config.json's head_dim, wider than hidden / heads (as
	// Qwen3's is): GroupQueryAttention's rotary needs a multiple of 16.
	LLMHeadDim = 16
	llmInter   = 128
	// LLMMaxPositions is config.json's max_position_embeddings.
	LLMMaxPositions = 2048
	// LLMGenAIBuffer is the GenAI form's KV buffer per sequence, in
	// positions (genai_config.json's search.max_length).
	LLMGenAIBuffer = 512
	llmTheta       = 10000
	llmEps         = 1e-6
	llmBOS         = 151643 // <|endoftext|>
	llmEOS         = 151645 // <|im_end|>
)

// LLMEOS is generation_config.json's eos_token_id: <|im_end|> and
// <|endoftext|>, as Qwen3 lists them.
var LLMEOS = []int64{llmEOS, llmBOS}

// LLMVariant is one ONNX file of the test decoder, as an exporter writes it.
type LLMVariant struct {
	// DType is transformers.js's name for it (fp32, fp16, q8, q4).
	DType string
	// File is its path in the model directory.
	File string
	// Compute is the element type of its weights and activations, KV the
	// type of its past/present and logits (onnxgen.Float or Float16).
	Compute, KV int
	// Upcast: RMSNorm, rotary and softmax in float32 inside a float16
	// graph, as PyTorch's fp16 models compute them and so export them.
	Upcast bool
	// Quant is "", "q4" (com.microsoft.MatMulNBits, 4 bits, block 32,
	// symmetric: MatMul4BitsQuantizer's form) or "q8" (dynamic int8:
	// DynamicQuantizeLinear + MatMulInteger with per-tensor int8 weights,
	// and the embedding's Gather on int8 then DequantizeLinear: ONNX
	// Runtime's quantize_dynamic as transformers.js's quantize.py runs it).
	Quant string
	// GQA: com.microsoft.GroupQueryAttention with one KV buffer shared by
	// past and present (ONNX Runtime GenAI's form).
	GQA bool
	// External: weights in File + "_data" beside the graph.
	External bool
	// LogitsToKeep: a scalar int64 input num_logits_to_keep, the logits
	// computed for that many last positions (0: all), which
	// transformers.js feeds 1 while generating.
	LogitsToKeep bool
}

// LLMVariants are the onnx-community layout's files (testdata/models/llm),
// each with num_logits_to_keep: fp32; fp16 as transformers.js converts it
// (float16 weights and activations, float32 inputs and outputs with Casts
// at the edges: keep_io_types); q8; q4; q4f16 (q4, then the float16
// conversion, as quantize.py chains them: float16 scales and activations).
var LLMVariants = []LLMVariant{
	{DType: "fp32", File: "onnx/model.onnx", Compute: onnxgen.Float, KV: onnxgen.Float, LogitsToKeep: true},
	{DType: "fp16", File: "onnx/model_fp16.onnx", Compute: onnxgen.Float16, KV: onnxgen.Float, LogitsToKeep: true},
	{DType: "q8", File: "onnx/model_quantized.onnx", Compute: onnxgen.Float, KV: onnxgen.Float, Quant: "q8", LogitsToKeep: true},
	{DType: "q4", File: "onnx/model_q4.onnx", Compute: onnxgen.Float, KV: onnxgen.Float, Quant: "q4", LogitsToKeep: true},
	{DType: "q4f16", File: "onnx/model_q4f16.onnx", Compute: onnxgen.Float16, KV: onnxgen.Float, Quant: "q4", LogitsToKeep: true},
}

// LLMFP16 is the Optimum-style float16 export (testdata/models/llm-fp16):
// KV and logits are float16 tensors, weights in external data.
var LLMFP16 = LLMVariant{DType: "fp16", File: "model.onnx", Compute: onnxgen.Float16, KV: onnxgen.Float16, Upcast: true, External: true}

// LLMGenAI is ONNX Runtime GenAI's form (testdata/models/llm-genai).
var LLMGenAI = LLMVariant{DType: "fp32", File: "model.onnx", Compute: onnxgen.Float, KV: onnxgen.Float, GQA: true}

// LLM writes dir/llm (the onnx-community layout, every LLMVariants file),
// dir/llm-fp16 and dir/llm-genai: the same weights, a Llama-architecture
// decoder (RMSNorm, rotary positions computed in the graph from
// position_ids, SwiGLU, LLMHeads query heads over LLMKVHeads KV heads,
// tied input and output embeddings), with qwen3Dir's tokenizer.json and
// tokenizer_config.json (Qwen3's, with its chat template). Output is
// deterministic.
func LLM(dir, qwen3Dir string) error {
	tok, err := os.ReadFile(filepath.Join(qwen3Dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	tc, err := os.ReadFile(filepath.Join(qwen3Dir, "tokenizer_config.json"))
	if err != nil {
		return err
	}
	w := newLLMWeights()
	for _, d := range []struct {
		name     string
		variants []LLMVariant
	}{{"llm", LLMVariants}, {"llm-fp16", []LLMVariant{LLMFP16}}, {"llm-genai", []LLMVariant{LLMGenAI}}} {
		files := map[string][]byte{"tokenizer.json": tok, "tokenizer_config.json": tc,
			"config.json": llmConfig(), "generation_config.json": llmGenerationConfig()}
		for _, v := range d.variants {
			g := w.graph(v)
			if v.External {
				m, data := g.MarshalExternal(filepath.Base(v.File)+"_data", 1024)
				files[v.File], files[v.File+"_data"] = m, data
			} else {
				files[v.File] = g.Marshal()
			}
		}
		if d.name == "llm-genai" {
			files["genai_config.json"] = llmGenAIConfig()
		}
		for name, b := range files {
			p := filepath.Join(dir, d.name, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func marshalJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

func llmConfig() []byte {
	return marshalJSON(map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": LLMHidden, "intermediate_size": llmInter, "num_hidden_layers": LLMLayers,
		"num_attention_heads": LLMHeads, "num_key_value_heads": LLMKVHeads, "head_dim": LLMHeadDim,
		"max_position_embeddings": LLMMaxPositions, "rms_norm_eps": llmEps, "rope_theta": llmTheta,
		"hidden_act": "silu", "vocab_size": LLMVocab, "tie_word_embeddings": true,
		"bos_token_id": llmBOS, "eos_token_id": llmEOS, "torch_dtype": "float32",
	})
}

// llmGenerationConfig is Qwen3's: sampling by default, two EOS ids.
func llmGenerationConfig() []byte {
	return marshalJSON(map[string]any{"bos_token_id": llmBOS, "eos_token_id": LLMEOS, "pad_token_id": llmBOS,
		"do_sample": true, "temperature": 0.6, "top_k": 20, "top_p": 0.95})
}

func llmGenAIConfig() []byte {
	return marshalJSON(map[string]any{
		"model": map[string]any{"type": "llama", "context_length": LLMMaxPositions, "bos_token_id": llmBOS,
			"eos_token_id": LLMEOS, "pad_token_id": llmBOS, "vocab_size": LLMVocab,
			"decoder": map[string]any{"filename": "model.onnx", "head_size": LLMHeadDim, "hidden_size": LLMHidden,
				"num_attention_heads": LLMHeads, "num_key_value_heads": LLMKVHeads, "num_hidden_layers": LLMLayers,
				"session_options": map[string]any{"log_id": "onnxruntime-genai", "provider_options": []any{}},
				"inputs": map[string]any{"input_ids": "input_ids", "attention_mask": "attention_mask",
					"past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
				"outputs": map[string]any{"logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value"}}},
		"search": map[string]any{"max_length": LLMGenAIBuffer, "past_present_share_buffer": true, "do_sample": false,
			"num_beams": 1, "top_k": 1, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.0}})
}

// llmWeights are the decoder's float32 weights, MatMul's B layout ([in,
// out]); every variant is written from them.
type llmWeights struct {
	embed  []float32 // [vocab, hidden]
	head   []float32 // [hidden, vocab]: the embedding's transpose
	layers []llmLayer
	norm   []float32
	// tensors: initializers already encoded, by name and element type,
	// shared by the variants (the same name always holds the same
	// weight): the 151,669-row ones are slow to encode again.
	tensors map[string]onnxgen.Tensor
	scales  map[string][]float32 // the 4-bit form's, by weight name
}

// tensor returns the initializer name of type typ, made by make the first
// time only.
func (w *llmWeights) tensor(name string, typ int, make func() onnxgen.Tensor) onnxgen.Tensor {
	key := fmt.Sprint(name, "/", typ)
	t, ok := w.tensors[key]
	if !ok {
		t = make()
		w.tensors[key] = t
	}
	return t
}

type llmLayer struct {
	inNorm, postNorm           []float32
	q, k, v, o, gate, up, down []float32
}

func newLLMWeights() *llmWeights {
	r := rand.New(rand.NewPCG(61, 7))
	normal := func(n int, std float64) []float32 {
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(r.NormFloat64() * std)
		}
		return w
	}
	norm := func() []float32 { // near 1, as trained norms are
		w := normal(LLMHidden, 0.1)
		for i := range w {
			w[i]++
		}
		return w
	}
	h := LLMHidden
	q, kv := LLMHeads*LLMHeadDim, LLMKVHeads*LLMHeadDim
	// Weights large enough that attention and the context move the
	// logits: a wrong position, mask or cache changes tokens.
	w := &llmWeights{embed: normal(LLMVocab*h, 1), tensors: map[string]onnxgen.Tensor{}, scales: map[string][]float32{}}
	for range LLMLayers {
		w.layers = append(w.layers, llmLayer{
			inNorm: norm(), postNorm: norm(),
			q: normal(h*q, 1.5/math.Sqrt(float64(h))), k: normal(h*kv, 1.5/math.Sqrt(float64(h))),
			v: normal(h*kv, 1/math.Sqrt(float64(h))), o: normal(q*h, 3/math.Sqrt(float64(q))),
			gate: normal(h*llmInter, 1/math.Sqrt(float64(h))), up: normal(h*llmInter, 1/math.Sqrt(float64(h))),
			down: normal(llmInter*h, 3/math.Sqrt(float64(llmInter))),
		})
	}
	// Random signs: with tied embeddings the last token's own embedding
	// would otherwise win every step.
	w.norm = normal(LLMHidden, 1)
	w.head = transpose(w.embed, LLMVocab, LLMHidden)
	return w
}

// llmBuilder writes one variant's graph.
type llmBuilder struct {
	g onnxgen.Graph
	v LLMVariant
	w *llmWeights
	// dq: the DynamicQuantizeLinear outputs per float input (q8), one per
	// input however many MatMuls read it, as ONNX Runtime's quantizer
	// writes them.
	dq map[string][3]string
}

func (b *llmBuilder) node(op string, ins []string, out string, attrs ...onnxgen.Attr) string {
	b.g.Nodes = append(b.g.Nodes, onnxgen.Node{Op: op, Inputs: ins, Outputs: []string{out}, Attrs: attrs})
	return out
}

// float adds a float initializer of the compute type (or float32 with
// f32).
func (b *llmBuilder) float(name string, dims []int64, data []float32, f32 bool) string {
	if b.v.Compute == onnxgen.Float16 && !f32 {
		b.g.Initializers = append(b.g.Initializers, b.w.tensor(name, onnxgen.Float16, func() onnxgen.Tensor {
			// As transformers.js's float16 conversion clamps: to the
			// largest finite half.
			c := make([]float32, len(data))
			for i, x := range data {
				c[i] = max(-65504, min(65504, x))
			}
			return onnxgen.Float16Tensor(name, dims, c)
		}))
	} else {
		b.g.Initializers = append(b.g.Initializers, b.w.tensor(name, onnxgen.Float, func() onnxgen.Tensor {
			return onnxgen.FloatTensor(name, dims, data)
		}))
	}
	return name
}

func (b *llmBuilder) ints(name string, v ...int64) string {
	b.g.Initializers = append(b.g.Initializers, onnxgen.Int64Tensor(name, []int64{int64(len(v))}, v))
	return name
}

func (b *llmBuilder) cast(in, out string, to int) string {
	return b.node("Cast", []string{in}, out, onnxgen.IntAttr("to", int64(to)))
}

// matmul is x [.., k] times the weight w [k, n], as the variant writes a
// MatMul with a constant B.
func (b *llmBuilder) matmul(x, name string, w []float32, k, n int) string {
	out := name + "/MatMul_output_0"
	switch b.v.Quant {
	case "q4":
		blocks := int64((k + 31) / 32)
		q := b.w.tensor(name+".weight_Q4", onnxgen.Uint8, func() onnxgen.Tensor {
			packed, scales := quantize4(w, k, n)
			b.w.scales[name] = scales
			return onnxgen.Uint8Tensor(name+".weight_Q4", []int64{int64(n), blocks, 16}, packed)
		})
		b.g.Initializers = append(b.g.Initializers, q)
		b.float(name+".weight_scales", []int64{int64(n) * blocks}, b.w.scales[name], false)
		b.g.Nodes = append(b.g.Nodes, onnxgen.Node{Op: "MatMulNBits", Domain: onnxgen.MSDomain,
			Inputs: []string{x, name + ".weight_Q4", name + ".weight_scales"}, Outputs: []string{out},
			Attrs: []onnxgen.Attr{onnxgen.IntAttr("K", int64(k)), onnxgen.IntAttr("N", int64(n)),
				onnxgen.IntAttr("bits", 4), onnxgen.IntAttr("block_size", 32)}})
		return out
	case "q8":
		q, scale := quantize8(w)
		wq, ws, wz := name+".weight_quantized", name+".weight_scale", name+".weight_zero_point"
		b.g.Initializers = append(b.g.Initializers, onnxgen.Int8Tensor(wq, []int64{int64(k), int64(n)}, q),
			onnxgen.FloatTensor(ws, nil, []float32{scale}), onnxgen.Int8Tensor(wz, nil, []int8{0}))
		xq, ok := b.dq[x]
		if !ok {
			xq = [3]string{x + "_quantized", x + "_scale", x + "_zero_point"}
			b.g.Nodes = append(b.g.Nodes, onnxgen.Node{Op: "DynamicQuantizeLinear", Inputs: []string{x}, Outputs: xq[:]})
			b.dq[x] = xq
		}
		b.node("MatMulInteger", []string{xq[0], wq, xq[2], wz}, out+"_quantized")
		b.cast(out+"_quantized", out+"_quantized_cast_output", onnxgen.Float)
		b.node("Mul", []string{xq[1], ws}, out+"_scales_mul")
		return b.node("Mul", []string{out + "_quantized_cast_output", out + "_scales_mul"}, out)
	}
	b.float(name+".weight", []int64{int64(k), int64(n)}, w, false)
	return b.node("MatMul", []string{x, name + ".weight"}, out)
}

// rmsNorm as PyTorch's LlamaRMSNorm exports: x · 1/sqrt(mean(x²) + eps)
// · weight (in float32 when the variant upcasts).
func (b *llmBuilder) rmsNorm(x, name string, w []float32) string {
	f32 := b.v.Upcast
	in := x
	if f32 {
		in = b.cast(x, name+"/Cast_output_0", onnxgen.Float)
	}
	sfx := ""
	if f32 || b.v.Compute == onnxgen.Float {
		sfx = "_f32"
	}
	two, eps, one := "const_two"+sfx, "const_eps"+sfx, "const_one"+sfx
	b.node("Pow", []string{in, two}, name+"/Pow_output_0")
	b.node("ReduceMean", []string{name + "/Pow_output_0"}, name+"/ReduceMean_output_0", onnxgen.IntsAttr("axes", -1), onnxgen.IntAttr("keepdims", 1))
	b.node("Add", []string{name + "/ReduceMean_output_0", eps}, name+"/Add_output_0")
	b.node("Sqrt", []string{name + "/Add_output_0"}, name+"/Sqrt_output_0")
	b.node("Div", []string{one, name + "/Sqrt_output_0"}, name+"/Div_output_0")
	y := b.node("Mul", []string{in, name + "/Div_output_0"}, name+"/Mul_output_0")
	if f32 {
		y = b.cast(y, name+"/Cast_1_output_0", b.v.Compute)
	}
	b.float(name+".weight", []int64{LLMHidden}, w, false)
	return b.node("Mul", []string{name + ".weight", y}, name+"/Mul_1_output_0")
}

// rotate applies the rotary embedding to x [B, heads, S, head_dim]:
// x·cos + rotate_half(x)·sin.
func (b *llmBuilder) rotate(x, name string) string {
	b.node("Slice", []string{x, "rot_start0", "rot_half", "rot_axis"}, name+"/Slice_output_0")
	b.node("Slice", []string{x, "rot_half", "rot_end", "rot_axis"}, name+"/Slice_1_output_0")
	b.node("Neg", []string{name + "/Slice_1_output_0"}, name+"/Neg_output_0")
	b.node("Concat", []string{name + "/Neg_output_0", name + "/Slice_output_0"}, name+"/Concat_output_0", onnxgen.IntAttr("axis", -1))
	b.node("Mul", []string{x, "cos"}, name+"/Mul_output_0")
	b.node("Mul", []string{name + "/Concat_output_0", "sin"}, name+"/Mul_1_output_0")
	return b.node("Add", []string{name + "/Mul_output_0", name + "/Mul_1_output_0"}, name+"/Add_output_0")
}

func (w *llmWeights) graph(v LLMVariant) onnxgen.Graph {
	if v.GQA {
		return w.graphGQA(v)
	}
	b := &llmBuilder{v: v, w: w, dq: map[string][3]string{}}
	b.g = onnxgen.Graph{Name: "main_graph", Opset: 17}
	dyn := onnxgen.Dynamic
	b.g.Inputs = []onnxgen.Value{
		{Name: "input_ids", Type: onnxgen.Int64, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("sequence_length")}},
		{Name: "attention_mask", Type: onnxgen.Int64, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("past_sequence_length + sequence_length")}},
		{Name: "position_ids", Type: onnxgen.Int64, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("sequence_length")}},
	}
	kvIn := []onnxgen.Dim{dyn("batch_size"), onnxgen.Fixed(LLMKVHeads), dyn("past_sequence_length"), onnxgen.Fixed(LLMHeadDim)}
	kvOut := []onnxgen.Dim{dyn("batch_size"), onnxgen.Fixed(LLMKVHeads), dyn("past_sequence_length + sequence_length"), onnxgen.Fixed(LLMHeadDim)}
	logitsLen := dyn("sequence_length")
	if v.LogitsToKeep {
		logitsLen = dyn("logits_sequence_length")
	}
	b.g.Outputs = []onnxgen.Value{{Name: "logits", Type: v.KV, Shape: []onnxgen.Dim{dyn("batch_size"), logitsLen, onnxgen.Fixed(LLMVocab)}}}
	for l := range LLMLayers {
		for _, kind := range []string{"key", "value"} {
			b.g.Inputs = append(b.g.Inputs, onnxgen.Value{Name: fmt.Sprintf("past_key_values.%d.%s", l, kind), Type: v.KV, Shape: kvIn})
			b.g.Outputs = append(b.g.Outputs, onnxgen.Value{Name: fmt.Sprintf("present.%d.%s", l, kind), Type: v.KV, Shape: kvOut})
		}
	}
	if v.LogitsToKeep {
		b.g.Inputs = append(b.g.Inputs, onnxgen.Value{Name: "num_logits_to_keep", Type: onnxgen.Int64})
	}
	b.constants()
	x := b.embed(w)

	// The mask: key j is seen by new token i (at position past+i) when
	// j <= past+i and attention_mask[j] is 1. [B, 1, S, past+S], bool.
	b.cast("attention_mask", "mask_bool", onnxgen.Bool)
	b.node("Unsqueeze", []string{"mask_bool", "axes_1_2"}, "mask_4d")
	b.node("Shape", []string{"input_ids"}, "ids_shape")
	b.node("Gather", []string{"ids_shape", "i_one"}, "seq_len")
	b.node("Shape", []string{"attention_mask"}, "mask_shape")
	b.node("Gather", []string{"mask_shape", "i_one"}, "total_len")
	b.node("Sub", []string{"total_len", "seq_len"}, "past_len")
	b.node("Range", []string{"past_len", "total_len", "i_one"}, "q_pos")
	b.node("Unsqueeze", []string{"q_pos", "axes_1"}, "q_pos_2d")
	b.node("Range", []string{"i_zero", "total_len", "i_one"}, "k_pos")
	b.node("Unsqueeze", []string{"k_pos", "axes_0"}, "k_pos_2d")
	b.node("LessOrEqual", []string{"k_pos_2d", "q_pos_2d"}, "causal")
	b.node("And", []string{"mask_4d", "causal"}, "attn_allowed")

	b.rotaryTables()

	for l, lw := range w.layers {
		p := fmt.Sprintf("model.layers.%d", l)
		h := b.rmsNorm(x, p+".input_layernorm", lw.inNorm)
		ctx := b.attention(h, p+".self_attn", l, lw)
		x = b.node("Add", []string{x, ctx}, p+"/Add_output_0")
		h = b.rmsNorm(x, p+".post_attention_layernorm", lw.postNorm)
		x = b.node("Add", []string{x, b.mlp(h, p+".mlp", lw)}, p+"/Add_1_output_0")
	}
	x = b.rmsNorm(x, "model.norm", w.norm)
	if v.LogitsToKeep { // the last num_logits_to_keep positions; 0 keeps all
		b.node("Neg", []string{"num_logits_to_keep"}, "logits_to_keep/Neg_output_0")
		b.node("Unsqueeze", []string{"logits_to_keep/Neg_output_0", "axes_0"}, "logits_to_keep/start")
		x = b.node("Slice", []string{x, "logits_to_keep/start", b.ints("logits_to_keep/end", math.MaxInt64), "axes_1"}, "logits_to_keep/Slice_output_0")
	}
	logits := "logits"
	if v.KV != v.Compute {
		logits = "logits_" + typeName(v.Compute)
	}
	// The tied LM head: the embedding's transpose, a weight of its own as
	// exporters write a tied Linear (quantizers then treat it as any
	// MatMul's).
	out := b.matmul(x, "lm_head", w.head, LLMHidden, LLMVocab)
	b.node("Identity", []string{out}, logits)
	if v.KV != v.Compute {
		b.cast(logits, "logits", v.KV)
	}
	return b.g
}

func typeName(t int) string {
	if t == onnxgen.Float16 {
		return "fp16"
	}
	return "fp32"
}

// constants: scalars every form uses.
func (b *llmBuilder) constants() {
	i64 := func(name string, v int64) {
		b.g.Initializers = append(b.g.Initializers, onnxgen.Int64Tensor(name, nil, []int64{v}))
	}
	i64("i_zero", 0)
	i64("i_one", 1)
	neg := float32(-math.MaxFloat32) // torch.finfo(dtype).min, as masks use
	if b.v.Compute == onnxgen.Float16 {
		neg = -65504
	}
	b.float("mask_min", nil, []float32{neg}, false)
	b.float("attn_scale", nil, []float32{float32(1 / math.Sqrt(LLMHeadDim))}, false)
	if b.v.Upcast || b.v.Compute == onnxgen.Float {
		b.float("const_two_f32", nil, []float32{2}, true)
		b.float("const_eps_f32", nil, []float32{llmEps}, true)
		b.float("const_one_f32", nil, []float32{1}, true)
	}
	if b.v.Compute == onnxgen.Float16 && !b.v.Upcast {
		b.float("const_two", nil, []float32{2}, false)
		b.float("const_eps", nil, []float32{llmEps}, false)
		b.float("const_one", nil, []float32{1}, false)
	}
	b.ints("heads_shape", 0, 0, LLMHeads, LLMHeadDim)
	b.ints("kv_heads_shape", 0, 0, LLMKVHeads, LLMHeadDim)
	b.ints("merged_shape", 0, 0, LLMHeads*LLMHeadDim)
	b.ints("repeat_shape", 1, 1, LLMHeads/LLMKVHeads, 1, 1)
	b.ints("repeated_shape", 0, LLMHeads, -1, LLMHeadDim)
	b.ints("rot_start0", 0)
	b.ints("rot_half", LLMHeadDim/2)
	b.ints("rot_end", LLMHeadDim)
	b.ints("rot_axis", 3)
	b.ints("axes_0", 0)
	b.ints("axes_1", 1)
	b.ints("axes_2", 2)
	b.ints("axes_1_2", 1, 2)
}

// embed: the token embedding's Gather (on int8 and dequantized for q8, as
// the dynamic quantizer writes a Gather of a constant).
func (b *llmBuilder) embed(w *llmWeights) string {
	const name = "model.embed_tokens.weight"
	if b.v.Quant == "q8" {
		q, scale := quantize8(w.embed)
		b.g.Initializers = append(b.g.Initializers, onnxgen.Int8Tensor(name+"_quantized", []int64{LLMVocab, LLMHidden}, q),
			onnxgen.FloatTensor(name+"_scale", nil, []float32{scale}), onnxgen.Int8Tensor(name+"_zero_point", nil, []int8{0}))
		b.node("Gather", []string{name + "_quantized", "input_ids"}, "model.embed_tokens/Gather_output_0_quantized")
		return b.node("DequantizeLinear", []string{"model.embed_tokens/Gather_output_0_quantized", name + "_scale", name + "_zero_point"}, "model.embed_tokens/Gather_output_0")
	}
	b.float(name, []int64{LLMVocab, LLMHidden}, w.embed, false)
	return b.node("Gather", []string{name, "input_ids"}, "model.embed_tokens/Gather_output_0")
}

// rotaryTables: cos and sin [B, 1, S, head_dim] of position_ids times the
// inverse frequencies, as LlamaRotaryEmbedding computes them in the graph.
func (b *llmBuilder) rotaryTables() {
	inv := make([]float32, LLMHeadDim/2)
	for i := range inv {
		inv[i] = float32(1 / math.Pow(llmTheta, float64(2*i)/LLMHeadDim))
	}
	t := b.v.Compute
	if b.v.Upcast {
		t = onnxgen.Float
	}
	b.float("model.rotary_emb.inv_freq", []int64{int64(len(inv))}, inv, t == onnxgen.Float)
	b.cast("position_ids", "rotary/positions", t)
	b.node("Unsqueeze", []string{"rotary/positions", "axes_2"}, "rotary/positions_3d")
	b.node("Mul", []string{"rotary/positions_3d", "model.rotary_emb.inv_freq"}, "rotary/freqs")
	b.node("Concat", []string{"rotary/freqs", "rotary/freqs"}, "rotary/emb", onnxgen.IntAttr("axis", -1))
	cos, sin := b.node("Cos", []string{"rotary/emb"}, "rotary/cos"), b.node("Sin", []string{"rotary/emb"}, "rotary/sin")
	if b.v.Upcast {
		cos, sin = b.cast(cos, "rotary/cos_half", b.v.Compute), b.cast(sin, "rotary/sin_half", b.v.Compute)
	}
	b.node("Unsqueeze", []string{cos, "axes_1"}, "cos")
	b.node("Unsqueeze", []string{sin, "axes_1"}, "sin")
}

func (b *llmBuilder) attention(h, p string, l int, lw llmLayer) string {
	q := b.matmul(h, p+".q_proj", lw.q, LLMHidden, LLMHeads*LLMHeadDim)
	k := b.matmul(h, p+".k_proj", lw.k, LLMHidden, LLMKVHeads*LLMHeadDim)
	v := b.matmul(h, p+".v_proj", lw.v, LLMHidden, LLMKVHeads*LLMHeadDim)
	perm := onnxgen.IntsAttr("perm", 0, 2, 1, 3)
	b.node("Reshape", []string{q, "heads_shape"}, p+"/Reshape_output_0")
	b.node("Transpose", []string{p + "/Reshape_output_0"}, p+"/q", perm)
	b.node("Reshape", []string{k, "kv_heads_shape"}, p+"/Reshape_1_output_0")
	b.node("Transpose", []string{p + "/Reshape_1_output_0"}, p+"/k", perm)
	b.node("Reshape", []string{v, "kv_heads_shape"}, p+"/Reshape_2_output_0")
	b.node("Transpose", []string{p + "/Reshape_2_output_0"}, p+"/v", perm)
	qr := b.rotate(p+"/q", p+"/rotary_q")
	kr := b.rotate(p+"/k", p+"/rotary_k")

	pastK, pastV := fmt.Sprintf("past_key_values.%d.key", l), fmt.Sprintf("past_key_values.%d.value", l)
	presentK, presentV := fmt.Sprintf("present.%d.key", l), fmt.Sprintf("present.%d.value", l)
	keys, values := presentK, presentV
	if b.v.KV != b.v.Compute { // keep_io_types: Casts at the graph's edges
		pastK = b.cast(pastK, pastK+"_"+typeName(b.v.Compute), b.v.Compute)
		pastV = b.cast(pastV, pastV+"_"+typeName(b.v.Compute), b.v.Compute)
		keys, values = presentK+"_"+typeName(b.v.Compute), presentV+"_"+typeName(b.v.Compute)
	}
	b.node("Concat", []string{pastK, kr}, keys, onnxgen.IntAttr("axis", 2))
	b.node("Concat", []string{pastV, p + "/v"}, values, onnxgen.IntAttr("axis", 2))
	if b.v.KV != b.v.Compute {
		b.cast(keys, presentK, b.v.KV)
		b.cast(values, presentV, b.v.KV)
	}
	// repeat_kv: each KV head serves heads/kv_heads query heads.
	repeat := func(x, name string) string {
		b.node("Unsqueeze", []string{x, "axes_2"}, name+"/Unsqueeze_output_0")
		b.node("Expand", []string{name + "/Unsqueeze_output_0", "repeat_shape"}, name+"/Expand_output_0")
		return b.node("Reshape", []string{name + "/Expand_output_0", "repeated_shape"}, name+"/Reshape_output_0")
	}
	kRep, vRep := repeat(keys, p+"/repeat_k"), repeat(values, p+"/repeat_v")
	b.node("Transpose", []string{kRep}, p+"/k_t", onnxgen.IntsAttr("perm", 0, 1, 3, 2))
	b.node("MatMul", []string{qr, p + "/k_t"}, p+"/scores_raw")
	b.node("Mul", []string{p + "/scores_raw", "attn_scale"}, p+"/scores_scaled")
	scores := b.node("Where", []string{"attn_allowed", p + "/scores_scaled", "mask_min"}, p+"/scores")
	if b.v.Upcast {
		scores = b.cast(scores, p+"/scores_f32", onnxgen.Float)
	}
	probs := b.node("Softmax", []string{scores}, p+"/probs", onnxgen.IntAttr("axis", -1))
	if b.v.Upcast {
		probs = b.cast(probs, p+"/probs_half", b.v.Compute)
	}
	b.node("MatMul", []string{probs, vRep}, p+"/ctx_heads")
	b.node("Transpose", []string{p + "/ctx_heads"}, p+"/ctx_t", perm)
	b.node("Reshape", []string{p + "/ctx_t", "merged_shape"}, p+"/ctx")
	return b.matmul(p+"/ctx", p+".o_proj", lw.o, LLMHeads*LLMHeadDim, LLMHidden)
}

// mlp: SwiGLU, down(silu(gate(x)) · up(x)).
func (b *llmBuilder) mlp(h, p string, lw llmLayer) string {
	g := b.matmul(h, p+".gate_proj", lw.gate, LLMHidden, llmInter)
	u := b.matmul(h, p+".up_proj", lw.up, LLMHidden, llmInter)
	b.node("Sigmoid", []string{g}, p+"/Sigmoid_output_0")
	b.node("Mul", []string{g, p + "/Sigmoid_output_0"}, p+"/act_fn/Mul_output_0")
	b.node("Mul", []string{p + "/act_fn/Mul_output_0", u}, p+"/Mul_output_0")
	return b.matmul(p+"/Mul_output_0", p+".down_proj", lw.down, llmInter, LLMHidden)
}

func transpose(w []float32, rows, cols int) []float32 {
	out := make([]float32, len(w))
	for i := range rows {
		for j := range cols {
			out[j*rows+i] = w[i*cols+j]
		}
	}
	return out
}

// quantize4 is MatMul4BitsQuantizer's symmetric 4-bit form of w [k, n]:
// per column, blocks of 32 along k, scale = the block's value of largest
// magnitude / -8, q = round(x/scale) + 8 clamped to [0, 15], two to a
// byte (the lower index in the low nibble); packed [n, blocks, 16],
// scales [n·blocks].
func quantize4(w []float32, k, n int) (packed []uint8, scales []float32) {
	blocks := (k + 31) / 32
	packed = make([]uint8, n*blocks*16)
	scales = make([]float32, n*blocks)
	for c := range n {
		for blk := range blocks {
			var vmax float32
			for i := blk * 32; i < min(k, blk*32+32); i++ {
				if x := w[i*n+c]; abs32(x) > abs32(vmax) {
					vmax = x
				}
			}
			scale := vmax / -8
			scales[c*blocks+blk] = scale
			var recip float32
			if scale != 0 {
				recip = 1 / scale
			}
			for j := range 32 {
				i := blk*32 + j
				q := 8
				if i < k {
					q = max(0, min(15, int(math.Round(float64(w[i*n+c]*recip)))+8))
				}
				packed[(c*blocks+blk)*16+j/2] |= uint8(q) << (4 * (j % 2))
			}
		}
	}
	return packed, scales
}

// quantize8 is ONNX Runtime's dynamic quantizer's symmetric per-tensor
// int8 form of w: scale = max|w| / 127, q = round-half-even(w/scale).
func quantize8(w []float32) ([]int8, float32) {
	var m float32
	for _, x := range w {
		m = max(m, abs32(x))
	}
	scale := m / 127
	q := make([]int8, len(w))
	if scale == 0 {
		return q, 1
	}
	for i, x := range w {
		q[i] = int8(max(-127, min(127, math.RoundToEven(float64(x/scale)))))
	}
	return q, scale
}

func abs32(x float32) float32 { return float32(math.Abs(float64(x))) }

// graphGQA is ONNX Runtime GenAI's form of the same weights, as its model
// builder writes a Llama: no position_ids (positions follow from each
// row's past length), SimplifiedLayerNormalization for RMSNorm, and
// com.microsoft.GroupQueryAttention with the rotary embedding inside
// (do_rotary, cos/sin caches), over a KV buffer that past and present
// share (dimension max_sequence_length: the runtime binds present to
// past's memory; seqlens_k and total_sequence_length are computed from the
// attention mask in the graph).
func (w *llmWeights) graphGQA(v LLMVariant) onnxgen.Graph {
	b := &llmBuilder{v: v, w: w, dq: map[string][3]string{}}
	b.g = onnxgen.Graph{Name: "main_graph", Opset: 17}
	dyn := onnxgen.Dynamic
	b.g.Inputs = []onnxgen.Value{
		{Name: "input_ids", Type: onnxgen.Int64, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("sequence_length")}},
		{Name: "attention_mask", Type: onnxgen.Int64, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("total_sequence_length")}},
	}
	kv := []onnxgen.Dim{dyn("batch_size"), onnxgen.Fixed(LLMKVHeads), dyn("max_sequence_length"), onnxgen.Fixed(LLMHeadDim)}
	b.g.Outputs = []onnxgen.Value{{Name: "logits", Type: v.KV, Shape: []onnxgen.Dim{dyn("batch_size"), dyn("sequence_length"), onnxgen.Fixed(LLMVocab)}}}
	for l := range LLMLayers {
		for _, kind := range []string{"key", "value"} {
			b.g.Inputs = append(b.g.Inputs, onnxgen.Value{Name: fmt.Sprintf("past_key_values.%d.%s", l, kind), Type: v.KV, Shape: kv})
			b.g.Outputs = append(b.g.Outputs, onnxgen.Value{Name: fmt.Sprintf("present.%d.%s", l, kind), Type: v.KV, Shape: kv})
		}
	}
	b.constants()
	x := b.embed(w)
	b.node("ReduceSum", []string{"attention_mask", "axes_1"}, "attn_mask_reformat/ReduceSum_output_0", onnxgen.IntAttr("keepdims", 0))
	b.node("Sub", []string{"attn_mask_reformat/ReduceSum_output_0", "i_one"}, "attn_mask_reformat/Sub_output_0")
	b.cast("attn_mask_reformat/Sub_output_0", "seqlens_k", onnxgen.Int32)
	b.node("Shape", []string{"attention_mask"}, "attn_mask_reformat/Shape_output_0")
	b.node("Gather", []string{"attn_mask_reformat/Shape_output_0", "i_one"}, "attn_mask_reformat/Gather_output_0")
	b.cast("attn_mask_reformat/Gather_output_0", "total_sequence_length", onnxgen.Int32)

	cos, sin := make([]float32, LLMMaxPositions*LLMHeadDim/2), make([]float32, LLMMaxPositions*LLMHeadDim/2)
	for p := range LLMMaxPositions {
		for i := range LLMHeadDim / 2 {
			// As the in-graph form computes it: float32 inverse frequency
			// times the position, then cos/sin.
			f := float32(p) * float32(1/math.Pow(llmTheta, float64(2*i)/LLMHeadDim))
			cos[p*LLMHeadDim/2+i] = float32(math.Cos(float64(f)))
			sin[p*LLMHeadDim/2+i] = float32(math.Sin(float64(f)))
		}
	}
	b.float("cos_cache", []int64{LLMMaxPositions, LLMHeadDim / 2}, cos, false)
	b.float("sin_cache", []int64{LLMMaxPositions, LLMHeadDim / 2}, sin, false)

	norm := func(x, name string, weight []float32) string {
		b.float(name+".weight", []int64{LLMHidden}, weight, false)
		return b.node("SimplifiedLayerNormalization", []string{x, name + ".weight"}, name+"/output_0",
			onnxgen.IntAttr("axis", -1), onnxgen.FloatAttr("epsilon", llmEps), onnxgen.IntAttr("stash_type", 1))
	}
	for l, lw := range w.layers {
		p := fmt.Sprintf("model.layers.%d", l)
		h := norm(x, p+".input_layernorm", lw.inNorm)
		a := p + ".attn"
		q := b.matmul(h, a+".q_proj", lw.q, LLMHidden, LLMHeads*LLMHeadDim)
		k := b.matmul(h, a+".k_proj", lw.k, LLMHidden, LLMKVHeads*LLMHeadDim)
		vv := b.matmul(h, a+".v_proj", lw.v, LLMHidden, LLMKVHeads*LLMHeadDim)
		b.g.Nodes = append(b.g.Nodes, onnxgen.Node{Op: "GroupQueryAttention", Domain: onnxgen.MSDomain,
			Inputs: []string{q, k, vv, fmt.Sprintf("past_key_values.%d.key", l), fmt.Sprintf("past_key_values.%d.value", l),
				"seqlens_k", "total_sequence_length", "cos_cache", "sin_cache"},
			Outputs: []string{a + "/GroupQueryAttention_output_0", fmt.Sprintf("present.%d.key", l), fmt.Sprintf("present.%d.value", l)},
			Attrs: []onnxgen.Attr{onnxgen.IntAttr("num_heads", LLMHeads), onnxgen.IntAttr("kv_num_heads", LLMKVHeads),
				onnxgen.IntAttr("do_rotary", 1), onnxgen.IntAttr("rotary_interleaved", 0)}})
		o := b.matmul(a+"/GroupQueryAttention_output_0", a+".o_proj", lw.o, LLMHeads*LLMHeadDim, LLMHidden)
		x = b.node("Add", []string{x, o}, p+"/Add_output_0")
		h = norm(x, p+".post_attention_layernorm", lw.postNorm)
		x = b.node("Add", []string{x, b.mlp(h, p+".mlp", lw)}, p+"/Add_1_output_0")
	}
	x = norm(x, "model.norm", w.norm)
	out := b.matmul(x, "lm_head", w.head, LLMHidden, LLMVocab)
	b.node("Identity", []string{out}, "logits")
	return b.g
}
