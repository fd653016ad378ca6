// Command chatmodel fits sous's demo chat model (SOUS_MODEL=chat) to the
// support assistant's conversations in function/demo/data/chat.txt and
// writes the model directory function/demo/chat: tokenizer.json (a
// WordPiece vocabulary of the conversations' words, with ChatML's
// <|im_start|> and <|im_end|>), model.onnx (the test decoder's graph,
// testmodels.Fitted, 2 layers 64 wide), config.json and
// tokenizer_config.json (the ChatML template). `make model` runs it.
//
// Fitting uses GoMLX with its pure Go backend: a module of its own, so
// that sous's module does not carry a training library. The model is
// the ONNX graph's twin in GoMLX (same weights, same operations); it is
// fitted by Adam on the assistant's tokens of every conversation (the
// loss counts the reply and its <|im_end|>, not the user's words),
// full batch, from weights drawn with a fixed seed.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"

	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/prompt"
	"github.com/sous-ai/sous/function/tasks/testmodels"
	"github.com/sous-ai/sous/function/tokenizer"
)

// The model's size.
const (
	width  = 64
	layers = 2
	heads  = 4
	// batchSize conversations a step.
	batchSize = 16
)

// ChatML, as tokenizer_config.json carries it.
const chatTemplate = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

func main() {
	data := flag.String("data", "function/demo/data/chat.txt", "the conversations")
	out := flag.String("out", "function/demo/chat", "the model directory to write")
	steps := flag.Int("steps", 300, "Adam steps (50 passes over the 6 batches)")
	lr := flag.Float64("lr", 0.01, "learning rate")
	flag.Parse()
	convs, err := demo.ReadChat(os.DirFS(filepath.Dir(*data)), filepath.Base(*data))
	if err != nil {
		log.Fatal(err)
	}
	tokJSON := vocabulary(convs)
	tok, err := tokenizer.Parse(tokJSON)
	if err != nil {
		log.Fatal(err)
	}
	tmpl, err := prompt.Compile(chatTemplate, "", "<|im_end|>")
	if err != nil {
		log.Fatal(err)
	}
	seqs, masks, err := encode(tok, tmpl, convs)
	if err != nil {
		log.Fatal(err)
	}
	vocab := int64(vocabSize(tokJSON))
	start := time.Now()
	weights := fit(seqs, masks, int(vocab), *steps, *lr)
	log.Printf("fitted in %s", time.Since(start).Round(time.Second))

	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	im, _ := tok.Special("<|im_end|>")
	cfg, _ := json.MarshalIndent(map[string]any{"model_type": "gpt2", "n_layer": layers, "n_head": heads, "n_embd": width,
		"vocab_size": vocab, "eos_token_id": im, "n_positions": testmodels.Positions, "architectures": []string{"GPT2LMHeadModel"}}, "", "  ")
	tc, _ := json.MarshalIndent(map[string]any{"model_max_length": testmodels.Positions, "eos_token": "<|im_end|>",
		"chat_template": chatTemplate}, "", "  ")
	for name, b := range map[string][]byte{
		"model.onnx": testmodels.Fitted(vocab, width, layers, heads, weights), "tokenizer.json": tokJSON,
		"config.json": append(cfg, '\n'), "tokenizer_config.json": append(tc, '\n'),
	} {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("wrote %s", *out)
}

// vocabulary builds a WordPiece tokenizer.json (BERT's normalizer and
// pre-tokenizer, lower case) whose vocabulary is the conversations' words
// and punctuation, every letter and digit alone and as a word piece (so
// any text encodes), and the special tokens.
func vocabulary(convs [][]prompt.Message) []byte {
	specials := []string{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<|im_start|>", "<|im_end|>"}
	words := map[string]bool{"user": true, "assistant": true, "system": true}
	for _, c := range convs {
		for _, m := range c {
			var w []rune
			flush := func() {
				if len(w) > 0 {
					words[string(w)] = true
					w = nil
				}
			}
			for _, r := range strings.ToLower(m.Content) {
				switch {
				case unicode.IsLetter(r) || unicode.IsDigit(r):
					w = append(w, r)
				case unicode.IsSpace(r):
					flush()
				default:
					flush()
					words[string(r)] = true
				}
			}
			flush()
		}
	}
	for _, r := range "abcdefghijklmnopqrstuvwxyz0123456789" {
		words[string(r)] = true
		words["##"+string(r)] = true
	}
	for _, r := range ".,!?;:'\"()-/$%&@#*+=<>[]" {
		words[string(r)] = true
	}
	list := make([]string, 0, len(words))
	for w := range words {
		list = append(list, w)
	}
	sort.Strings(list)
	vocab := map[string]int{}
	for i, s := range append(specials, list...) {
		vocab[s] = i
	}
	var added []map[string]any
	for i, s := range specials {
		added = append(added, map[string]any{"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
	}
	b, _ := json.MarshalIndent(map[string]any{
		"version": "1.0", "truncation": nil, "padding": nil, "added_tokens": added,
		"normalizer":    map[string]any{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": nil, "lowercase": true},
		"pre_tokenizer": map[string]any{"type": "BertPreTokenizer"},
		"post_processor": map[string]any{"type": "TemplateProcessing",
			"single":         []any{map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}},
			"pair":           []any{map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}}, map[string]any{"Sequence": map[string]any{"id": "B", "type_id": 1}}},
			"special_tokens": map[string]any{}},
		"decoder": map[string]any{"type": "WordPiece", "prefix": "##", "cleanup": true},
		"model":   map[string]any{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
	}, "", " ")
	return append(b, '\n')
}

func vocabSize(tokJSON []byte) int {
	var f struct {
		Model struct {
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	json.Unmarshal(tokJSON, &f)
	return len(f.Model.Vocab)
}

// encode renders each conversation with the chat template, message by
// message (rendering is per message, so the ids are what the whole render
// encodes to), and marks the tokens the loss counts: each token that an
// assistant's reply or its <|im_end|> ends with is predicted from the one
// before.
func encode(tok *tokenizer.Tokenizer, tmpl *prompt.Template, convs [][]prompt.Message) (seqs [][]int64, masks [][]float32, err error) {
	for _, c := range convs {
		var ids []int64
		var mask []float32
		for _, m := range c {
			head := tok.IDs("<|im_start|>" + m.Role + "\n")
			body := tok.IDs(m.Content + "<|im_end|>\n")
			ids = append(ids, head...)
			for range head {
				mask = append(mask, 0)
			}
			ids = append(ids, body...)
			for range body {
				if m.Role == "assistant" {
					mask = append(mask, 1)
				} else {
					mask = append(mask, 0)
				}
			}
		}
		text, err := tmpl.Render(c, false)
		if err != nil {
			return nil, nil, err
		}
		if whole := tok.IDs(text); !slices.Equal(whole, ids) {
			return nil, nil, fmt.Errorf("conversation %q: rendered whole it encodes to %v, message by message to %v", text, whole, ids)
		}
		seqs, masks = append(seqs, ids), append(masks, mask)
	}
	return seqs, masks, nil
}

// fit fits the model to the sequences and returns its weights by the ONNX
// graph's initializer names.
func fit(seqs [][]int64, masks [][]float32, vocab, steps int, lr float64) map[string][]float32 {
	// Batches of conversations of about the same length, each padded to
	// its longest (the padding at the end is never attended to by the
	// tokens before it, and the loss does not count it).
	order := make([]int, len(seqs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(seqs[order[a]]) < len(seqs[order[b]]) })
	type batch struct{ in, labels []*tensors.Tensor }
	var batches []batch
	counted := 0
	for lo := 0; lo < len(order); lo += batchSize {
		group := order[lo:min(lo+batchSize, len(order))]
		n, t := len(group), 0
		for _, i := range group {
			t = max(t, len(seqs[i])-1) // inputs are all but the last token, targets all but the first
		}
		ids, targets, weights := make([]int32, n*t), make([]int32, n*t), make([]float32, n*t)
		for r, i := range group {
			s := seqs[i]
			for j := 0; j+1 < len(s); j++ {
				ids[r*t+j], targets[r*t+j], weights[r*t+j] = int32(s[j]), int32(s[j+1]), masks[i][j+1]
				counted += int(masks[i][j+1])
			}
		}
		batches = append(batches, batch{
			in:     []*tensors.Tensor{tensors.FromFlatDataAndDimensions(ids, n, t)},
			labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(targets, n, t), tensors.FromFlatDataAndDimensions(weights, n, t)},
		})
	}
	log.Printf("%d conversations in %d batches, %d tokens to predict, vocabulary %d", len(seqs), len(batches), counted, vocab)

	backend := backends.MustNew()
	ctx := context.New()
	init := initial(vocab)
	for name, w := range init {
		ctx.In("m").VariableWithValue(name, tensors.FromFlatDataAndDimensions(w.data, w.dims...))
	}
	model := func(ctx *context.Context, _ any, inputs []*Node) []*Node {
		return []*Node{forward(ctx.In("m"), inputs[0], vocab)}
	}
	loss := func(labels, predictions []*Node) *Node {
		logp := LogSoftmax(predictions[0], -1)
		picked := ReduceSum(Mul(logp, OneHot(labels[0], vocab, dtypes.Float32)), -1)
		return Neg(Div(ReduceAllSum(Mul(picked, labels[1])), ReduceAllSum(labels[1])))
	}
	trainer := train.NewTrainer(backend, ctx, model, loss, optimizers.Adam().LearningRate(lr).Done(), nil, nil)
	// Each epoch visits the batches in an order drawn with a fixed seed.
	r := rand.New(rand.NewPCG(7, 7))
	var epoch []int
	sum, count := 0.0, 0
	for step := range steps {
		if len(epoch) == 0 {
			epoch = r.Perm(len(batches))
		}
		b := batches[epoch[0]]
		epoch = epoch[1:]
		m, err := trainer.TrainStep(nil, b.in, b.labels)
		if err != nil {
			log.Fatal(err)
		}
		sum += float64(m[0].Value().(float32))
		count++
		if (step+1)%len(batches) == 0 || step == steps-1 {
			log.Printf("step %d: mean loss %.4f", step+1, sum/float64(count))
			sum, count = 0, 0
		}
	}
	out := map[string][]float32{}
	for name := range init {
		v := ctx.GetVariableByScopeAndName("/m", name)
		data, err := tensors.CopyFlatData[float32](v.MustValue())
		if err != nil {
			log.Fatal(err)
		}
		out[name] = data
	}
	return out
}

type weight struct {
	data []float32
	dims []int
}

// initial draws the starting weights with a fixed seed: normal(0, 0.02)
// matrices and embeddings, zero biases, unit LayerNorm gains.
func initial(vocab int) map[string]weight {
	r := rand.New(rand.NewPCG(2026, 12))
	w := map[string]weight{}
	normal := func(name string, std float64, dims ...int) {
		n := 1
		for _, d := range dims {
			n *= d
		}
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(r.NormFloat64() * std)
		}
		w[name] = weight{d, dims}
	}
	fill := func(name string, v float32, dims ...int) {
		d := make([]float32, dims[0])
		for i := range d {
			d[i] = v
		}
		w[name] = weight{d, dims}
	}
	normal("word_embeddings", 0.1, vocab, width)
	normal("position_embeddings", 0.02, testmodels.Positions, width)
	for l := range layers {
		p := fmt.Sprintf("h%d.", l)
		fill(p+"ln_1.gamma", 1, width)
		fill(p+"ln_1.beta", 0, width)
		for _, m := range []string{"query", "key", "value", "attn.c_proj"} {
			normal(p+m+".weight", 0.1, width, width)
			fill(p+m+".bias", 0, width)
		}
		fill(p+"ln_2.gamma", 1, width)
		fill(p+"ln_2.beta", 0, width)
		normal(p+"mlp.c_fc.weight", 0.1, width, 2*width)
		fill(p+"mlp.c_fc.bias", 0, 2*width)
		normal(p+"mlp.c_proj.weight", 0.1, 2*width, width)
		fill(p+"mlp.c_proj.bias", 0, width)
	}
	fill("ln_f.gamma", 1, width)
	fill("ln_f.beta", 0, width)
	normal("lm_head", 0.1, width, vocab)
	return w
}

// forward is the ONNX graph (testmodels' decoder, Optimum's form, no
// past) in GoMLX: ids [batch, t] → logits [batch, t, vocab].
func forward(ctx *context.Context, ids *Node, vocab int) *Node {
	g := ids.Graph()
	b, t := ids.Shape().Dimensions[0], ids.Shape().Dimensions[1]
	v := func(name string) *Node { return ctx.GetVariableByScopeAndName("/m", name).ValueGraph(g) }
	hd := width / heads
	x := Gather(v("word_embeddings"), ExpandAxes(ids, -1))
	pos := Gather(v("position_embeddings"), ExpandAxes(Iota(g, shapes.Make(dtypes.Int32, t), 0), -1))
	x = Add(x, ExpandAxes(pos, 0))
	// Causality: -10000 where a key comes after the query, as the graph adds.
	q := Iota(g, shapes.Make(dtypes.Int32, t, t), 0)
	k := Iota(g, shapes.Make(dtypes.Int32, t, t), 1)
	causal := Where(GreaterThan(k, q), Scalar(g, dtypes.Float32, -10000), Scalar(g, dtypes.Float32, 0))
	linear := func(x *Node, name string) *Node {
		return Add(Einsum("btd,de->bte", x, v(name+".weight")), ExpandLeftToRank(v(name+".bias"), 3))
	}
	split := func(x *Node) *Node { return TransposeAllDims(Reshape(x, b, t, heads, hd), 0, 2, 1, 3) }
	for l := range layers {
		p := fmt.Sprintf("h%d.", l)
		in := layerNorm(x, v(p+"ln_1.gamma"), v(p+"ln_1.beta"))
		qh, kh, vh := split(linear(in, p+"query")), split(linear(in, p+"key")), split(linear(in, p+"value"))
		scores := MulScalar(Einsum("bhqd,bhkd->bhqk", qh, kh), 1/math.Sqrt(float64(hd)))
		probs := Softmax(Add(scores, ExpandLeftToRank(causal, 4)), -1)
		ctxv := Reshape(TransposeAllDims(Einsum("bhqk,bhkd->bhqd", probs, vh), 0, 2, 1, 3), b, t, width)
		res := Add(x, linear(ctxv, p+"attn.c_proj"))
		mid := layerNorm(res, v(p+"ln_2.gamma"), v(p+"ln_2.beta"))
		h := linear(mid, p+"mlp.c_fc")
		gelu := MulScalar(Mul(h, AddScalar(Erf(MulScalar(h, 1/math.Sqrt2)), 1)), 0.5)
		x = Add(res, linear(gelu, p+"mlp.c_proj"))
	}
	final := layerNorm(x, v("ln_f.gamma"), v("ln_f.beta"))
	return Einsum("btd,dv->btv", final, v("lm_head"))
}

// layerNorm over the last axis, epsilon 1e-12 as the graph's.
func layerNorm(x, gamma, beta *Node) *Node {
	mean := ReduceAndKeep(x, ReduceMean, -1)
	c := Sub(x, mean)
	variance := ReduceAndKeep(Square(c), ReduceMean, -1)
	return Add(Mul(Div(c, Sqrt(AddScalar(variance, 1e-12))), ExpandLeftToRank(gamma, 3)), ExpandLeftToRank(beta, 3))
}
