package oip

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/tasks"
	"github.com/sous-ai/sous/function/turn"
)

// Inferrer runs stateless calls: the turn service.
type Inferrer interface {
	Infer(ctx context.Context, inputs []model.Tensor) ([]model.Tensor, error)
	InferText(ctx context.Context, text string) (tasks.Output, error)
}

// Params are what the routes serve.
type Params struct {
	Turns   Inferrer
	Model   *model.Engine
	Dir     *tasks.Model // a model directory's, nil otherwise: BYTES text in
	Version string       // sous's, in GET /v2
	// MaxBatch bounds the strings of one text request; MaxBody a body.
	MaxBatch int
	MaxBody  int64
	// Ready reports readiness (GET /v2/health/ready and the model's).
	Ready func() bool
}

type server struct{ p Params }

// Register adds the protocol's routes: infer to work (admitted only while
// serving), the rest to e.
func Register(e *echo.Echo, work *echo.Group, p Params) {
	s := &server{p}
	work.POST("/v2/models/:name/infer", s.infer)
	e.GET("/v2", s.serverMetadata)
	e.GET("/v2/models/:name", s.modelMetadata)
	e.GET("/v2/models/:name/ready", s.modelReady)
	e.GET("/v2/health/live", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	e.GET("/v2/health/ready", s.ready)
}

func (s *server) checkModel(c echo.Context) error {
	if name := c.Param("name"); name != s.p.Model.Name() {
		return &edge.Error{Code: http.StatusNotFound, Msg: fmt.Sprintf("model %q not found; this server serves %q", name, s.p.Model.Name())}
	}
	return nil
}

func (s *server) infer(c echo.Context) error {
	if err := s.checkModel(c); err != nil {
		return err
	}
	var req Request
	if err := edge.ReadJSON(c, "infer", s.p.MaxBody, &req); err != nil {
		return err
	}
	var outs []turn.TensorOut
	var err error
	if s.p.Dir != nil && len(req.Inputs) == 1 && req.Inputs[0].Datatype == "BYTES" {
		outs, err = s.inferText(c.Request().Context(), req.Inputs[0])
	} else {
		outs, err = s.inferTensors(c.Request().Context(), req.Inputs)
	}
	if err != nil {
		return err
	}
	// One rule for the outputs asked for, whatever the input: each must
	// be one the model gives.
	picked, err := pick(outs, req.Outputs)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, response{ModelName: s.p.Model.Name(), ModelVersion: "1", ID: req.ID, Outputs: picked})
}

// pick keeps the outputs asked for, in the model's order; none asked: all.
func pick(outs []turn.TensorOut, wanted []OutputWanted) ([]turn.TensorOut, error) {
	if len(wanted) == 0 {
		return outs, nil
	}
	want := map[string]bool{}
	for _, o := range wanted {
		found := false
		for _, t := range outs {
			found = found || t.Name == o.Name
		}
		if !found {
			names := make([]string, len(outs))
			for i, t := range outs {
				names[i] = t.Name
			}
			return nil, turn.BadRequest("model has no output %q; its outputs are %s", o.Name, strings.Join(names, ", "))
		}
		want[o.Name] = true
	}
	picked := []turn.TensorOut{}
	for _, t := range outs {
		if want[t.Name] {
			picked = append(picked, t)
		}
	}
	return picked, nil
}

func (s *server) inferTensors(ctx context.Context, in []TensorIn) ([]turn.TensorOut, error) {
	ins, err := DecodeInputs(in)
	if err != nil {
		return nil, err
	}
	res, err := s.p.Turns.Infer(ctx, ins)
	if err != nil {
		return nil, err
	}
	return turn.Tensors(res), nil
}

// inferText encodes each string with the model's tokenizer and batches it
// like any text turn (stateless). Outputs, by task: text classification
// "label" (BYTES [N]) and "scores" (FP32 [N, labels], probabilities in
// id2label order); feature extraction "embedding" (FP32 [N, hidden]);
// token classification "entities" (BYTES [N], each the JSON list a turn's
// output carries).
func (s *server) inferText(ctx context.Context, in TensorIn) ([]turn.TensorOut, error) {
	var texts []string
	if err := json.Unmarshal(in.Data, &texts); err != nil {
		texts = nil
		var nested [][]string
		if json.Unmarshal(in.Data, &nested) != nil {
			return nil, turn.BadRequest("input %q: BYTES data must be a list of strings", in.Name)
		}
		for _, row := range nested {
			texts = append(texts, row...)
		}
	}
	n := int64(len(texts))
	if len(in.Shape) == 0 || in.Shape[0] != n || (len(in.Shape) == 2 && in.Shape[1] != 1) || len(in.Shape) > 2 {
		return nil, turn.BadRequest("input %q: shape %v does not match %d strings (want [%d] or [%d, 1])", in.Name, in.Shape, n, n, n)
	}
	if n == 0 || n > int64(s.p.MaxBatch) {
		return nil, turn.BadRequest("input %q: %d strings, want 1 to %d (SOUS_MAX_BATCH)", in.Name, n, s.p.MaxBatch)
	}
	for _, t := range texts {
		if len(t) > turn.MaxText {
			return nil, turn.BadRequest("input %q: a text is %d bytes, the limit is %d", in.Name, len(t), turn.MaxText)
		}
	}
	outs := make([]tasks.Output, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, text := range texts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = s.p.Turns.InferText(ctx, text)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return textTensors(s.p.Dir, outs), nil
}

// textTensors lays the results of N texts out as tensors.
func textTensors(m *tasks.Model, outs []tasks.Output) []turn.TensorOut {
	n := int64(len(outs))
	switch m.Task {
	case tasks.TextClassification:
		labels := make([]string, n)
		var scores []float32
		for i, o := range outs {
			c := o.(*tasks.Classification)
			labels[i] = c.Label
			for l := range len(c.Scores) {
				scores = append(scores, c.Scores[m.LabelName(l)])
			}
		}
		return []turn.TensorOut{
			{Name: "label", Shape: []int64{n}, Datatype: "BYTES", Data: labels},
			{Name: "scores", Shape: []int64{n, int64(len(scores)) / n}, Datatype: model.FP32.String(), Data: scores},
		}
	case tasks.FeatureExtraction:
		var data []float32
		var dims int64
		for _, o := range outs {
			e := o.(*tasks.Embedding)
			data, dims = append(data, e.Embedding...), int64(e.Dims)
		}
		return []turn.TensorOut{{Name: "embedding", Shape: []int64{n, dims}, Datatype: model.FP32.String(), Data: data}}
	default:
		ents := make([]string, n)
		for i, o := range outs {
			b, _ := json.Marshal(o.(*tasks.Entities).Entities)
			ents[i] = string(b)
		}
		return []turn.TensorOut{{Name: "entities", Shape: []int64{n}, Datatype: "BYTES", Data: ents}}
	}
}

func (s *server) serverMetadata(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"name": "sous", "version": s.p.Version, "extensions": []string{}})
}

type tensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func metas(infos []model.Info) []tensorMeta {
	out := make([]tensorMeta, len(infos))
	for i, in := range infos {
		out[i] = tensorMeta{in.Name, in.DType.String(), in.Shape}
	}
	return out
}

func (s *server) modelMetadata(c echo.Context) error {
	if err := s.checkModel(c); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{
		"name":     s.p.Model.Name(),
		"versions": []string{"1"},
		"platform": "onnxruntime_onnx",
		"inputs":   metas(s.p.Model.Inputs()),
		"outputs":  metas(s.p.Model.Outputs()),
	})
}

func (s *server) modelReady(c echo.Context) error {
	if err := s.checkModel(c); err != nil {
		return err
	}
	return s.ready(c)
}

// ready answers 200 once the model is warm and the server runs, and 503
// before that and while draining.
func (s *server) ready(c echo.Context) error {
	if !s.p.Ready() {
		return &edge.Error{Code: http.StatusServiceUnavailable, Msg: "not ready"}
	}
	return c.NoContent(http.StatusOK)
}
