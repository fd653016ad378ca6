// Package edge holds what every protocol's handlers share at the HTTP
// edge: bodies read within the limit, strict JSON, the one mapping of
// errors to status codes, and the one renderer of failed requests (every
// refusal counted and logged the same way, whichever route answered it).
package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/sous-ai/sous/batching"
	"github.com/sous-ai/sous/function/generate"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/turn"
)

// Error is a refusal decided at the edge itself, with its status: a body
// over the limit (413), a content type not served (415), a missing token
// (401), an unknown model (404).
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Rejection reasons, as sous_rejected_total{reason} counts them.
const (
	ReasonQueueFull        = "queue_full"
	ReasonShuttingDown     = "shutting_down"
	ReasonStateUnavailable = "state_unavailable"
	ReasonExpired          = "expired"
)

// Status maps an error to its HTTP status, the message the caller sees,
// and, for a 503, the rejection reason. Only genuine bugs are 500.
func Status(err error) (code int, msg, reason string) {
	var ee *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ee):
		return ee.Code, ee.Msg, ""
	case errors.As(err, &he):
		return he.Code, fmt.Sprint(he.Message), ""
	case !turn.Retry(err):
		return http.StatusBadRequest, turn.Message(err), ""
	case errors.Is(err, batching.ErrFull):
		return http.StatusServiceUnavailable, "queue full, retry later", ReasonQueueFull
	case errors.Is(err, batching.ErrClosed), errors.Is(err, turn.ErrShuttingDown), errors.Is(err, generate.ErrStopped):
		return http.StatusServiceUnavailable, "shutting down, retry on another instance", ReasonShuttingDown
	case errors.Is(err, turn.ErrUnavailable):
		return http.StatusServiceUnavailable, "conversation state store unavailable, retry later", ReasonStateUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, batching.ErrDrainTimeout):
		return http.StatusServiceUnavailable, "request expired before it could run", ReasonExpired
	case errors.Is(err, state.ErrConflict):
		// Every retry lost a race for the session's next turn number
		// (other pods kept winning): Knative Eventing retries 409.
		return http.StatusConflict, "the conversation kept changing under this turn, retry", ""
	case errors.Is(err, batching.ErrExecutorPanic):
		return http.StatusInternalServerError, "internal error: the model executor failed", ""
	case errors.Is(err, model.ErrRun):
		return http.StatusInternalServerError, "internal error: the model run failed", ""
	}
	return http.StatusInternalServerError, "internal error", ""
}

// Renderer answers failed requests. Its zero value logs to slog's default
// and counts nothing.
type Renderer struct {
	Log *slog.Logger
	// Rejected counts a 503 by its reason.
	Rejected func(reason string)
}

// Render answers err as {"error": "..."} with its status (503s carry
// Retry-After), counts a rejection and logs one line for the request.
func (r *Renderer) Render(c echo.Context, err error) {
	r.RenderAs(c, err, func(_ int, msg string, _ error) any { return map[string]string{"error": msg} })
}

// RenderAs is Render with the body a protocol wants (OpenAI's error
// object): body gets the status, the message and the error.
func (r *Renderer) RenderAs(c echo.Context, err error, body func(code int, msg string, err error) any) {
	if c.Response().Committed {
		return
	}
	code, msg, _ := r.Record(c, err)
	if code == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	if c.Request().Method == http.MethodHead {
		c.NoContent(code)
		return
	}
	c.JSON(code, body(code, msg, err))
}

// Record is what every answered failure does, whatever its answer: a
// 503's rejection counted, and one log line (never the body, never a
// header). It returns what Status says of err.
func (r *Renderer) Record(c echo.Context, err error) (code int, msg, reason string) {
	code, msg, reason = Status(err)
	if code == http.StatusServiceUnavailable && r.Rejected != nil {
		r.Rejected(reason)
	}
	level, detail := slog.LevelInfo, msg
	if code >= 500 {
		level, detail = slog.LevelWarn, err.Error() // the cause, for operators
	}
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	session, _ := c.Get("session").(string)
	log.Log(c.Request().Context(), level, "request failed", "route", c.Path(), "session", session,
		"status", code, "reason", reason, "err", detail)
	return code, msg, reason
}

// ReadBody reads the request body up to limit bytes (413 beyond).
func ReadBody(c echo.Context, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, &Error{http.StatusRequestEntityTooLarge, fmt.Sprintf("body over the limit of %d bytes", limit)}
	}
	if err != nil {
		return nil, turn.BadRequest("reading body: %v", err)
	}
	return body, nil
}

// IsJSON reports whether a content type is JSON's (or absent).
func IsJSON(contentType string) bool {
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && (mt == "application/json" || mt == "text/json")
}

// ReadJSON reads a JSON request body into v strictly (DecodeJSON): 415
// for another content type (route names the route in the message), 413
// over the limit, 400 for bad JSON.
func ReadJSON(c echo.Context, route string, limit int64, v any) error {
	if !IsJSON(c.Request().Header.Get(echo.HeaderContentType)) {
		return &Error{http.StatusUnsupportedMediaType, route + " takes application/json"}
	}
	body, err := ReadBody(c, limit)
	if err != nil {
		return err
	}
	return DecodeJSON(body, v)
}

// DecodeJSON decodes one JSON value strictly: valid UTF-8 (encoding/json
// would silently replace bad bytes), known fields only, nothing after it.
func DecodeJSON(body []byte, v any) error {
	if !utf8.Valid(body) {
		return turn.BadRequest("body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return turn.BadRequest("empty body")
		}
		return turn.BadRequest("invalid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return turn.BadRequest("invalid JSON: more than one value in the body")
	}
	return nil
}
