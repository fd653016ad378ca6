package function

import (
	"encoding/json"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/tasks"
)

// inferText answers an OIP request whose one input is BYTES text, as
// KServe's Hugging Face runtime takes it, for a model directory: each
// string is encoded with the model's tokenizer and batched like any text
// turn (stateless). Outputs, by task: text classification "label" (BYTES
// [N]) and "scores" (FP32 [N, labels], probabilities in id2label order);
// feature extraction "embedding" (FP32 [N, hidden]); token classification
// "entities" (BYTES [N], each the JSON list a turn's output carries).
func (f *Function) inferText(c echo.Context, req oipRequest) error {
	in := req.Inputs[0]
	var texts []string
	if err := json.Unmarshal(in.Data, &texts); err != nil {
		texts = nil
		var nested [][]string
		if json.Unmarshal(in.Data, &nested) != nil {
			return badRequest("input %q: BYTES data must be a list of strings", in.Name)
		}
		for _, row := range nested {
			texts = append(texts, row...)
		}
	}
	n := int64(len(texts))
	if len(in.Shape) == 0 || in.Shape[0] != n || (len(in.Shape) == 2 && in.Shape[1] != 1) || len(in.Shape) > 2 {
		return badRequest("input %q: shape %v does not match %d strings (want [%d] or [%d, 1])", in.Name, in.Shape, n, n, n)
	}
	if n == 0 || n > int64(f.cfg.MaxBatch) {
		return badRequest("input %q: %d strings, want 1 to %d (SOUS_MAX_BATCH)", in.Name, n, f.cfg.MaxBatch)
	}
	for _, t := range texts {
		if len(t) > MaxText {
			return badRequest("input %q: a text is %d bytes, the limit is %d", in.Name, len(t), MaxText)
		}
	}
	outs := make([]json.RawMessage, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, text := range texts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			enc := f.hf.Encode(text, nil)
			res, err := f.batcher.Submit(c.Request().Context(), job{inputs: f.hf.Inputs(enc)})
			if err == nil {
				err = res.err
			}
			if err == nil {
				outs[i], err = f.hf.Render(text, enc, res.outputs)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	tensors, err := textOutputs(f.hf, outs)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, o := range req.Outputs {
		want[o.Name] = true
	}
	resp := oipResponse{ModelName: f.engine.Name(), ModelVersion: "1", ID: req.ID, Outputs: []oipTensorOut{}}
	for _, t := range tensors {
		if len(want) == 0 || want[t.Name] {
			resp.Outputs = append(resp.Outputs, t)
		}
	}
	if len(resp.Outputs) == 0 {
		return badRequest("none of the outputs asked for exist; this model's are %s", names(tensors))
	}
	return c.JSON(http.StatusOK, resp)
}

func names(ts []oipTensorOut) string {
	s := ""
	for i, t := range ts {
		if i > 0 {
			s += ", "
		}
		s += t.Name
	}
	return s
}

// textOutputs lays the rendered outputs of N texts out as OIP tensors.
func textOutputs(m *tasks.Model, outs []json.RawMessage) ([]oipTensorOut, error) {
	n := int64(len(outs))
	switch m.Task {
	case tasks.TextClassification:
		labels := make([]string, n)
		var scores []float32
		for i, o := range outs {
			var c tasks.Classification
			if err := json.Unmarshal(o, &c); err != nil {
				return nil, err
			}
			labels[i] = c.Label
			for l := range len(c.Scores) {
				scores = append(scores, c.Scores[m.LabelName(l)])
			}
		}
		return []oipTensorOut{
			{Name: "label", Shape: []int64{n}, Datatype: "BYTES", Data: labels},
			{Name: "scores", Shape: []int64{n, int64(len(scores)) / n}, Datatype: model.FP32.String(), Data: scores},
		}, nil
	case tasks.FeatureExtraction:
		var data []float32
		var dims int64
		for _, o := range outs {
			var e tasks.Embedding
			if err := json.Unmarshal(o, &e); err != nil {
				return nil, err
			}
			data, dims = append(data, e.Embedding...), int64(e.Dims)
		}
		return []oipTensorOut{{Name: "embedding", Shape: []int64{n, dims}, Datatype: model.FP32.String(), Data: data}}, nil
	default:
		ents := make([]string, n)
		for i, o := range outs {
			var v struct {
				Entities json.RawMessage `json:"entities"`
			}
			if err := json.Unmarshal(o, &v); err != nil {
				return nil, err
			}
			ents[i] = string(v.Entities)
		}
		return []oipTensorOut{{Name: "entities", Shape: []int64{n}, Datatype: "BYTES", Data: ents}}, nil
	}
}
