// Package dapr serves what a Dapr sidecar calls: the pub/sub subscription
// list (GET /dapr/subscribe) and deliveries (POST /events, a CloudEvent
// whose data is a turn), answered with Dapr's verdicts, and the
// APP_API_TOKEN check on every request from the sidecar. Service
// invocation reaches the plain routes (/turn) as they are.
package dapr

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/sous-ai/sous/function/api/cloudevents"
	"github.com/sous-ai/sous/function/api/edge"
	"github.com/sous-ai/sous/function/turn"
)

// Turns runs turns: the turn service.
type Turns interface {
	Do(ctx context.Context, req turn.Request) (turn.Reply, error)
}

// Params are what the routes need.
type Params struct {
	Turns    Turns
	Renderer *edge.Renderer
	Tracer   trace.Tracer
	MaxBody  int64
	// PubSub and Topic name the subscription; AppToken, if set, is
	// required of every request from the sidecar.
	PubSub, Topic, AppToken string
}

type server struct{ p Params }

// Register adds the subscription route to e, the delivery route to work
// (admitted only while serving), and the token check to e.
func Register(e *echo.Echo, work *echo.Group, p Params) {
	s := &server{p}
	e.Use(s.token)
	e.GET("/dapr/subscribe", s.subscribe)
	work.POST("/events", s.deliver)
}

// token requires APP_API_TOKEN, when set, of every request that comes from
// the sidecar: its subscription and delivery routes, its configuration
// and actor calls (session placement), and service invocations (which
// carry dapr-caller-app-id).
func (s *server) token(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.p.AppToken != "" {
			r := c.Request()
			fromDapr := r.URL.Path == "/events" || strings.HasPrefix(r.URL.Path, "/dapr/") ||
				strings.HasPrefix(r.URL.Path, "/actors/") || r.Header.Get("dapr-caller-app-id") != ""
			if fromDapr && subtle.ConstantTimeCompare([]byte(r.Header.Get("dapr-api-token")), []byte(s.p.AppToken)) != 1 {
				return &edge.Error{Code: http.StatusUnauthorized, Msg: "missing or wrong dapr-api-token"}
			}
		}
		return next(c)
	}
}

type subscription struct {
	PubSubName string `json:"pubsubname"`
	Topic      string `json:"topic"`
	Route      string `json:"route"`
}

// subscribe tells daprd which topic to deliver to POST /events.
func (s *server) subscribe(c echo.Context) error {
	return c.JSON(http.StatusOK, []subscription{{PubSubName: s.p.PubSub, Topic: s.p.Topic, Route: "/events"}})
}

// deliver takes a pub/sub delivery and answers daprd's protocol: SUCCESS;
// RETRY where the turn's verdict says the same delivery may succeed later
// (overload, the state store down, shutting down); DROP for input that
// never will.
func (s *server) deliver(c echo.Context) error {
	err := s.turn(c)
	if err == nil {
		return c.JSON(http.StatusOK, map[string]string{"status": "SUCCESS"})
	}
	_, msg, _ := s.p.Renderer.Record(c, err)
	verdict := "RETRY"
	var ee *edge.Error
	if !turn.Retry(err) || errors.As(err, &ee) && ee.Code < 500 {
		verdict = "DROP"
	}
	return c.JSON(http.StatusOK, map[string]string{"status": verdict, "error": msg})
}

func (s *server) turn(c echo.Context) error {
	r := c.Request()
	body, err := edge.ReadBody(c, s.p.MaxBody)
	if err != nil {
		return err
	}
	if !utf8.Valid(body) {
		return turn.BadRequest("body is not valid UTF-8")
	}
	msg := cehttp.NewMessage(r.Header, io.NopCloser(bytes.NewReader(body)))
	if msg.ReadEncoding() == binding.EncodingUnknown {
		return &edge.Error{Code: http.StatusUnsupportedMediaType, Msg: "want a CloudEvent (application/cloudevents+json)"}
	}
	ev, err := binding.ToEvent(r.Context(), msg)
	if err != nil {
		return turn.BadRequest("not a valid CloudEvent: %v", err)
	}
	req, err := cloudevents.EventRequest(ev, true)
	if err != nil {
		return err
	}
	c.Set("session", req.Session)
	ctx, span := edge.StartTurn(r.Context(), s.p.Tracer, r.Header, ev)
	defer span.End()
	_, err = s.p.Turns.Do(ctx, req)
	edge.SpanErr(span, err)
	return err
}
