package testmodels_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sous-ai/sous/function/generate"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/tasks/testmodels"
)

// findUp returns rel looked for in the working folder and its parents (the
// repository's .cache from a package's folder), or fails the test naming
// the make target that provides it.
func findUp(t *testing.T, rel, target string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("%s not found here or above (run `make %s`, which `make test` does)", rel, target)
		}
		dir = parent
	}
}

// llmConversations are the chats both engines answer.
var llmConversations = [][]map[string]string{
	{{"role": "user", "content": "Hello, who are you?"}},
	{{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."},
		{"role": "assistant", "content": "Red, green, blue."}, {"role": "user", "content": "And three more?"}},
	{{"role": "user", "content": "Écris une phrase en français, s'il te plaît. 日本語も少し。"}},
	{{"role": "user", "content": "What is 12 * 7? Answer with the number only."}},
}

const llmNewTokens = 24

// reference is what transformers.js saw for one conversation.
type reference struct {
	PromptIDs    []int64        `json:"prompt_ids"`
	GeneratedIDs []int64        `json:"generated_ids"`
	Top          [][][2]float64 `json:"top"`
}

// runReference runs transformers.js's generate() on dir's variant.
func runReference(t *testing.T, nodeModules, dir, dtype string, subfolder *string) []reference {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"conversations": llmConversations, "max_new_tokens": llmNewTokens})
	args := []string{"testdata/reference.js", dir, dtype}
	if subfolder != nil {
		args = append(args, *subfolder)
	}
	cmd := exec.Command("node", args...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodeModules)
	cmd.Stdin = bytes.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("transformers.js on %s (%s): %v\n%s", dir, dtype, err, stderr.String())
	}
	var res struct{ Results []reference }
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("transformers.js's output: %v\n%s", err, out)
	}
	return res.Results
}

// candidate is a token and its logit.
type candidate struct {
	id    int64
	logit float32
}

// greedy generates up to n tokens after prompt through function/model
// alone: a prefill, then one token per step with the KV cache, every
// output bound to memory the loop owns (so FP16 outputs work), stopping
// at an EOS id. With shared > 0 the KV cache is one buffer of shared
// positions that past and present share (GroupQueryAttention's form),
// else past grows by the step's tokens (Optimum's). It returns per step
// the 5 largest logits, best first (ties to the lower id, as
// transformers.js's argmax takes them).
func greedy(t *testing.T, e *model.Engine, prompt []int64, n int, eos []int64, shared int64) [][]candidate {
	t.Helper()
	ins := e.Inputs()
	outs := e.Outputs()
	pasts := map[string]model.Tensor{}
	pastIndex := map[string]int{}
	for i, in := range ins {
		if strings.HasPrefix(in.Name, "past_key_values.") {
			pasts[in.Name] = model.NewTensor(in.Name, in.DType, []int64{1, in.Shape[1], shared, in.Shape[3]})
			pastIndex[in.Name] = i
		}
	}
	var steps [][]candidate
	seq := slices.Clone(prompt)
	next := prompt
	for len(steps) < n {
		past := int64(len(seq) - len(next))
		s := int64(len(next))
		feed := make([]model.Tensor, len(ins))
		for i, in := range ins {
			switch {
			case in.Name == "input_ids":
				feed[i] = model.Tensor{Name: in.Name, DType: model.INT64, Shape: []int64{1, s}, I64: next}
			case in.Name == "attention_mask":
				m := model.NewTensor(in.Name, model.INT64, []int64{1, past + s})
				for j := range m.I64 {
					m.I64[j] = 1
				}
				feed[i] = m
			case in.Name == "position_ids":
				p := model.NewTensor(in.Name, model.INT64, []int64{1, s})
				for j := range p.I64 {
					p.I64[j] = past + int64(j)
				}
				feed[i] = p
			case in.Name == "num_logits_to_keep": // as transformers.js feeds it
				feed[i] = model.Tensor{Name: in.Name, DType: model.INT64, Shape: []int64{}, I64: []int64{1}}
			case pasts[in.Name].Name != "":
				feed[i] = pasts[in.Name]
			default:
				t.Fatalf("input %q: the greedy loop does not know it", in.Name)
			}
		}
		bind := model.Bind{Into: map[int]model.Tensor{}, Shared: map[int]int{}}
		keep := s // logits rows
		if slices.ContainsFunc(ins, func(in model.Info) bool { return in.Name == "num_logits_to_keep" }) {
			keep = 1
		}
		for o, out := range outs {
			switch {
			case out.Name == "logits":
				bind.Into[o] = model.NewTensor(out.Name, out.DType, []int64{1, keep, out.Shape[2]})
			case shared > 0:
				bind.Shared[o] = pastIndex["past_key_values."+strings.TrimPrefix(out.Name, "present.")]
			default:
				bind.Into[o] = model.NewTensor(out.Name, out.DType, []int64{1, out.Shape[1], past + s, out.Shape[3]})
			}
		}
		var top []candidate
		err := e.RunBound(context.Background(), feed, bind, func(res []model.Tensor) error {
			for _, r := range res {
				if r.Name == "logits" {
					v := int(r.Shape[2])
					top = top5(&r, int(keep-1)*v, v)
				} else {
					pasts["past_key_values."+strings.TrimPrefix(r.Name, "present.")] = r
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, top)
		next = []int64{top[0].id}
		seq = append(seq, next...)
		if slices.Contains(eos, next[0]) {
			break
		}
	}
	return steps
}

func top5(logits *model.Tensor, off, v int) []candidate {
	var best []candidate
	for i := range v {
		x := logits.Float32At(off + i)
		if len(best) < 5 || x > best[len(best)-1].logit {
			best = append(best, candidate{int64(i), x})
			slices.SortStableFunc(best, func(a, b candidate) int {
				if a.logit != b.logit {
					if a.logit > b.logit {
						return -1
					}
					return 1
				}
				return int(a.id - b.id)
			})
			if len(best) > 5 {
				best = best[:5]
			}
		}
	}
	return best
}

// nearTie is the largest logit gap at which two engines' greedy paths may
// part: the other engine's token must be among this one's top 5 and this
// close to its best.
const nearTie = 1e-3

// TestLLMMatchesTransformersJS: for each variant of the Llama-architecture
// test decoder, function/model's greedy tokens (prefill, then a KV-cache
// step per token) equal transformers.js's generate() on the same
// directory; where they part, the step is a near-tie. The prompt ids are
// transformers.js's (its chat template and tokenizer).
func TestLLMMatchesTransformersJS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the test decoders (~200 MB) and runs transformers.js")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node not found (make test installs npm, which brings it)")
	}
	lib := model.FindLibrary()
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("ONNX Runtime library %s: %v (run `make test`, which fetches it)", lib, err)
	}
	qwen3 := findUp(t, ".cache/llm-tokenizers/qwen3", "llm-tokenizers")
	nodeModules := findUp(t, ".cache/npm-transformers/node_modules", "transformers-js")
	dir := t.TempDir()
	if err := testmodels.LLM(dir, qwen3); err != nil {
		t.Fatal(err)
	}
	root := ""
	type variant struct {
		name, dir, dtype string
		subfolder        *string // transformers.js's, for files outside onnx/
		shared           int64
	}
	var variants []variant
	for _, v := range testmodels.LLMVariants {
		variants = append(variants, variant{name: "llm/" + v.DType, dir: "llm", dtype: v.DType})
	}
	// Optimum's and GenAI's layouts: model.onnx at the top, which
	// transformers.js loads as its fp32 file. transformers.js runs the
	// GenAI graph with a growing past (its inputs' max_sequence_length
	// resolves to 0 on the first step); sous with the shared buffer.
	variants = append(variants, variant{name: "llm-fp16", dir: "llm-fp16", dtype: "", subfolder: &root},
		variant{name: "llm-genai", dir: "llm-genai", dtype: "", subfolder: &root, shared: testmodels.LLMGenAIBuffer})

	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			d := filepath.Join(dir, v.dir)
			// The directory read as sous reads it.
			chosen, err := tasks.ChooseVariant(d, v.dtype, "")
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := tasks.ReadLMConfig(d)
			if err != nil {
				t.Fatal(err)
			}
			jsDType := chosen.DType
			refs := runReference(t, nodeModules, d, jsDType, v.subfolder)
			e, err := model.New(model.Params{Library: lib, Model: chosen.File, Device: model.DeviceCPU})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			equal, ties, steps := 0, 0, 0
			var maxDiff float64
			for c, ref := range refs {
				got := greedy(t, e, ref.PromptIDs, llmNewTokens, cfg.EOS, v.shared)
				ids := make([]int64, len(got))
				for i, s := range got {
					ids[i] = s[0].id
				}
				if slices.Equal(ids, ref.GeneratedIDs) {
					equal++
				}
				parted := false
				for i := 0; i < min(len(ids), len(ref.GeneratedIDs)); i++ {
					steps++
					maxDiff = max(maxDiff, math.Abs(float64(got[i][0].logit)-ref.Top[i][0][1]))
					if ids[i] == ref.GeneratedIDs[i] {
						continue
					}
					// The paths part here: a near-tie, or a failure.
					var theirs *candidate
					for j := range got[i] {
						if got[i][j].id == ref.GeneratedIDs[i] {
							theirs = &got[i][j]
						}
					}
					if theirs == nil || float64(got[i][0].logit-theirs.logit) >= nearTie {
						t.Fatalf("conversation %d step %d: sous %d, transformers.js %d, not a near-tie: sous's top 5 %v, transformers.js's %v",
							c, i, ids[i], ref.GeneratedIDs[i], got[i], ref.Top[i])
					}
					ties++
					parted = true
					t.Logf("conversation %d step %d: paths part at a near-tie (%d vs %d, gap %.2g)", c, i, ids[i], ref.GeneratedIDs[i], got[i][0].logit-theirs.logit)
					break
				}
				if !slices.Equal(ids, ref.GeneratedIDs) && !parted {
					t.Fatalf("conversation %d: sous %v, transformers.js %v", c, ids, ref.GeneratedIDs)
				}
			}
			t.Logf("%s: %d/%d conversations token for token equal, %d parted at near-ties; %d steps compared, top logit differs by at most %.3g",
				v.name, equal, len(refs), ties, steps, maxDiff)
			// Prompts whole, and in chunks of 7 tokens (each prompt spans
			// several): the same tokens either way. A graph that
			// quantizes activations per call (q8) is prefilled whole by
			// sous, as a chunk's scale is not the prompt's.
			if chosen.DynamicQuant != (chosen.DType == "q8") {
				t.Errorf("%s: the graph read as quantizing activations per call: %v", v.name, chosen.DynamicQuant)
			}
			if !chosen.DynamicQuant {
				engineMatches(t, e, v.name, refs, cfg.EOS, v.shared, 7, false)
			}
			engineMatches(t, e, v.name, refs, cfg.EOS, v.shared, 0, chosen.DynamicQuant)
			// An export without num_logits_to_keep is served from a graph
			// derived at load with logits at the last position only.
			derived, why, err := tasks.LastPositionGraph(chosen.File)
			if err != nil {
				t.Fatal(err)
			}
			if (derived != nil) != (v.dir != "llm") {
				t.Errorf("%s: derived a last-position graph: %v (%s); want one for exports without num_logits_to_keep only", v.name, derived != nil, why)
			}
			if derived != nil {
				de, err := model.New(model.Params{Library: lib, Model: chosen.File, Data: derived, Name: chosen.DType + "-last",
					ExternalFolder: filepath.Dir(chosen.File), Device: model.DeviceCPU})
				if err != nil {
					t.Fatal(err)
				}
				defer de.Close()
				engineMatches(t, de, v.name+" derived", refs, cfg.EOS, v.shared, 0, chosen.DynamicQuant)
				engineMatches(t, de, v.name+" derived", refs, cfg.EOS, v.shared, 7, chosen.DynamicQuant)
			}
			servingMatches(t, d, v.dtype, refs, chosen.DType == "q8", chosen.DType == "fp32" || chosen.DType == "q4")
		})
	}
}

// engineMatches runs the conversations through sous's decode engine, all
// at once (continuous batching: one decode call per step for every
// sequence), with prompts prefilled chunk tokens a step (0: whole), and
// holds its greedy tokens to transformers.js's. q8's
// DynamicQuantizeLinear takes one activation scale over the whole batch,
// so a row's result depends on its neighbours: there the engine is held
// to the reference one sequence at a time, and the batched agreement is
// reported.
func engineMatches(t *testing.T, e *model.Engine, name string, refs []reference, eos []int64, shared int64, chunk int, perBatchScale bool) {
	t.Helper()
	if chunk > 0 {
		name = fmt.Sprintf("%s, prefill chunks of %d", name, chunk)
	}
	// A derived graph (named so above) gives the last position's logits.
	last := strings.HasSuffix(e.Name(), "-last")
	eng, err := generate.New(e, generate.Options{EOS: eos, SharedKV: int(shared), KVTokens: 1 << 16, PrefillChunk: chunk, LastPositionLogits: last})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	run := func(i int) []int64 {
		r, err := eng.Generate(context.Background(), refs[i].PromptIDs, generate.Params{MaxTokens: llmNewTokens}, nil)
		if err != nil {
			t.Error(err)
		}
		return r.Tokens
	}
	together := make([][]int64, len(refs))
	var wg sync.WaitGroup
	for i := range refs {
		wg.Add(1)
		go func() { defer wg.Done(); together[i] = run(i) }()
	}
	wg.Wait()
	agree, total := 0, 0
	for i, ref := range refs {
		for j := range min(len(together[i]), len(ref.GeneratedIDs)) {
			total++
			if together[i][j] != ref.GeneratedIDs[j] {
				break
			}
			agree++
		}
		if perBatchScale {
			if alone := run(i); !slices.Equal(alone, ref.GeneratedIDs) {
				t.Errorf("%s conversation %d, the engine alone: %v, transformers.js %v", name, i, alone, ref.GeneratedIDs)
			}
			continue
		}
		if !slices.Equal(together[i], ref.GeneratedIDs) {
			t.Errorf("%s conversation %d, the engine with %d sequences at once: %v, transformers.js %v", name, i, len(refs), together[i], ref.GeneratedIDs)
		}
	}
	t.Logf("%s: decode engine, %d sequences at once: %d of %d tokens agree with transformers.js before the first difference", name, len(refs), agree, total)
}
