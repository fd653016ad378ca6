package function

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/state"
)

// downStore is a store whose backend is unreachable.
type downStore struct{}

func (downStore) Get(context.Context, string) (state.Session, string, error) {
	return state.Session{}, "", state.ErrUnavailable
}
func (downStore) Save(context.Context, string, state.Session, string, time.Duration) error {
	return state.ErrUnavailable
}
func (downStore) GetBulk(context.Context, []string) ([]state.Entry, error) {
	return nil, state.ErrUnavailable
}
func (downStore) SaveBulk(_ context.Context, items []state.SaveItem, _ time.Duration) []error {
	errs := make([]error, len(items))
	for i := range errs {
		errs[i] = state.ErrUnavailable
	}
	return errs
}

func daprVerdict(t *testing.T, s *server, body string) string {
	t.Helper()
	code, _, b := s.post(t, "/events", map[string]string{"Content-Type": "application/cloudevents+json"}, body)
	if code != http.StatusOK {
		t.Fatalf("/events answered %d %s, want 200 with a status", code, b)
	}
	var v struct{ Status string }
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("/events body %s: %v", b, err)
	}
	return v.Status
}

func TestDaprSubscribeAndDeliveryVerdicts(t *testing.T) {
	s := startServer(t, testConfig(t))
	code, body := s.get(t, "/dapr/subscribe")
	if code != 200 || string(body) != `[{"pubsubname":"pubsub","topic":"turns","route":"/events"}]`+"\n" {
		t.Errorf("GET /dapr/subscribe: %d %s", code, body)
	}
	// Dapr wraps a plain published payload in its own event type.
	wrapped := `{"specversion":"1.0","id":"w1","source":"publisher","type":"com.dapr.event.sent","topic":"turns","pubsubname":"pubsub","datacontenttype":"application/json","data":{"session":"ps","text":"hello"}}`
	if got := daprVerdict(t, s, wrapped); got != "SUCCESS" {
		t.Errorf("good delivery: %s, want SUCCESS", got)
	}
	passthrough := `{"specversion":"1.0","id":"w2","source":"/x","type":"ai.sous.turn","subject":"ps","data":{"text":"thanks"}}`
	if got := daprVerdict(t, s, passthrough); got != "SUCCESS" {
		t.Errorf("turn event delivery: %s, want SUCCESS", got)
	}
	bad := `{"specversion":"1.0","id":"w3","source":"/x","type":"com.dapr.event.sent","data":{"session":"a||b","text":"hi"}}`
	if got := daprVerdict(t, s, bad); got != "DROP" {
		t.Errorf("bad session delivery: %s, want DROP (retrying cannot help)", got)
	}

	down := startServer(t, testConfig(t), WithStore(downStore{}))
	if got := daprVerdict(t, down, wrapped); got != "RETRY" {
		t.Errorf("delivery with the store down: %s, want RETRY", got)
	}
	code, h, b := down.post(t, "/turn", map[string]string{"Content-Type": "application/json"}, `{"session":"x","text":"hi"}`)
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(string(b), "state store unavailable") {
		t.Errorf("turn with the store down: %d %s", code, b)
	}
}

func TestAppAPIToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.AppToken = "s3cret"
	s := startServer(t, cfg)
	jsonCT := map[string]string{"Content-Type": "application/json"}
	invoked := map[string]string{"Content-Type": "application/json", "dapr-caller-app-id": "agent"}
	for _, tc := range []struct {
		name   string
		header map[string]string
		token  string
		code   int
	}{
		{"Knative caller needs no token", jsonCT, "", 200},
		{"invocation without token", invoked, "", 401},
		{"invocation with wrong token", invoked, "nope", 401},
		{"invocation with token", invoked, "s3cret", 200},
	} {
		h := map[string]string{}
		for k, v := range tc.header {
			h[k] = v
		}
		if tc.token != "" {
			h["dapr-api-token"] = tc.token
		}
		if code, _, b := s.post(t, "/turn", h, `{"session":"tok","text":"hi"}`); code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, code, b, tc.code)
		}
	}
	if code, _ := s.get(t, "/dapr/subscribe"); code != 401 {
		t.Errorf("/dapr/subscribe without token: %d, want 401", code)
	}
}
