package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	// encoding/json's API and output, at 2.3x its speed on a session
	// (BenchmarkSessionCodec); encoding/json was 44% of sous's CPU in Dapr mode.
	json "github.com/goccy/go-json"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// DaprParams configures a Dapr store.
type DaprParams struct {
	// Address is the sidecar's gRPC endpoint, host:port.
	Address string
	// Store is the state component's name.
	Store string
	// Token, when set, is sent as dapr-api-token (DAPR_API_TOKEN).
	Token string
}

// Dapr keeps sessions through the Dapr state API over gRPC (dapr/go-sdk),
// backed by whatever state component the sidecar has (Redis in sous's
// deployment). Saves use first-write concurrency with the ETag read and
// strong consistency, and set ttlInSeconds, so every turn renews the
// session's expiry.
type Dapr struct {
	client dapr.Client
	store  string
}

// NewDapr connects to the sidecar lazily: the connection is made, and
// remade after a sidecar restart, by gRPC itself. Call Wait to block until
// the sidecar answers.
func NewDapr(p DaprParams) (*Dapr, error) {
	conn, err := grpc.NewClient(p.Address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The sidecar is on loopback: after a restart, retry the
		// connection at least every 500ms, not on gRPC's default backoff,
		// which grows to minutes and keeps turns failing long after the
		// sidecar is back.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("state: dapr sidecar at %s: %w", p.Address, err)
	}
	c := dapr.NewClientWithConnection(conn)
	if p.Token != "" {
		c.WithAuthToken(p.Token)
	}
	return &Dapr{client: c, store: p.Store}, nil
}

// Wait blocks until the sidecar answers a state read, or ctx ends.
func (d *Dapr) Wait(ctx context.Context) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := d.client.GetState(cctx, d.store, "sous-startup-probe", nil)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("state: dapr sidecar not answering: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close closes the connection to the sidecar.
func (d *Dapr) Close() { d.client.Close() }

// Get implements Store.
func (d *Dapr) Get(ctx context.Context, id string) (Session, string, error) {
	item, err := d.client.GetState(ctx, d.store, id, nil)
	if err != nil {
		return Session{}, "", d.failed(ctx, "get", id, err)
	}
	if item == nil || len(item.Value) == 0 {
		return Session{}, "", nil
	}
	var s Session
	if err := json.Unmarshal(item.Value, &s); err != nil {
		return Session{}, "", fmt.Errorf("state: decode %q: %w", id, err)
	}
	return s, item.Etag, nil
}

// GetBulk implements Store with one GetBulkState call.
func (d *Dapr) GetBulk(ctx context.Context, ids []string) ([]Entry, error) {
	items, err := d.client.GetBulkState(ctx, d.store, ids, nil, int32(min(len(ids), 16)))
	if err != nil {
		return nil, d.failed(ctx, "get bulk", strings.Join(ids[:min(3, len(ids))], ","), err)
	}
	byKey := make(map[string]*dapr.BulkStateItem, len(items))
	for _, it := range items {
		byKey[it.Key] = it
	}
	out := make([]Entry, len(ids))
	for i, id := range ids {
		it := byKey[id]
		switch {
		case it == nil:
			out[i].Err = fmt.Errorf("state: get %q: %w: missing from the bulk answer", id, ErrUnavailable)
		case it.Error != "":
			out[i].Err = fmt.Errorf("state: get %q: %w: %s", id, ErrUnavailable, it.Error)
		case len(it.Value) > 0:
			if err := json.Unmarshal(it.Value, &out[i].Session); err != nil {
				out[i].Err = fmt.Errorf("state: decode %q: %w", id, err)
			}
			out[i].ETag = it.Etag
		}
	}
	return out, nil
}

// SaveBulk implements Store. Sessions that exist (they carry an ETag) are
// written in one state transaction, whose operations are each checked
// against their ETag; it costs daprd much less than a bulk save. Redis does
// not roll a transaction back, so when one operation fails the others may
// have been written: those then report ErrConflict when saved alone, and the
// caller must make its redo idempotent (the turn pipeline finds the turn in
// the transcript by its request key). A new session is saved alone: a transaction does not enforce "only
// if absent" for an operation without an ETag, and first-write-wins must
// hold for a session two pods start at once. If the transaction fails, each
// of its sessions is saved alone and classified as Save does.
func (d *Dapr) SaveBulk(ctx context.Context, items []SaveItem, ttl time.Duration) []error {
	errs := make([]error, len(items))
	var inTx []int
	var ops []*dapr.StateOperation
	for i, it := range items {
		if it.ETag == "" {
			errs[i] = d.Save(ctx, it.ID, it.Session, "", ttl)
			continue
		}
		si, err := d.setItem(it.ID, it.Session, it.ETag, ttl)
		if err != nil {
			errs[i] = err
			continue
		}
		inTx = append(inTx, i)
		ops = append(ops, &dapr.StateOperation{Type: dapr.StateOperationTypeUpsert, Item: si})
	}
	if len(ops) == 0 {
		return errs
	}
	if err := d.client.ExecuteStateTransaction(ctx, d.store, nil, ops); err == nil {
		return errs
	}
	for _, i := range inTx {
		errs[i] = d.Save(ctx, items[i].ID, items[i].Session, items[i].ETag, ttl)
	}
	return errs
}

func (d *Dapr) setItem(id string, s Session, etag string, ttl time.Duration) (*dapr.SetStateItem, error) {
	value, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("state: encode %q: %w", id, err)
	}
	item := &dapr.SetStateItem{
		Key:      id,
		Value:    value,
		Metadata: map[string]string{"ttlInSeconds": strconv.FormatInt(int64(max(1, ttl/time.Second)), 10)},
		Options: &dapr.StateOptions{
			Concurrency: dapr.StateConcurrencyFirstWrite,
			Consistency: dapr.StateConsistencyStrong,
		},
	}
	if etag != "" {
		item.Etag = &dapr.ETag{Value: etag}
	}
	return item, nil
}

// Save implements Store.
func (d *Dapr) Save(ctx context.Context, id string, s Session, etag string, ttl time.Duration) error {
	item, err := d.setItem(id, s, etag, ttl)
	if err != nil {
		return err
	}
	err = d.client.SaveBulkState(ctx, d.store, item)
	if err == nil {
		return nil
	}
	if status.Code(err) == codes.Aborted {
		return fmt.Errorf("state: save %q: %w", id, ErrConflict)
	}
	// daprd answers a lost first-write race with the same internal error
	// as an unreachable Redis: read again to tell which.
	if ctx.Err() == nil {
		if _, now, gerr := d.Get(ctx, id); gerr == nil && now != etag {
			return fmt.Errorf("state: save %q: %w", id, ErrConflict)
		}
	}
	return d.failed(ctx, "save", id, err)
}

func (d *Dapr) failed(ctx context.Context, op, id string, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w: %v", ctx.Err(), err)
	}
	return fmt.Errorf("state: %s %q: %w: %v", op, id, ErrUnavailable, err)
}
