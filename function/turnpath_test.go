package function

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sous-ai/sous/function/state"
	"github.com/sous-ai/sous/function/turn"
)

// racingStore is a store in which another pod takes each session's next
// turn just before this pod's first save of it: that save loses its ETag
// race, as it would with two pods serving one session.
type racingStore struct {
	state.Store
	raced sync.Map // session id -> true once raced
}

func (r *racingStore) SaveBulk(ctx context.Context, items []state.SaveItem, ttl time.Duration) []error {
	for _, it := range items {
		if _, done := r.raced.LoadOrStore(it.ID, true); done {
			continue
		}
		s, etag, err := r.Store.Get(ctx, it.ID)
		if err != nil {
			return []error{err}
		}
		s.Version, s.Turn = 1, s.Turn+1
		s.History = append(s.History, state.Turn{N: s.Turn, Event: "other-pod", Text: "hello", Output: json.RawMessage(`{}`)})
		if err := r.Store.Save(ctx, it.ID, s, etag, ttl); err != nil {
			return []error{err}
		}
	}
	return r.Store.SaveBulk(ctx, items, ttl)
}

// Every kind of model goes through the one transcript path: a turn that
// lost its save to another pod is redone on the newer transcript and
// numbered after it; a redelivered request is answered from the
// transcript, not run again.
func TestOneTurnPathForEveryKindOfModel(t *testing.T) {
	for _, kind := range []struct{ name, dir string }{
		{"tensors and the demo model", ""},
		{"model directory text task", "text-classification"},
		{"generation", "text-generation"},
	} {
		t.Run(kind.name, func(t *testing.T) {
			cfg := testConfig(t)
			if kind.dir != "" {
				cfg.Model = filepath.Join(testModels(t), kind.dir)
			}
			mem := state.NewMemory(nil)
			s := startServer(t, cfg, WithStore(&racingStore{Store: mem}), WithLogger(quietLogger()))
			body := `{"session":"s1","id":"x","text":"hello there","max_tokens":4}`
			if kind.dir != "text-generation" {
				body = `{"session":"s1","id":"x","text":"hello there"}`
			}
			post := func() turn.Reply {
				code, _, b := s.post(t, "/turn", map[string]string{"Content-Type": "application/json"}, body)
				if code != http.StatusOK {
					t.Fatalf("/turn: %d %s", code, b)
				}
				var r turn.Reply
				json.Unmarshal(b, &r)
				return r
			}
			first := post()
			if first.Turn != 2 {
				t.Errorf("turn after the other pod's: %d, want 2 (redone on the newer transcript)", first.Turn)
			}
			again := post()
			if again.Turn != first.Turn || string(again.Output) != string(first.Output) {
				t.Errorf("redelivery answered turn %d %s, want turn %d %s", again.Turn, again.Output, first.Turn, first.Output)
			}
			sess, _, err := mem.Get(context.Background(), "s1")
			if err != nil {
				t.Fatal(err)
			}
			var events []string
			for _, h := range sess.History {
				events = append(events, h.Event)
			}
			if got, want := strings.Join(events, " "), "other-pod turn#x"; sess.Turn != 2 || got != want {
				t.Errorf("stored transcript: turn %d, events %q; want turn 2, %q", sess.Turn, got, want)
			}
		})
	}
}

// A chat completion refused for overload is a 503 with Retry-After,
// counted in sous_rejected_total like any route's, with or without a
// session.
func TestChatRefusalsAreCounted(t *testing.T) {
	cfg := testConfig(t)
	cfg.Model = filepath.Join(testModels(t), "text-generation")
	cfg.Queue, cfg.MaxBatch = 1, 1
	b := &blockingSave{Store: state.NewMemory(nil), entered: make(chan struct{}, 4), release: make(chan struct{})}
	s := startServer(t, cfg, WithStore(b), WithLogger(quietLogger()))
	// Two session turns hold the limit (queue 1 + batch 1 x 1 executor):
	// each blocks in its save.
	for _, session := range []string{"a", "b"} {
		req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/chat/completions", strings.NewReader(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Sous-Session", session)
		go func() {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		<-b.entered
	}
	for _, header := range []map[string]string{
		{"Content-Type": "application/json", "X-Sous-Session": "c"},
		{"Content-Type": "application/json"},
	} {
		code, h, body := s.post(t, "/v1/chat/completions", header, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
		if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(string(body), `"message"`) {
			t.Errorf("over the limit (%v): %d Retry-After=%q %s; want 503 in OpenAI's shape", header, code, h.Get("Retry-After"), body)
		}
	}
	close(b.release)
	if got := scrape(t, s)[`sous_rejected_total{reason="queue_full"}`]; got != 2 {
		t.Errorf("sous_rejected_total{reason=\"queue_full\"} = %g, want 2", got)
	}
}

// blockingSave holds every save until released.
type blockingSave struct {
	state.Store
	entered chan struct{}
	release chan struct{}
}

func (b *blockingSave) SaveBulk(ctx context.Context, items []state.SaveItem, ttl time.Duration) []error {
	b.entered <- struct{}{}
	<-b.release
	return b.Store.SaveBulk(ctx, items, ttl)
}
