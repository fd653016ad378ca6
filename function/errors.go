package function

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/sous-ai/sous/batching"
	"github.com/sous-ai/sous/function/model"
	"github.com/sous-ai/sous/function/state"
)

// errBadRequest marks the caller's mistakes (400).
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// statusError carries a status for errors decided at the edge (413, 415).
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// Rejection reasons, as sous_rejected_total{reason} counts them.
const (
	reasonQueueFull        = "queue_full"
	reasonShuttingDown     = "shutting_down"
	reasonStateUnavailable = "state_unavailable"
	reasonExpired          = "expired"
)

// classify maps an error to its HTTP status, the message the caller sees,
// and, for a 503, the rejection reason. Only genuine bugs are 500.
func classify(err error) (code int, msg, reason string) {
	var se *statusError
	switch {
	case errors.As(err, &se):
		return se.code, se.msg, ""
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest, trimPrefix(err, errBadRequest), ""
	case errors.Is(err, model.ErrInput):
		return http.StatusBadRequest, trimPrefix(err, model.ErrInput), ""
	case errors.Is(err, batching.ErrFull):
		return http.StatusServiceUnavailable, "queue full, retry later", reasonQueueFull
	case errors.Is(err, batching.ErrClosed), errors.Is(err, errShuttingDown):
		return http.StatusServiceUnavailable, "shutting down, retry on another instance", reasonShuttingDown
	case errors.Is(err, errStateUnavailable):
		return http.StatusServiceUnavailable, "conversation state store unavailable, retry later", reasonStateUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, batching.ErrDrainTimeout):
		return http.StatusServiceUnavailable, "request expired before it could run", reasonExpired
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

var errShuttingDown = errors.New("shutting down")

// trimPrefix drops the sentinel's own text from a wrapped message.
func trimPrefix(err, sentinel error) string {
	msg, prefix := err.Error(), sentinel.Error()+": "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return msg
}
