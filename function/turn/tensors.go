package turn

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sous-ai/sous/function/demo"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/telemetry"
)

// Slots bounds the model runs in flight: a remote store's batches keep
// one more batch than slots in flight, so that one batch's state calls
// overlap another's run.
type Slots chan struct{}

// run is one batched ONNX Runtime call in one of the slots.
func (sl Slots) run(ctx context.Context, m *model.Engine, metrics *telemetry.Metrics, items [][]model.Tensor) ([][]model.Tensor, error) {
	select {
	case sl <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-sl }()
	start := time.Now()
	res, err := m.Run(ctx, items)
	metrics.Inference(time.Since(start))
	return res, err
}

// tensorRunner serves an .onnx file: OIP tensors in and out, a recurrent
// state pair carried by the session, and text for the bundled demo model
// (its own tokenizer, an intent and scores out).
type tensorRunner struct {
	m       *model.Engine
	slots   Slots
	metrics *telemetry.Metrics
	text    *intentModel // nil if the model does not take text
}

// intentModel is what the demo pipeline needs of a model: its token
// input, its label names and its probability output.
type intentModel struct {
	tokens int // index of the token input
	probs  int // index of the probability output
	labels []string
}

// NewTensorRunner serves m as tensors (and text, when m is the demo
// intent model).
func NewTensorRunner(m *model.Engine, slots Slots, metrics *telemetry.Metrics) Runner {
	return &tensorRunner{m: m, slots: slots, metrics: metrics, text: intentModelOf(m)}
}

func intentModelOf(e *model.Engine) *intentModel {
	if e.Metadata("sous.tokenizer") != demo.Tokenizer {
		return nil
	}
	tm := &intentModel{tokens: -1, probs: -1}
	for i, in := range e.Inputs() {
		if in.Name == "tokens" && in.DType == model.INT64 && len(in.Shape) == 2 {
			tm.tokens = i
		}
	}
	for i, out := range e.Outputs() {
		if out.Name == "probs" && out.DType == model.FP32 && len(out.Shape) == 2 {
			tm.probs = i
		}
	}
	if tm.tokens < 0 || tm.probs < 0 {
		return nil
	}
	tm.labels = strings.Split(e.Metadata("sous.labels"), ",")
	return tm
}

func (r *tensorRunner) Batched() bool { return true }

func (r *tensorRunner) Model() string { return r.m.Name() }

func (r *tensorRunner) Check(req *Request) error {
	if req.Gen != nil {
		return notGenerating(r.m.Name())
	}
	stateIn, _, stateful := r.m.State()
	var item []model.Tensor
	switch {
	case req.Text != "" && req.HasInputs:
		return BadRequest("give either text or inputs, not both")
	case req.Text != "":
		if r.text == nil {
			return BadRequest("model %s does not take text; send OIP inputs instead", r.m.Name())
		}
		if err := checkText(req.Text); err != nil {
			return err
		}
		if len(r.m.Inputs()) != 2 || !stateful {
			return BadRequest("model %s takes more than text", r.m.Name())
		}
		tokens := demo.Tokenize(req.Text)
		item = make([]model.Tensor, 2)
		item[r.text.tokens] = model.Tensor{Name: "tokens", DType: model.INT64, Shape: []int64{1, int64(len(tokens))}, I64: tokens}
	case req.HasInputs:
		var err error
		if item, err = orderInputs(r.m, req); err != nil {
			return err
		}
	default:
		return BadRequest("the turn has no text and no inputs")
	}
	if stateful && !req.Stateless {
		item[stateIn] = stateTensor(r.m, nil, stateIn)
	}
	if err := r.m.Check(item); err != nil {
		return err
	}
	req.inputs = item
	return nil
}

// orderInputs puts a request's tensors in the model's input order. A turn
// of a stateful model gets a zero state in the state slot (the session's
// is put there once it is read); its callers never send it.
func orderInputs(m *model.Engine, req *Request) ([]model.Tensor, error) {
	stateIn, _, stateful := m.State()
	ins := req.Inputs
	turn := stateful && !req.Stateless
	if turn {
		for _, t := range ins {
			if t.Name == m.Inputs()[stateIn].Name {
				return nil, BadRequest("input %q is carried by the session; do not send it", t.Name)
			}
		}
		ins = append(slices.Clone(ins), model.Tensor{Name: m.Inputs()[stateIn].Name})
	}
	item, err := m.Order(ins)
	if err != nil {
		return nil, err
	}
	if turn && len(item) > 0 && len(item[0].Shape) > 0 && item[0].Shape[0] != 1 {
		return nil, BadRequest("a turn is one row: input %q has %d", item[0].Name, item[0].Shape[0])
	}
	if turn {
		item[stateIn] = stateTensor(m, nil, stateIn)
	}
	return item, nil
}

func notGenerating(name string) error {
	return BadRequest("model %s does not generate: max_tokens, temperature, top_k, top_p, seed, stop and stream are for decoder models", name)
}

// stateTensor returns the state input for one row: the session's state, or
// zeros for a new session or one whose state no longer fits the model.
func stateTensor(m *model.Engine, s []float32, idx int) model.Tensor {
	info := m.Inputs()[idx]
	width := int64(1)
	for _, d := range info.Shape[1:] {
		width *= max(d, 1)
	}
	if int64(len(s)) != width {
		s = make([]float32, width)
	}
	shape := slices.Clone(info.Shape)
	shape[0] = 1
	for i := range shape {
		shape[i] = max(shape[i], 1)
	}
	return model.Tensor{Name: info.Name, DType: model.FP32, Shape: shape, F32: s}
}

func (r *tensorRunner) Run(ctx context.Context, jobs []*Job, out []Computed) error {
	stateIn, stateOut, stateful := r.m.State()
	items := make([][]model.Tensor, len(jobs))
	for i, j := range jobs {
		if stateful && !j.Req.Stateless {
			j.Inputs[stateIn] = stateTensor(r.m, j.Session.State, stateIn)
		}
		items[i] = j.Inputs
	}
	res, err := r.slots.run(ctx, r.m, r.metrics, items)
	if err != nil {
		return err
	}
	for i, j := range jobs {
		if j.Req.Stateless {
			out[i].Tensors = res[i]
			continue
		}
		if stateful {
			out[i].State = res[i][stateOut].F32
		}
		out[i].Output, out[i].Err = r.render(j.Req, res[i])
	}
	return nil
}

// render turns the model's outputs into a turn's output: the intent and
// its scores for text, the tensors (less the carried state) otherwise.
func (r *tensorRunner) render(req *Request, outs []model.Tensor) (json.RawMessage, error) {
	if req.Text != "" {
		probs := outs[r.text.probs].F32
		best := 0
		scores := make(map[string]float32, len(probs))
		for i, p := range probs {
			if p > probs[best] {
				best = i
			}
			scores[r.label(i)] = p
		}
		return json.Marshal(struct {
			Intent string             `json:"intent"`
			Scores map[string]float32 `json:"scores"`
		}{r.label(best), scores})
	}
	_, stateOut, stateful := r.m.State()
	var tensors []model.Tensor
	for i, t := range outs {
		if !stateful || i != stateOut {
			tensors = append(tensors, t)
		}
	}
	return json.Marshal(struct {
		Outputs []TensorOut `json:"outputs"`
	}{Tensors(tensors)})
}

func (r *tensorRunner) label(i int) string {
	if i < len(r.text.labels) && r.text.labels[i] != "" {
		return r.text.labels[i]
	}
	return fmt.Sprintf("class_%d", i)
}

// TensorOut is a tensor as the Open Inference Protocol writes it (a turn's
// output carries its model's tensors so).
type TensorOut struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	Datatype string  `json:"datatype"`
	Data     any     `json:"data"`
}

// Tensors lays tensors out as the Open Inference Protocol writes them.
func Tensors(ts []model.Tensor) []TensorOut {
	out := make([]TensorOut, len(ts))
	for i, t := range ts {
		out[i] = TensorOut{Name: t.Name, Shape: t.Shape, Datatype: t.DType.String()}
		switch t.DType {
		case model.FP32:
			out[i].Data = t.F32
		case model.INT64:
			out[i].Data = t.I64
		case model.INT32:
			out[i].Data = t.I32
		}
	}
	return out
}
