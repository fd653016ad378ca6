package placement

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/function/turn"
)

// errRefused is an owner's refusal before it ran anything (its 503
// without HeaderServedBy: draining, or not serving yet).
var errRefused = errors.New("placement: the owner refused the turn before running it")

// Middleware places the generation routes' turns: a request for a session
// owned by another pod is relayed there; a relayed one, one without a
// session, and one for a session owned here run here (next). A request
// whose session cannot be read also runs here: the route answers the
// error. It must run after admission, so that a draining pod refuses
// before relaying and its drain waits for its relays.
func (pl *Placement) Middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Header.Get(HeaderRelayed) != "" {
			pl.p.Metrics.Placed("received")
			return pl.serveHere(c, next)
		}
		body, whole, err := peek(r, pl.p.MaxBody)
		if err != nil || !whole {
			return pl.serveHere(c, next) // the route reads and refuses it
		}
		session := SessionOf(c.Path(), r.Header, body)
		if session == "" || turn.CheckSession(session) != nil {
			return pl.serveHere(c, next)
		}
		owner, err := pl.Owner(r.Context(), session)
		if err != nil {
			// Any pod can serve any session (its transcript is in the
			// store): without an owner the turn only misses the cache.
			pl.p.Log.Warn("placement: serving here", "session", session, "err", err.Error())
			pl.p.Metrics.Placed("fallback")
			return pl.serveHere(c, next)
		}
		if owner == pl.p.Address {
			pl.p.Metrics.Placed("owner")
			return pl.serveHere(c, next)
		}
		return pl.relay(c, next, session, owner, body)
	}
}

func (pl *Placement) serveHere(c echo.Context, next echo.HandlerFunc) error {
	c.Response().Header().Set(HeaderServedBy, pl.p.Address)
	return next(c)
}

// peek reads r's body (up to limit+1 bytes) and puts it back for the
// route; whole reports that it was all read.
func peek(r *http.Request, limit int64) ([]byte, bool, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true, nil
	}
	if limit <= 0 {
		limit = 1 << 20
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	r.Body = readCloser{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
	if err != nil {
		return b, false, err
	}
	return b, int64(len(b)) <= limit, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// relay hands the request to owner; if that fails before the owner
// answered, it asks for the owner again and retries there (the request's
// key makes a turn the failed owner saved count once), and after
// Attempts, or when the owner is now this pod or unknown, serves it here.
func (pl *Placement) relay(c echo.Context, next echo.HandlerFunc, session, owner string, body []byte) error {
	r := c.Request()
	key := r.Header.Get(HeaderKey)
	if key == "" {
		// A key made here, so that a retry on the next owner, or the turn
		// served here after all, finds the turn a failed owner saved.
		key = "relay-" + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
		r.Header.Set(HeaderKey, key)
		c.SetRequest(r.WithContext(turn.WithKey(r.Context(), key)))
		r = c.Request()
	}
	ctx, span := pl.p.Tracer.Start(r.Context(), "placement.relay", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("sous.session", session)))
	defer span.End()
	for attempt := 1; ; attempt++ {
		span.SetAttributes(attribute.String("sous.owner", owner), attribute.Int("sous.relay_attempts", attempt))
		err := pl.relayOnce(ctx, c, owner, body)
		if err == nil {
			pl.p.Metrics.Placed("relayed")
			return nil
		}
		if ctx.Err() != nil {
			// The caller went away: nobody to answer, nothing to retry.
			return ctx.Err()
		}
		pl.p.Metrics.RelayFailed()
		pl.forget(session)
		pl.p.Log.Warn("placement: relay failed", "session", session, "owner", owner, "attempt", attempt, "err", err.Error())
		span.RecordError(err)
		if attempt >= pl.p.Attempts {
			break
		}
		if err := sleep(ctx, time.Duration(attempt)*100*time.Millisecond); err != nil {
			return err
		}
		again, err := pl.lookup(ctx, session)
		if err != nil || again == pl.p.Address {
			break
		}
		owner = again
		pl.remember(session, owner, pl.p.Now())
	}
	span.SetStatus(codes.Error, "relay failed: served here")
	pl.p.Metrics.Placed("fallback")
	r.Body = io.NopCloser(bytes.NewReader(body))
	return pl.serveHere(c, next)
}

// relayOnce proxies the request to owner, streaming the answer back as it
// comes. It returns an error only when nothing was written: the owner was
// not reached, failed before it answered, or refused before running the
// turn. An owner that fails mid-answer aborts this answer too (its client
// sees a broken stream, never a truncated one that looks whole).
func (pl *Placement) relayOnce(ctx context.Context, c echo.Context, owner string, body []byte) error {
	var failed error
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", owner
			pr.Out.Header.Set(HeaderRelayed, pl.p.Address)
			pr.SetXForwarded()
			propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(pr.Out.Header))
		},
		Transport:     pl.p.Transport,
		FlushInterval: -1, // streamed replies go on as they come
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(HeaderServedBy) == "" {
				return fmt.Errorf("%w: %s", errRefused, resp.Status)
			}
			return nil
		},
		ErrorHandler: func(_ http.ResponseWriter, _ *http.Request, err error) { failed = err },
	}
	req := c.Request().WithContext(ctx)
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	rp.ServeHTTP(c.Response(), req)
	return failed
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
