package turn

import (
	"context"
	"encoding/json"

	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/telemetry"
)

// textRunner serves a model directory's text task (classification,
// embeddings, token classification): text encoded with the model's own
// tokenizer, batches costed by their padded tokens, outputs shaped by the
// task. Tensors are served too, as by the tensor runner.
type textRunner struct {
	tensorRunner
	dir *tasks.Model
	// contextTurns is how many of the session's earlier texts come first
	// (the pair's first segment).
	contextTurns int
}

// NewTextRunner serves a model directory's text task.
func NewTextRunner(m *model.Engine, dir *tasks.Model, contextTurns int, slots Slots, metrics *telemetry.Metrics) Runner {
	return &textRunner{tensorRunner: tensorRunner{m: m, slots: slots, metrics: metrics}, dir: dir, contextTurns: contextTurns}
}

// Cost is a job's sequence length: dimension 1 of its first input (the
// token ids of a text turn), which the batcher pads to its batch's longest.
func Cost(j *Job) int64 {
	if len(j.Inputs) == 0 || len(j.Inputs[0].Shape) < 2 {
		return 1
	}
	return j.Inputs[0].Shape[1]
}

func (r *textRunner) Check(req *Request) error {
	if req.Text == "" || req.HasInputs {
		return r.tensorRunner.Check(req)
	}
	if req.Gen != nil {
		return notGenerating(r.m.Name())
	}
	if err := checkText(req.Text); err != nil {
		return err
	}
	// Encoded without context here (to check it and to cost it in the
	// batcher); with context turns Run encodes it again with the
	// session's earlier texts once the session is read.
	enc := r.dir.Encode(req.Text, nil)
	req.enc = &enc
	req.inputs = r.dir.Inputs(enc)
	return nil
}

func (r *textRunner) Run(ctx context.Context, jobs []*Job, out []Computed) error {
	items := make([][]model.Tensor, len(jobs))
	var real, longest int64
	for i, j := range jobs {
		if j.Req.enc != nil && r.contextTurns > 0 && !j.Req.Stateless {
			// Encoded again on every run: a redo after a conflict sees
			// the session's newer transcript.
			enc := r.dir.Encode(j.Req.Text, lastTexts(j.Session.History, r.contextTurns))
			j.Req.enc = &enc
			j.Inputs = r.dir.Inputs(enc)
		}
		items[i] = j.Inputs
		n := Cost(j)
		real, longest = real+n, max(longest, n)
	}
	r.metrics.Tokens(real, int64(len(jobs))*longest-real)
	res, err := r.slots.run(ctx, r.m, r.metrics, items)
	if err != nil {
		return err
	}
	for i, j := range jobs {
		switch {
		case j.Req.enc == nil && j.Req.Stateless:
			out[i].Tensors = res[i]
		case j.Req.enc == nil:
			out[i].Output, out[i].Err = r.render(j.Req, res[i])
		default:
			v := r.dir.Output(j.Req.Text, *j.Req.enc, res[i])
			if j.Req.Stateless {
				out[i].Value = v
			} else {
				out[i].Output, out[i].Err = json.Marshal(v)
			}
		}
	}
	return nil
}

// lastTexts returns the texts of the last n turns of a transcript, oldest
// first.
func lastTexts(history []state.Turn, n int) []string {
	var out []string
	for _, h := range history[max(0, len(history)-n):] {
		if h.Text != "" {
			out = append(out, h.Text)
		}
	}
	return out
}
