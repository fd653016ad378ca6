package openai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/turn"
)

// MaxInputs bounds the texts of one embeddings request, as OpenAI's API
// does.
const MaxInputs = 2048

// embeddingsRequest is POST /v1/embeddings's body.
type embeddingsRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
}

// embeddingsFields are the fields read; user is accepted and ignored (it
// names the caller, and an embedding has no session to continue).
var embeddingsFields = []string{"model", "input", "encoding_format", "dimensions", "user"}

// decodeKnown decodes body into v after refusing by name every non-null
// field outside known: a field sous does not read would change the answer
// unseen. Invalid UTF-8 is refused too (encoding/json would silently
// replace the bytes, and embed or continue another text).
func decodeKnown(body []byte, v any, known []string) error {
	if !utf8.Valid(body) {
		return turn.BadRequest("body is not valid UTF-8")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return turn.BadRequest("invalid JSON: %v", err)
	}
	var unknown []string
	for k, val := range raw {
		if string(val) != "null" && !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return turn.BadRequest("%s: not supported by sous", strings.Join(unknown, ", "))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return turn.BadRequest("invalid JSON: %v", err)
	}
	return nil
}

// texts reads input: a string or a list of strings. Token id arrays,
// which OpenAI also takes, are refused: the model's own tokenizer is
// sous's, and ids meant for another tokenizer would embed other text.
func (r *embeddingsRequest) texts() ([]string, error) {
	if len(r.Input) == 0 || string(r.Input) == "null" {
		return nil, turn.BadRequest("input: required (a string or a list of strings)")
	}
	var one string
	if json.Unmarshal(r.Input, &one) == nil {
		return []string{one}, nil
	}
	var list []json.RawMessage
	if json.Unmarshal(r.Input, &list) != nil {
		return nil, turn.BadRequest("input: want a string or a list of strings")
	}
	if len(list) == 0 || len(list) > MaxInputs {
		return nil, turn.BadRequest("input: %d texts, want 1 to %d", len(list), MaxInputs)
	}
	texts := make([]string, len(list))
	for i, v := range list {
		if json.Unmarshal(v, &texts[i]) != nil {
			var n json.Number
			var ids []json.Number
			if json.Unmarshal(v, &n) == nil || json.Unmarshal(v, &ids) == nil {
				return nil, turn.BadRequest("input: token id arrays are not supported (send text: sous encodes it with the model's own tokenizer)")
			}
			return nil, turn.BadRequest("input[%d]: want a string", i)
		}
	}
	return texts, nil
}

func (s *server) embeddings(c echo.Context) error {
	if s.p.Embedder == nil {
		return s.fail(c, &edge.Error{Code: http.StatusNotFound, Msg: fmt.Sprintf("model %s does not embed text: serve a feature-extraction model directory", s.p.Model)})
	}
	if !edge.IsJSON(c.Request().Header.Get(echo.HeaderContentType)) {
		return s.fail(c, &edge.Error{Code: http.StatusUnsupportedMediaType, Msg: "POST /v1/embeddings takes application/json"})
	}
	body, err := edge.ReadBody(c, s.p.MaxBody)
	if err != nil {
		return s.fail(c, err)
	}
	var req embeddingsRequest
	if err := decodeKnown(body, &req, embeddingsFields); err != nil {
		return s.fail(c, err)
	}
	switch req.EncodingFormat {
	case "", "float", "base64":
	default:
		return s.fail(c, turn.BadRequest("encoding_format %q: want float or base64", req.EncodingFormat))
	}
	texts, err := req.texts()
	if err != nil {
		return s.fail(c, err)
	}
	ctx, span := edge.StartTurn(c.Request().Context(), s.p.Tracer, c.Request().Header, nil)
	defer span.End()
	got, err := s.p.Embedder.Embed(ctx, texts, 2*s.p.MaxBatch)
	if err != nil {
		edge.SpanErr(span, err)
		return s.fail(c, err)
	}
	if d := req.Dimensions; d != nil && *d != len(got[0].Vector) {
		// Cutting a vector short is right only for a model trained for it
		// (Matryoshka); sous cannot tell, so it serves the model's own.
		return s.fail(c, turn.BadRequest("dimensions %d: model %s embeds in %d dimensions and sous does not shorten them", *d, s.p.Model, len(got[0].Vector)))
	}
	data := make([]map[string]any, len(got))
	tokens := 0
	for i, e := range got {
		var v any = e.Vector
		if req.EncodingFormat == "base64" {
			v = base64Floats(e.Vector)
		}
		data[i] = map[string]any{"object": "embedding", "index": i, "embedding": v}
		tokens += e.Tokens
	}
	return c.JSON(http.StatusOK, map[string]any{"object": "list", "data": data, "model": s.p.Model,
		"usage": map[string]int{"prompt_tokens": tokens, "total_tokens": tokens}})
}

// base64Floats is OpenAI's base64 encoding of an embedding: its float32
// values' little-endian bytes.
func base64Floats(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}
