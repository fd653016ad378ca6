package placement

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/sous-ai/sous/function/telemetry"
)

func TestSessionOf(t *testing.T) {
	ce := http.Header{"Content-Type": {"application/cloudevents+json"}}
	binary := http.Header{"Ce-Specversion": {"1.0"}, "Ce-Subject": {"s-sub"}, "Content-Type": {"application/json"}}
	binaryNoSubject := http.Header{"Ce-Specversion": {"1.0"}, "Content-Type": {"application/json"}}
	for _, tc := range []struct {
		name, route string
		h           http.Header
		body, want  string
	}{
		{"chat header", RouteChat, http.Header{"X-Sous-Session": {"s1"}}, `{"user":"u"}`, "s1"},
		{"chat user", RouteChat, nil, `{"messages":[],"user":"u1"}`, "u1"},
		{"chat stateless", RouteChat, nil, `{"messages":[]}`, ""},
		{"chat bad json", RouteChat, nil, `{"user":`, ""},
		{"turn", RouteTurn, nil, `{"session":"t1","text":"hi"}`, "t1"},
		{"turn session not a string", RouteTurn, nil, `{"session":7}`, ""},
		{"binary subject", RouteEvent, binary, `{"session":"other"}`, "s-sub"},
		{"binary data session", RouteEvent, binaryNoSubject, `{"session":"d1","text":"x"}`, "d1"},
		{"structured subject", RouteEvent, ce, `{"specversion":"1.0","subject":"st1","data":{"session":"x"}}`, "st1"},
		{"structured data", RoutePubSub, ce, `{"specversion":"1.0","data":{"session":"ps1","text":"x"}}`, "ps1"},
		{"structured base64 data", RoutePubSub, ce, `{"specversion":"1.0","data_base64":"e30="}`, ""},
		{"batch", RouteEvent, http.Header{"Content-Type": {"application/cloudevents-batch+json"}}, `[{"subject":"b"}]`, ""},
		{"other route", "/v2/models/m/infer", nil, `{"session":"x"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			if h == nil {
				h = http.Header{}
			}
			if got := SessionOf(tc.route, h, []byte(tc.body)); got != tc.want {
				t.Errorf("SessionOf = %q, want %q", got, tc.want)
			}
		})
	}
}

// sidecar stands in for daprd's actor API in the relay's unit tests: it
// answers owner lookups with owner(session, call number).
type sidecar struct {
	srv   *httptest.Server
	mu    sync.Mutex // guards calls
	calls int
}

func newSidecar(t *testing.T, owner func(session string, call int) (string, int)) *sidecar {
	s := &sidecar{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(r.URL.Path, "/") // /v1.0/actors/T/ID/method/owner
		if r.Method != http.MethodPut || len(parts) != 7 || parts[5] != "method" || parts[6] != Method {
			http.Error(w, "bad actor call "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.calls++
		n := s.calls
		s.mu.Unlock()
		addr, code := owner(parts[4], n)
		if code != http.StatusOK {
			http.Error(w, `{"errorCode":"ERR_ACTOR_INVOKE_METHOD"}`, code)
			return
		}
		json.NewEncoder(w).Encode(ownerReply{Address: addr})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sidecar) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// fakePod is a sous pod's edge reduced to placement: POST /turn answers
// who served it, the request's key and where it was relayed from, as a
// stream of three flushed lines.
type fakePod struct {
	addr string
	pl   *Placement
	srv  *httptest.Server
	// status, if set, is what the turn answers instead (with served-by
	// set, as the route's own error would be).
	status int
	// refuse answers 503 before placement runs, as a draining pod's
	// admission does.
	refuse bool
	// gate, if set, holds the answer after its first line until closed.
	gate chan struct{}
	// metrics, if set, records the pod's placement.
	metrics *telemetry.Metrics
}

func newPod(t *testing.T, sc *sidecar, modify ...func(*fakePod)) *fakePod {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePod{addr: ln.Addr().String()}
	for _, m := range modify {
		m(p)
	}
	p.pl, err = New(Params{ActorType: "sess", Address: p.addr, Dapr: sc.srv.URL, CacheTTL: time.Minute, Metrics: p.metrics})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	admit := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if p.refuse {
				c.Response().Header().Set("Retry-After", "1")
				return c.String(http.StatusServiceUnavailable, "draining")
			}
			return next(c)
		}
	}
	g := e.Group("", admit, p.pl.Middleware)
	g.POST(RouteTurn, func(c echo.Context) error {
		r := c.Request()
		if _, err := io.ReadAll(r.Body); err != nil {
			return err
		}
		if p.status != 0 {
			return c.String(p.status, "busy")
		}
		c.Response().Header().Set("Content-Type", "text/event-stream")
		c.Response().WriteHeader(http.StatusOK)
		for i, line := range []string{"served " + p.addr, "key " + r.Header.Get(HeaderKey), "from " + r.Header.Get(HeaderRelayed)} {
			fmt.Fprintln(c.Response(), line)
			c.Response().Flush()
			if i == 0 && p.gate != nil {
				<-p.gate
			}
		}
		return nil
	})
	p.srv = &httptest.Server{Listener: ln, Config: &http.Server{Handler: e}}
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

// post sends a /turn of session to p and returns the status, the
// served-by header and the body's lines.
func post(t *testing.T, p *fakePod, session string, header ...string) (int, string, []string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+RouteTurn, strings.NewReader(`{"session":"`+session+`","text":"hi"}`))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(HeaderServedBy), strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestRelayToOwner(t *testing.T) {
	var owner string
	sc := newSidecar(t, func(string, int) (string, int) { return owner, http.StatusOK })
	a, b := newPod(t, sc), newPod(t, sc)
	owner = b.addr
	code, servedBy, lines := post(t, a, "s1")
	if code != 200 || servedBy != b.addr {
		t.Fatalf("turn on A for B's session: %d served by %q, want 200 by %s: %q", code, servedBy, b.addr, lines)
	}
	if want := "from " + a.addr; len(lines) != 3 || lines[0] != "served "+b.addr || lines[2] != want {
		t.Errorf("B saw %q, want it served by B and relayed from A", lines)
	}
	if !strings.HasPrefix(lines[1], "key relay-") {
		t.Errorf("B saw %q: a relay without the client's key carries one made by A", lines[1])
	}
	// The owner is cached: the second turn asks the sidecar nothing.
	before := sc.Calls()
	post(t, a, "s1", HeaderKey, "k2")
	if sc.Calls() != before {
		t.Errorf("second turn looked the owner up again (%d calls, want %d)", sc.Calls(), before)
	}
	// The client's key travels as it is.
	if _, _, lines := post(t, a, "s1", HeaderKey, "client-key"); lines[1] != "key client-key" {
		t.Errorf("relayed key: %q, want the client's", lines[1])
	}
	// The owner itself serves its session without relaying.
	if _, servedBy, lines := post(t, b, "s1"); servedBy != b.addr || lines[2] != "from" {
		t.Errorf("turn on the owner: served by %q, %q", servedBy, lines)
	}
}

// A streamed answer comes through the relay as it is written: the
// owner's first line reaches the client while the owner still holds the
// rest.
func TestRelayStreams(t *testing.T) {
	var owner string
	sc := newSidecar(t, func(string, int) (string, int) { return owner, http.StatusOK })
	a := newPod(t, sc)
	gate := make(chan struct{})
	b := newPod(t, sc, func(p *fakePod) { p.gate = gate })
	owner = b.addr
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.addr+RouteTurn, strings.NewReader(`{"session":"st"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "served "+b.addr+"\n" {
			t.Errorf("first streamed line %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Error("the owner's first line did not come through the relay while the owner held the rest")
	}
	close(gate)
}

// A relayed request is served where it arrives, whatever that pod's
// sidecar says: no relay loops.
func TestRelayedRequestIsNotRelayedAgain(t *testing.T) {
	var other string
	sc := newSidecar(t, func(string, int) (string, int) { return other, http.StatusOK })
	a, b := newPod(t, sc), newPod(t, sc)
	other = a.addr
	code, servedBy, _ := post(t, b, "loop", HeaderRelayed, "10.0.0.9:8080")
	if code != 200 || servedBy != b.addr {
		t.Errorf("relayed request on B: %d served by %q, want B", code, servedBy)
	}
}

// An owner that is gone, or that refuses before running the turn
// (draining), is asked for again and the turn goes to the next owner
// with the same key; when no owner is known it is served where it landed.
func TestRelayRetriesOnTheNextOwner(t *testing.T) {
	dead := deadAddr()
	var next string
	var draining *fakePod
	for _, tc := range []struct {
		name  string
		first func() string
	}{
		{"owner gone", func() string { return dead }},
		{"owner draining", func() string { return draining.addr }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := newSidecar(t, func(_ string, call int) (string, int) {
				if call == 1 {
					return tc.first(), http.StatusOK
				}
				return next, http.StatusOK
			})
			a, c := newPod(t, sc), newPod(t, sc)
			draining = newPod(t, sc, func(p *fakePod) { p.refuse = true })
			next = c.addr
			code, servedBy, lines := post(t, a, "moving", HeaderKey, "k1")
			if code != 200 || servedBy != c.addr || lines[1] != "key k1" {
				t.Errorf("turn whose owner failed: %d served by %q (%q), want 200 by the next owner %s with key k1", code, servedBy, lines, c.addr)
			}
		})
	}
	t.Run("no owner known", func(t *testing.T) {
		sc := newSidecar(t, func(_ string, call int) (string, int) {
			if call == 1 {
				return dead, http.StatusOK
			}
			return "", http.StatusInternalServerError
		})
		a := newPod(t, sc)
		code, servedBy, lines := post(t, a, "orphan")
		if code != 200 || servedBy != a.addr || !strings.HasPrefix(lines[1], "key relay-") {
			t.Errorf("turn with no owner: %d served by %q (%q), want 200 here under the relay's key", code, servedBy, lines)
		}
	})
}

// Each placed turn is counted once, where it ran from the receiving pod's
// view (owner, relayed, received, fallback), with the failed relays and
// the lookups beside them; a turn with no session is not a placed one.
func TestPlacementMetrics(t *testing.T) {
	dead := deadAddr()
	var owner string
	sc := newSidecar(t, func(session string, _ int) (string, int) {
		if session == "orphan" {
			return dead, http.StatusOK
		}
		return owner, http.StatusOK
	})
	withMetrics := func(p *fakePod) {
		m, err := telemetry.New(telemetry.Params{Model: "m", Device: "cpu", Placement: true})
		if err != nil {
			t.Fatal(err)
		}
		p.metrics = m
	}
	a, b := newPod(t, sc, withMetrics), newPod(t, sc, withMetrics)
	owner = b.addr
	post(t, a, "s1") // relayed A → B
	post(t, a, "s1") // relayed again, from A's cache
	post(t, b, "s1") // B owns it
	post(t, a, "orphan")
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.addr+RouteTurn, strings.NewReader(`{"text":"no session"}`))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
	for _, tc := range []struct {
		pod    *fakePod
		series string
		want   float64
	}{
		{a, `sous_placement_turns_total{outcome="relayed"}`, 2},
		{a, `sous_placement_turns_total{outcome="fallback"}`, 1},
		{a, `sous_placement_turns_total{outcome="owner"}`, 0},
		{a, `sous_placement_relay_failures_total`, 3},
		// s1 once (then cached), orphan once and after each of its two
		// failed relays.
		{a, `sous_placement_lookup_duration_seconds_count{answered="true"}`, 4},
		{b, `sous_placement_turns_total{outcome="received"}`, 2},
		{b, `sous_placement_turns_total{outcome="owner"}`, 1},
		{b, `sous_placement_relay_failures_total`, 0},
	} {
		if got := scrape(t, tc.pod.metrics, tc.series); got != tc.want {
			t.Errorf("%s on %s = %v, want %v", tc.series, tc.pod.addr, got, tc.want)
		}
	}
}

// deadAddr is a loopback address where nothing listens.
func deadAddr() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
}

// scrape reads one series' value from m's exposition.
func scrape(t *testing.T, m *telemetry.Metrics, series string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	t.Fatalf("no series %s in:\n%s", series, rec.Body.String())
	return 0
}

// The owner's own refusal (its turn ran into a full queue, the store
// being down) is its answer: passed on, not retried elsewhere.
func TestOwnerAnswerIsPassedOn(t *testing.T) {
	var owner string
	sc := newSidecar(t, func(string, int) (string, int) { return owner, http.StatusOK })
	a := newPod(t, sc)
	b := newPod(t, sc, func(p *fakePod) { p.status = http.StatusServiceUnavailable })
	owner = b.addr
	if code, servedBy, _ := post(t, a, "busy"); code != http.StatusServiceUnavailable || servedBy != b.addr {
		t.Errorf("owner's 503: got %d served by %q, want 503 from %s", code, servedBy, b.addr)
	}
	if n := sc.Calls(); n != 1 {
		t.Errorf("%d lookups, want 1: the owner's own answer is not retried", n)
	}
}

// The sidecar's calls: its configuration names the actor type; the
// actor's method answers this pod's address and makes the session local
// (no lookup), until the sidecar deactivates it.
func TestActorRoutes(t *testing.T) {
	sc := newSidecar(t, func(string, int) (string, int) { return "10.0.0.2:8080", http.StatusOK })
	pl, err := New(Params{ActorType: "sess", Address: "10.0.0.1:8080", Dapr: sc.srv.URL, IdleTimeout: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	pl.Register(e, e.Group(""))
	do := func(method, path string) (int, string) {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
		return rec.Code, strings.TrimSpace(rec.Body.String())
	}
	code, body := do(http.MethodGet, "/dapr/config")
	var cfg appConfig
	if code != 200 || json.Unmarshal([]byte(body), &cfg) != nil || len(cfg.Entities) != 1 || cfg.Entities[0] != "sess" ||
		cfg.ActorIdleTimeout != "30m0s" || !cfg.DrainRebalancedActors {
		t.Errorf("GET /dapr/config: %d %s", code, body)
	}
	ctx := context.Background()
	if got, _ := pl.Owner(ctx, "s1"); got != "10.0.0.2:8080" {
		t.Errorf("owner before activation: %q, want the sidecar's answer", got)
	}
	if code, body := do(http.MethodPut, "/actors/sess/s1/method/owner"); code != 200 || body != `{"address":"10.0.0.1:8080"}` {
		t.Errorf("actor method: %d %s", code, body)
	}
	calls := sc.Calls()
	if got, _ := pl.Owner(ctx, "s1"); got != "10.0.0.1:8080" || sc.Calls() != calls {
		t.Errorf("owner of an active session: %q after %d lookups, want this pod without one", got, sc.Calls()-calls)
	}
	if code, _ := do(http.MethodDelete, "/actors/sess/s1"); code != 200 {
		t.Errorf("deactivation: %d", code)
	}
	if got, _ := pl.Owner(ctx, "s1"); got != "10.0.0.2:8080" {
		t.Errorf("owner after deactivation: %q, want the sidecar's answer", got)
	}
	for _, bad := range [][2]string{{http.MethodPut, "/actors/other/s1/method/owner"}, {http.MethodPut, "/actors/sess/s1/method/run"},
		{http.MethodPut, "/actors/sess/bad%20id/method/owner"}} {
		if code, _ := do(bad[0], bad[1]); code < 400 || code >= 500 {
			t.Errorf("%s %s: %d, want a 4xx", bad[0], bad[1], code)
		}
	}
}
