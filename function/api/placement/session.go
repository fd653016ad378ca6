package placement

import (
	"encoding/json"
	"mime"
	"net/http"
)

// The routes whose turns are placed: the generation turns.
const (
	RouteChat   = "/v1/chat/completions"
	RouteTurn   = "/turn"
	RouteEvent  = "/"       // CloudEvents
	RoutePubSub = "/events" // Dapr pub/sub deliveries
)

// SessionOf reads the session a request to route names, as its route will
// (it only reads; the route validates): chat completions' X-Sous-Session
// header or user field, /turn's session, a CloudEvent's subject or data
// session (binary or structured mode). "" for anything else: no session
// (a stateless chat), a CloudEvents batch (its events may name several
// sessions; it is served where it lands), a body that does not parse.
func SessionOf(route string, h http.Header, body []byte) string {
	switch route {
	case RouteChat:
		if s := h.Get("X-Sous-Session"); s != "" {
			return s
		}
		var b struct {
			User string `json:"user"`
		}
		if json.Unmarshal(body, &b) != nil {
			return ""
		}
		return b.User
	case RouteTurn:
		return dataSession(body)
	case RouteEvent, RoutePubSub:
		if h.Get("ce-specversion") != "" { // binary mode: the body is the data
			if s := h.Get("ce-subject"); s != "" {
				return s
			}
			return dataSession(body)
		}
		mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
		if err != nil || mt != "application/cloudevents+json" {
			return ""
		}
		var ev struct {
			Subject string          `json:"subject"`
			Data    json.RawMessage `json:"data"`
		}
		if json.Unmarshal(body, &ev) != nil {
			return ""
		}
		if ev.Subject != "" {
			return ev.Subject
		}
		return dataSession(ev.Data)
	}
	return ""
}

func dataSession(data []byte) string {
	var b struct {
		Session string `json:"session"`
	}
	if len(data) == 0 || json.Unmarshal(data, &b) != nil {
		return ""
	}
	return b.Session
}
