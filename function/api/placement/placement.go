// Package placement sends a session's generation turns to the pod that
// holds its KV (SOUS_PLACEMENT=actors). Dapr's actor runtime places each
// session, an actor id of one actor type, on one pod (the placement
// service's consistent hashing over the pods' sidecars); a turn that lands
// on another pod asks its sidecar which pod that is (one actor call, whose
// answer is the owner's address, cached a short while) and relays the
// HTTP request to it pod to pod, streaming, so that the reply goes back
// through the pod that received it and Knative's routing, concurrency
// count and reply path stay as they are. A relayed request carries
// HeaderRelayed and is served where it arrives: it never moves again.
//
// The conversation stays in the state store: placement only decides where
// the KV is warm. A relay that fails before the owner answered (the owner
// died or is draining) asks again and goes to the new owner, or is served
// where it landed; the request's key (Idempotency-Key, given or made here)
// makes a turn that the failed owner had already saved count once.
package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sous-ai/sous/function/telemetry"
	"github.com/sous-ai/sous/function/turn"
)

// Headers.
const (
	// HeaderRelayed marks a request relayed to its session's owner; its
	// value is the relaying pod's address. The owner serves it itself.
	HeaderRelayed = "X-Sous-Relayed-From"
	// HeaderServedBy is set on every placed answer: the address of the
	// pod that ran the turn.
	HeaderServedBy = "X-Sous-Served-By"
	// HeaderKey names a request for redelivery: sent again (by the
	// client, or by a pod retrying a relay on a new owner) it is answered
	// from the transcript instead of taking a second turn.
	HeaderKey = "Idempotency-Key"
)

// Method is the session actor's one method: it answers the owner's
// address.
const Method = "owner"

// Defaults of Params' optional fields.
const (
	DefaultCacheTTL      = 5 * time.Second
	DefaultLookupTimeout = 2 * time.Second
	DefaultAttempts      = 3
	// maxCached bounds the owner cache; beyond it, expired entries are
	// swept, and if none were, the cache starts over.
	maxCached = 1 << 16
)

// ErrNoOwner is a failed owner lookup: the sidecar, placement or the
// owner's sidecar did not answer. The turn is served where it landed.
var ErrNoOwner = errors.New("placement: no owner")

// Params configure placement. ActorType, Address and Dapr are required.
type Params struct {
	ActorType string // the sessions' actor type
	Address   string // host:port other pods relay this pod's sessions to
	Dapr      string // the sidecar's HTTP API, e.g. http://127.0.0.1:3500
	DaprToken string // DAPR_API_TOKEN, sent to the sidecar
	// IdleTimeout is how long an idle session stays placed on its owner
	// (Dapr's actorIdleTimeout); afterwards its next turn places it
	// again, on the same pod while the pods are the same.
	IdleTimeout time.Duration
	MaxBody     int64
	// CacheTTL is how long a pod trusts an owner it was told;
	// LookupTimeout bounds one lookup; Attempts bounds the relays of one
	// request. Zero: the defaults.
	CacheTTL      time.Duration
	LookupTimeout time.Duration
	Attempts      int
	// Client calls the sidecar; Transport carries relays. Nil: their own.
	Client    *http.Client
	Transport http.RoundTripper
	Log       *slog.Logger
	Tracer    trace.Tracer
	Metrics   *telemetry.Metrics // nil: none
	Now       func() time.Time
}

// Placement registers the session actor with the sidecar, serves the
// actor's calls and relays turns to their owners. Its methods may be
// called concurrently.
type Placement struct {
	p      Params
	prefix string // the sidecar's URL of this actor type

	mu sync.Mutex // guards local, owners
	// local are the sessions placed here: their actor is active on this
	// pod (activated by a lookup, not yet deactivated).
	local  map[string]bool
	owners map[string]cached
}

type cached struct {
	addr  string
	until time.Time
}

// New checks p and returns the placement of this pod.
func New(p Params) (*Placement, error) {
	if p.ActorType == "" || p.Address == "" || p.Dapr == "" {
		return nil, errors.New("placement: ActorType, Address and Dapr are required")
	}
	if _, _, err := net.SplitHostPort(p.Address); err != nil {
		return nil, fmt.Errorf("placement: address %q: %w", p.Address, err)
	}
	if p.CacheTTL <= 0 {
		p.CacheTTL = DefaultCacheTTL
	}
	if p.LookupTimeout <= 0 {
		p.LookupTimeout = DefaultLookupTimeout
	}
	if p.Attempts <= 0 {
		p.Attempts = DefaultAttempts
	}
	if p.Client == nil {
		p.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}
	}
	if p.Transport == nil {
		p.Transport = &http.Transport{
			DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		}
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	if p.Tracer == nil {
		p.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	return &Placement{
		p:      p,
		prefix: strings.TrimSuffix(p.Dapr, "/") + "/v1.0/actors/" + url.PathEscape(p.ActorType) + "/",
		local:  map[string]bool{}, owners: map[string]cached{},
	}, nil
}

// Address is this pod's advertised address.
func (pl *Placement) Address() string { return pl.p.Address }

// HostAddress is the address a pod advertises by default: the host's
// first non-loopback IPv4 address (a Kubernetes pod's own IP) with port,
// or 127.0.0.1 where it has none.
func HostAddress(port int) string {
	host := "127.0.0.1"
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && ip.IP.To4() != nil && ip.IP.IsGlobalUnicast() {
				host = ip.IP.String()
				break
			}
		}
	}
	return net.JoinHostPort(host, fmt.Sprint(port))
}

// appConfig is what daprd reads from GET /dapr/config.
type appConfig struct {
	Entities                []string `json:"entities"`
	ActorIdleTimeout        string   `json:"actorIdleTimeout,omitempty"`
	DrainOngoingCallTimeout string   `json:"drainOngoingCallTimeout"`
	DrainRebalancedActors   bool     `json:"drainRebalancedActors"`
}

// Register adds what the sidecar calls: GET /dapr/config (the actor type
// this pod hosts) and the actor's deactivation to e; the actor's method
// to work, so that a draining pod refuses it (the caller then serves the
// turn itself) instead of drawing turns it would refuse.
func (pl *Placement) Register(e *echo.Echo, work *echo.Group) {
	e.GET("/dapr/config", pl.config)
	work.PUT("/actors/:type/:id/method/:method", pl.invoke)
	e.DELETE("/actors/:type/:id", pl.deactivate)
}

func (pl *Placement) config(c echo.Context) error {
	cfg := appConfig{
		Entities: []string{pl.p.ActorType},
		// A session's method answers at once: a rebalanced actor drains in
		// no time, and the owner that loses it is told (deactivated).
		DrainOngoingCallTimeout: "5s", DrainRebalancedActors: true,
	}
	if pl.p.IdleTimeout > 0 {
		cfg.ActorIdleTimeout = pl.p.IdleTimeout.String()
	}
	return c.JSON(http.StatusOK, cfg)
}

// invoke answers the session actor's method: this pod's address. The
// actor being active here is what makes this pod the session's owner.
func (pl *Placement) invoke(c echo.Context) error {
	id, err := pl.actor(c)
	if err != nil {
		return err
	}
	if m := c.Param("method"); m != Method {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("actor method %q: the session actor has only %q", m, Method))
	}
	pl.mu.Lock()
	pl.local[id] = true
	delete(pl.owners, id)
	pl.mu.Unlock()
	return c.JSON(http.StatusOK, ownerReply{Address: pl.p.Address})
}

// deactivate forgets a session the sidecar moved away or retired.
func (pl *Placement) deactivate(c echo.Context) error {
	id, err := pl.actor(c)
	if err != nil {
		return err
	}
	pl.mu.Lock()
	delete(pl.local, id)
	delete(pl.owners, id)
	pl.mu.Unlock()
	return c.NoContent(http.StatusOK)
}

func (pl *Placement) actor(c echo.Context) (string, error) {
	if t := c.Param("type"); t != pl.p.ActorType {
		return "", echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("actor type %q: this pod hosts %q", t, pl.p.ActorType))
	}
	id := c.Param("id")
	if err := turn.CheckSession(id); err != nil {
		return "", echo.NewHTTPError(http.StatusBadRequest, turn.Message(err))
	}
	return id, nil
}

type ownerReply struct {
	Address string `json:"address"`
}

// Owner returns the address of the pod that owns session: this pod's for
// a session placed here, a cached answer while it is fresh, else the
// sidecar's (which places a session that has no owner yet).
func (pl *Placement) Owner(ctx context.Context, session string) (string, error) {
	now := pl.p.Now()
	pl.mu.Lock()
	if pl.local[session] {
		pl.mu.Unlock()
		return pl.p.Address, nil
	}
	if o, ok := pl.owners[session]; ok && now.Before(o.until) {
		pl.mu.Unlock()
		return o.addr, nil
	}
	pl.mu.Unlock()
	addr, err := pl.lookup(ctx, session)
	if err != nil {
		return "", err
	}
	if addr != pl.p.Address {
		pl.remember(session, addr, now)
	}
	return addr, nil
}

func (pl *Placement) remember(session, addr string, now time.Time) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if len(pl.owners) >= maxCached {
		for k, o := range pl.owners {
			if !now.Before(o.until) {
				delete(pl.owners, k)
			}
		}
		if len(pl.owners) >= maxCached {
			clear(pl.owners)
		}
	}
	pl.owners[session] = cached{addr: addr, until: now.Add(pl.p.CacheTTL)}
}

// forget drops what this pod believed of session's owner (a relay to it
// failed).
func (pl *Placement) forget(session string) {
	pl.mu.Lock()
	delete(pl.owners, session)
	pl.mu.Unlock()
}

// lookup asks the sidecar for session's owner: one call of the session
// actor's method, which runs on the owner's pod.
func (pl *Placement) lookup(ctx context.Context, session string) (string, error) {
	start := time.Now()
	addr, err := pl.ask(ctx, session)
	pl.p.Metrics.PlacementLookup(time.Since(start), err == nil)
	return addr, err
}

func (pl *Placement) ask(ctx context.Context, session string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, pl.p.LookupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, pl.prefix+session+"/method/"+Method, nil)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoOwner, err)
	}
	if pl.p.DaprToken != "" {
		req.Header.Set("dapr-api-token", pl.p.DaprToken)
	}
	resp, err := pl.p.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoOwner, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("%w: reading the sidecar's answer: %v", ErrNoOwner, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%w: the sidecar answered %d: %s", ErrNoOwner, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var r ownerReply
	if err := json.Unmarshal(body, &r); err != nil {
		return "", fmt.Errorf("%w: the owner's answer %q: %v", ErrNoOwner, body, err)
	}
	if _, _, err := net.SplitHostPort(r.Address); err != nil {
		return "", fmt.Errorf("%w: the owner's address %q: %v", ErrNoOwner, r.Address, err)
	}
	return r.Address, nil
}
