package turn

import (
	"errors"
	"fmt"

	"github.com/sous-ai/sous/function/model"
)

// Errors a caller of Do acts on; the transports turn them into their own
// answers (a status code, a pub/sub verdict). Beside these, Do passes on
// batching.ErrFull (overload: refused at once), batching.ErrClosed and
// generate.ErrStopped (shutting down), state.ErrConflict (other pods kept
// taking the session's next turn), the caller's own ctx.Err(), and
// model.ErrInput (inputs that do not fit the model: the caller's mistake).
var (
	// ErrBadRequest marks the caller's mistakes: sending it again cannot
	// succeed.
	ErrBadRequest = errors.New("bad request")
	// ErrUnavailable: the state store did not answer in time or at all.
	ErrUnavailable = errors.New("state store unavailable")
	// ErrShuttingDown: this instance takes no new turns.
	ErrShuttingDown = errors.New("shutting down")
	// ErrContextLength: the request's messages and max_tokens cannot fit
	// the model's positions (a caller's mistake, as ErrBadRequest: older
	// turns of a stored transcript are windowed out, but a message is
	// never cut).
	ErrContextLength = fmt.Errorf("%w: context length exceeded", ErrBadRequest)
)

// BadRequest returns an ErrBadRequest saying what was wrong.
func BadRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
}

// Retry is the verdict on a failed turn: whether the same request may
// succeed later (overload, an unavailable store, a drain, a conflict, a
// failed run), or never will (the caller's mistakes).
func Retry(err error) bool {
	return !errors.Is(err, ErrBadRequest) && !errors.Is(err, model.ErrInput)
}

// Message returns err's text without the sentinel's own prefix, for the
// caller to read.
func Message(err error) string {
	msg := err.Error()
	for _, s := range []error{ErrBadRequest, model.ErrInput} {
		if prefix := s.Error() + ": "; errors.Is(err, s) && len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
			return msg[len(prefix):]
		}
	}
	return msg
}
